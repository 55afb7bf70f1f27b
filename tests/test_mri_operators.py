"""MRI physics: FFT convention, exact adjoints, SENSE, masks, coils and ESPIRiT."""

import numpy as np
import pytest
import torch
from skimage.data import shepp_logan_phantom
from skimage.transform import resize

from scorerecon.errors import UserError
from scorerecon.operators import bart
from scorerecon.operators.coils import birdcage_maps, check_maps, espirit_maps, rss, sense_combine, synthetic_phase
from scorerecon.operators.masks import (
    PATTERNS,
    calibration_region,
    calibration_width,
    effective_acceleration,
    keeps_whole_lines,
    make_mask,
    measured_center_fraction,
)
from scorerecon.operators.mri import (
    CoilPhaseMRI,
    SenseMRI,
    SingleCoilMRI,
    batch_to_complex,
    center_crop,
    channels_to_complex,
    complex_to_batch,
    complex_to_channels,
    fft2c,
    ifft2c,
    magnitude_normalize,
    phase_rotated,
)


def _crandn(*shape, seed=0, dtype=torch.complex128):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, dtype=dtype, generator=g)


def _random_maps(coils, h, w, seed=1):
    return _crandn(coils, h, w, seed=seed)


def _inner(a, b):
    return torch.sum(a.conj() * b)


# ----------------------------------------------------------------------------- the FFT
def test_fft_is_centred_orthonormal_and_matches_numpy():
    x = _crandn(2, 1, 12, 9)
    k = fft2c(x)
    ref = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x.numpy(), axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    np.testing.assert_allclose(k.numpy(), ref, atol=1e-12)
    assert torch.allclose(torch.linalg.vector_norm(k), torch.linalg.vector_norm(x))
    assert torch.allclose(ifft2c(k), x, atol=1e-12)
    centre = fft2c(torch.ones(1, 1, 8, 8, dtype=torch.complex128))
    assert torch.isclose(centre[0, 0, 4, 4].real, torch.tensor(8.0, dtype=torch.float64))  # DC at N/2


# ----------------------------------------------------------------------- the adjoints
@pytest.mark.parametrize("coils", [1, 4])
def test_exact_adjoint(coils):
    h, w = 16, 12
    mask = torch.from_numpy(make_mask("random", (h, w), 2, 0.1, seed=3))
    op = SingleCoilMRI(mask) if coils == 1 else SenseMRI(_random_maps(coils, h, w), mask)
    x, y = _crandn(3, 1, h, w, seed=4), _crandn(3, coils, h, w, seed=5)
    lhs, rhs = _inner(op(x), y), _inner(x, op.adjoint(y))
    assert abs(lhs - rhs) <= 1e-10 * abs(lhs)
    lhs, rhs = _inner(op.transform(x), y), _inner(x, op.transform_adjoint(y))
    assert abs(lhs - rhs) <= 1e-10 * abs(lhs)


@pytest.mark.parametrize("coils", [1, 5])
def test_transform_inverse_is_a_left_inverse(coils):
    h, w = 10, 14
    mask = torch.ones(h, w)
    op = SingleCoilMRI(mask) if coils == 1 else SenseMRI(_random_maps(coils, h, w), mask)
    x = _crandn(2, 1, h, w, seed=6)
    assert torch.allclose(op.transform_inverse(op.transform(x)), x, atol=1e-10)


@pytest.mark.parametrize("coils", [1, 4])
def test_phase_rotated_operator_rotates_the_image_first(coils):
    h, w = 12, 10
    mask = torch.from_numpy(make_mask("random", (h, w), 2, 0.1, seed=1))
    op = SingleCoilMRI(mask) if coils == 1 else SenseMRI(_random_maps(coils, h, w), mask)
    rotation = torch.exp(1j * torch.from_numpy(synthetic_phase((h, w), seed=2)).double())
    rotated = phase_rotated(op, rotation)
    x, y = _crandn(2, 1, h, w, seed=3), _crandn(2, coils, h, w, seed=4)
    torch.testing.assert_close(rotated(x), op(rotation * x))
    lhs, rhs = _inner(rotated(x), y), _inner(x, rotated.adjoint(y))
    assert abs(lhs - rhs) <= 1e-10 * abs(lhs)
    torch.testing.assert_close(rotated.transform_inverse(rotated.transform(x)), x)


def test_phase_rotated_keeps_every_batch_items_maps_and_refuses_per_coil_phases():
    """Maps (B, C, H, W) lost every batch item's maps but the first; a CoilPhaseMRI its phases."""
    h, w = 8, 6
    mask = torch.from_numpy(make_mask("random", (h, w), 2, 0.2, seed=1))
    op = SenseMRI(torch.stack([_random_maps(3, h, w), _random_maps(3, h, w).conj()]), mask)
    rotation = torch.exp(1j * torch.from_numpy(synthetic_phase((h, w), seed=2)).double())
    x = _crandn(2, 1, h, w, seed=3)
    torch.testing.assert_close(phase_rotated(op, rotation)(x), op(rotation * x))
    with pytest.raises(TypeError, match="not CoilPhaseMRI"):
        phase_rotated(CoilPhaseMRI(mask, rotation[None].expand(3, h, w)), rotation)


def test_coil_phase_operator_rotates_each_coil_image_of_every_sample():
    """K samples of C coil images, batched sample-major: coil c is rotated by its own phase."""
    h, w, coils, samples = 12, 10, 3, 2
    mask = torch.from_numpy(make_mask("random", (h, w), 2, 0.1, seed=1))
    rotation = torch.exp(1j * torch.stack([torch.from_numpy(synthetic_phase((h, w), seed=s)).double()
                                           for s in range(coils)]))
    op = CoilPhaseMRI(mask, rotation)
    x, y = _crandn(samples * coils, 1, h, w, seed=3), _crandn(samples * coils, 1, h, w, seed=4)
    expected = SingleCoilMRI(mask)(rotation.repeat(samples, 1, 1)[:, None] * x)
    torch.testing.assert_close(op(x), expected)
    lhs, rhs = _inner(op(x), y), _inner(x, op.adjoint(y))
    assert abs(lhs - rhs) <= 1e-10 * abs(lhs)
    torch.testing.assert_close(op.transform_inverse(op.transform(x)), x)
    with pytest.raises(UserError, match="coil phase maps must be"):
        CoilPhaseMRI(mask, rotation[0])


def test_sense_matches_sigpy_and_batches_over_images():
    import sigpy.mri
    h, w, coils = 16, 20, 6
    maps = birdcage_maps(coils, (h, w)).astype(np.complex128)
    mask = make_mask("uniform2d", (h, w), 3, 0.1, seed=0)
    op = SenseMRI(torch.from_numpy(maps), torch.from_numpy(mask))
    x = _crandn(2, 1, h, w, seed=7)
    reference = sigpy.mri.linop.Sense(maps, weights=mask.astype(np.float64))
    for b in range(2):
        np.testing.assert_allclose(op(x)[b].numpy(), reference * x[b, 0].numpy(), atol=1e-12)
        np.testing.assert_allclose(op.adjoint(op(x))[b, 0].numpy(), reference.H * (reference * x[b, 0].numpy()),
                                   atol=1e-12)
    assert op(x).shape == (2, coils, h, w)


def test_autograd_gradient_is_the_adjoint_residual():
    h, w = 8, 8
    op = SenseMRI(_random_maps(3, h, w), torch.from_numpy(make_mask("equispaced", (h, w), 2, 0.25)))
    x = _crandn(1, 1, h, w, seed=8).requires_grad_(True)
    y = _crandn(1, 3, h, w, seed=9)
    loss = 0.5 * (op(x) - y).abs().pow(2).sum()
    loss.backward()
    assert torch.allclose(x.grad, op.adjoint(op(x) - y).detach(), atol=1e-10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_operators_run_on_cuda():
    h, w = 16, 16
    op = SenseMRI(_random_maps(4, h, w, seed=2).to(torch.complex64), torch.ones(h, w)).to("cuda")
    x = _crandn(2, 1, h, w, dtype=torch.complex64).to("cuda")
    y = op(x)
    assert y.is_cuda and torch.allclose(op.transform_inverse(y).cpu(), x.cpu(), atol=1e-4)


# ------------------------------------------------------------------- network boundary
def test_complex_channel_and_batch_round_trips():
    x = _crandn(2, 3, 5, 4, dtype=torch.complex64)
    channels = complex_to_channels(x)
    assert channels.shape == (2, 6, 5, 4) and torch.equal(channels[:, 1], x[:, 0].imag)
    assert torch.equal(channels_to_complex(channels), x)
    stacked = complex_to_batch(x)
    assert stacked.shape == (4, 3, 5, 4) and torch.equal(stacked[2:], x.imag)
    assert torch.equal(batch_to_complex(stacked), x)


def test_magnitude_normalisation_keeps_the_phase():
    x = _crandn(3, 1, 6, 6)
    unit, scale = magnitude_normalize(x)
    assert torch.allclose(unit.abs().flatten(1).amax(1), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(unit * scale, x)
    assert torch.allclose(torch.angle(unit), torch.angle(x))


def test_center_crop_and_refusal():
    x = torch.arange(40.0).reshape(1, 1, 8, 5)
    assert torch.equal(center_crop(x, (4, 3)), x[..., 2:6, 1:4])
    with pytest.raises(UserError, match="cannot crop"):
        center_crop(x, (9, 5))


# ------------------------------------------------------------------------------ masks
@pytest.mark.parametrize("pattern", sorted(PATTERNS))
@pytest.mark.parametrize("acceleration", [4, 8])
def test_mask_acceleration_and_centre_fraction(pattern, acceleration):
    shape, fraction = (64, 80), 0.1
    mask = make_mask(pattern, shape, acceleration, fraction, seed=5)
    assert mask.shape == shape and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    tolerance = {"poisson": 0.1 + 0.05 * acceleration, "radial": 0.06 * acceleration}.get(pattern, 0.02 * acceleration)
    assert abs(effective_acceleration(mask) - acceleration) <= tolerance
    acs = round(fraction * min(shape)) if pattern in ("equispaced", "random", "gaussian1d") else \
        min(round(fraction * s) for s in shape)
    assert calibration_width(mask) >= acs
    assert measured_center_fraction(mask) >= acs / shape[1]
    if pattern in ("equispaced", "random", "gaussian1d"):
        assert np.all(mask == mask[:1])  # whole phase-encoding columns
        centre = slice((shape[1] - 8 + 1) // 2, (shape[1] - 8 + 1) // 2 + 8)
        assert mask[0, centre].all()


@pytest.mark.parametrize("pattern", ["random", "gaussian1d", "gaussian2d", "uniform2d", "radial"])
def test_masks_are_reproducible_by_seed(pattern):
    a = make_mask(pattern, (48, 48), 4, 0.08, seed=1)
    assert np.array_equal(a, make_mask(pattern, (48, 48), 4, 0.08, seed=1))
    assert not np.array_equal(a, make_mask(pattern, (48, 48), 4, 0.08, seed=2))


def test_acceleration_one_is_fully_sampled():
    for pattern in PATTERNS:
        assert make_mask(pattern, (16, 16), 1, 0.1).all(), pattern


@pytest.mark.parametrize("args, message", [
    (("random", (32, 32), 0.5, 0.08), "below 1"),
    (("equispaced", (32, 32), 33, 0.0), "exceeds"),
    (("uniform2d", (8, 8), 65, 0.0), "exceeds"),
    (("random", (32, 32), 4, 1.0), "centre fraction"),
    (("equispaced", (32, 32), 8, 0.5), "centre fraction alone"),
    (("spiral", (32, 32), 4, 0.08), "unknown mask pattern"),
    (("poisson", (64, 64), 1.3, 0.08), "Poisson-disc mask needs --acceleration 2 or more"),
    (("radial", (64, 64), 1000, 0.0), "radial spokes reach at most"),
    # sigpy's bisection never ended on these (its slope interval shrank to two adjacent floats)
    (("poisson", (32, 32), 12, 0.08), "no Poisson-disc mask of a 32x32 grid reaches acceleration 12"),
    (("poisson", (8, 8), 4, 0.08), "no Poisson-disc mask of a 8x8 grid"),
])
def test_bad_mask_requests(args, message):
    with pytest.raises(UserError, match=message):
        make_mask(*args)


@pytest.mark.parametrize("shape, acceleration, calib", [((64, 64), 4, (5, 5)), ((48, 40), 6, (4, 3)),
                                                       ((63, 65), 5, (5, 5))])
def test_the_bounded_poisson_search_gives_sigpys_masks(shape, acceleration, calib):
    import sigpy.mri

    from scorerecon.operators.masks import _poisson_search
    state = np.random.get_state()
    reference = sigpy.mri.poisson(shape, acceleration, calib=calib, dtype=np.float32, seed=123, crop_corner=True)
    ours = _poisson_search(shape, acceleration, calib, 123)
    np.testing.assert_array_equal(ours > 0, np.abs(reference) > 0)
    assert np.array_equal(np.random.get_state()[1], state[1])  # numpy's global generator left as it was


# ------------------------------------------------------------------------------ coils
@pytest.mark.parametrize("coils", [1, 3, 15])
def test_birdcage_maps_are_normalised(coils):
    maps = birdcage_maps(coils, (24, 20))
    assert maps.shape == (coils, 24, 20) and maps.dtype == np.complex64
    np.testing.assert_allclose((np.abs(maps) ** 2).sum(0), 1.0, rtol=1e-5)


def test_synthetic_phase_is_smooth_and_seeded():
    phase = synthetic_phase((64, 64), seed=3)
    assert np.array_equal(phase, synthetic_phase((64, 64), seed=3))
    assert not np.array_equal(phase, synthetic_phase((64, 64), seed=4))
    assert np.ptp(phase) <= np.pi + 1e-5 and np.ptp(phase) > 0.1
    assert np.abs(np.diff(phase, axis=0)).max() < 0.1 and np.abs(np.diff(phase, axis=1)).max() < 0.1


def test_rss_and_sense_combine_are_exact_for_normalised_maps():
    maps = torch.from_numpy(birdcage_maps(6, (16, 16))).to(torch.complex128)
    x = _crandn(2, 1, 16, 16, seed=12)
    coil_images = maps * x
    assert torch.allclose(rss(coil_images), x.abs(), atol=1e-6)
    assert torch.allclose(sense_combine(coil_images, maps), x, atol=1e-6)


def _phantom_kspace(size=96, coils=8):
    image = resize(shepp_logan_phantom(), (size, size)) * np.exp(1j * synthetic_phase((size, size), seed=1))
    maps = birdcage_maps(coils, (size, size))
    kspace = fft2c(torch.from_numpy((maps * image).astype(np.complex64))).numpy()
    return image, maps, kspace


@pytest.mark.parametrize("backend, fraction", [("torch", 0.12), ("sigpy", 0.25), pytest.param(
    "bart", 0.12, marks=pytest.mark.skipif(not bart.available(), reason="BART is not installed"))])
def test_espirit_recovers_simulated_maps(backend, fraction):
    """BART with the threshold passed as it was (-t 0.02, not its square): agreement 0.55 on
    average at 12 % of the lines, 0 at some pixels inside the object (maps zeroed there)."""
    image, maps, kspace = _phantom_kspace()
    mask = make_mask("equispaced", image.shape, 4, fraction, seed=0)
    estimated = espirit_maps(kspace * mask, backend=backend)
    inside = np.abs(image) > 0.05
    # equal up to one phase per pixel: |<S_true, S_est>| = 1 for unit-norm coil vectors
    agreement = np.abs((maps.conj() * estimated).sum(0))[inside]
    assert agreement.mean() > 0.99 and agreement.min() > 0.9
    coil_images = torch.from_numpy(maps * image)[None]
    combined = sense_combine(coil_images, torch.from_numpy(estimated).to(torch.complex128))[0, 0].numpy()
    error = np.linalg.norm((np.abs(combined) - np.abs(image))[inside]) / np.linalg.norm(np.abs(image)[inside])
    assert error < 0.02


def test_torch_espirit_matches_sigpy_on_a_square_region():
    image, _, kspace = _phantom_kspace()
    ours = espirit_maps(kspace, calib_shape=(24, 24), backend="torch")
    reference = espirit_maps(kspace, calib_shape=(24, 24), backend="sigpy")
    inside = np.abs(image) > 0.05
    assert np.array_equal(np.abs(ours).sum(0) > 0, np.abs(reference).sum(0) > 0)  # same eigenvalue crop
    assert np.abs(ours - reference)[:, inside].max() < 1e-3


def test_calibration_region_of_1d_and_2d_masks():
    assert calibration_region(make_mask("random", (40, 64), 4, 0.125, seed=0))[0] == 40
    assert calibration_region(make_mask("random", (40, 64), 4, 0.125, seed=0))[1] >= 8
    assert calibration_region(make_mask("uniform2d", (40, 64), 4, 0.25, seed=0)) == (10, 16)  # the ACS block
    assert calibration_region(np.zeros((8, 8))) == (0, 0)


@pytest.mark.parametrize("pattern,whole_lines", [
    ("equispaced", True), ("random", True), ("gaussian1d", True),
    ("poisson", False), ("gaussian2d", False), ("uniform2d", False), ("radial", False)])
def test_one_and_two_dimensional_masks_are_told_apart(pattern, whole_lines):
    mask = make_mask(pattern, (48, 40), 4, 0.1, seed=0)
    assert keeps_whole_lines(mask) is whole_lines
    assert keeps_whole_lines(np.broadcast_to(mask, (3, 48, 40))) is whole_lines  # one mask per coil


def test_espirit_needs_a_calibration_region():
    _, _, kspace = _phantom_kspace(size=48, coils=4)
    mask = make_mask("equispaced", (48, 48), 4, 0.08, seed=0)  # 4 centre lines only
    with pytest.raises(UserError, match="too small for ESPIRiT"):
        espirit_maps(kspace * mask)


def test_maps_with_the_wrong_coil_count_are_refused():
    with pytest.raises(UserError, match="3 coils but the k-space has 4"):
        check_maps(np.ones((3, 8, 8), np.complex64), (4, 8, 8))
    with pytest.raises(UserError, match="k-space size"):
        check_maps(np.ones((4, 8, 6), np.complex64), (4, 8, 8))
    with pytest.raises(UserError, match="k-space/mask grid"):
        SenseMRI(torch.ones(2, 8, 6, dtype=torch.complex64), torch.ones(8, 8))


def test_maps_not_normalised_to_unit_energy_are_refused():
    """SENSE with maps of Σ|S_c|² = 4 returns the image at half its intensity, which the prior
    does not expect: such maps (and NaN maps) are refused, normalised ones pass."""
    ones = np.ones((4, 8, 8), np.complex64)
    with pytest.raises(UserError, match="not normalised .* peaks at 4, not 1"):
        check_maps(ones, (4, 8, 8))
    with pytest.raises(UserError, match="NaN or Inf"):
        check_maps(np.full((4, 8, 8), np.nan, np.complex64), (4, 8, 8))
    np.testing.assert_array_equal(check_maps(ones / 2, (4, 8, 8)), ones / 2)


@pytest.mark.parametrize("width, acceleration", [(320, 4), (256, 8), (16, 16), (30, 7.5)])
def test_equispaced_lines_without_a_centre_are_exactly_one_in_r(width, acceleration):
    """fastMRI's stop before the last column lost a line for some offsets, and on 16 columns at
    R = 16 every line (an empty mask)."""
    counts = {int(make_mask("equispaced", (2, width), acceleration, 0.0, seed=s)[0].sum()) for s in range(40)}
    assert counts == {round(width / acceleration)}
