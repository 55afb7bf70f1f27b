"""Classical MRI reconstructions: analytic cases, quality ordering, BART agreement, wavelets."""

import numpy as np
import pytest
import pywt
import torch
from skimage.data import shepp_logan_phantom
from skimage.transform import resize

from scorerecon.errors import UserError
from scorerecon.evaluation.metrics import psnr
from scorerecon.operators import bart
from scorerecon.operators.mri import measurement_tensors
from scorerecon.simulate.mri import simulate_mri
from scorerecon.solvers.registry import reconstruct
from scorerecon.solvers.wavelet import OrthonormalWavelet2D, padded_shape, soft_threshold

METHODS = ("zero-filled", "sense", "cs-wavelet", "cs-tv")


def _phantom(size=64):
    return (resize(shepp_logan_phantom(), (size, size)) * 100).astype(np.float32)


def _unit_psnr(result, meas):
    return psnr(np.clip(result.unit_image, 0, 1), meas.truth / meas.attrs["intensity_scale"])


@pytest.mark.parametrize("coils", [1, 4])
def test_fully_sampled_noise_free_data_are_recovered(coils):
    meas = simulate_mri(_phantom(), mask="equispaced", acceleration=1, coils=coils, seed=0)
    for method in METHODS:
        result = reconstruct(meas, method, weight=0.0 if method != "zero-filled" else None)
        assert result.image.shape == (64, 64)
        assert _unit_psnr(result, meas) > 50, method
        np.testing.assert_allclose(result.image.max(), meas.truth.max(), rtol=0.02)  # native units


def test_quality_ordering_on_undersampled_multicoil_data():
    meas = simulate_mri(_phantom(), mask="poisson", acceleration=4, coils=6, noise=0.005, seed=1,
                        center_fraction=0.2)
    meas.extras.pop("sensitivity_maps")  # estimated by ESPIRiT, as for real data
    scores = {m: _unit_psnr(reconstruct(meas, m), meas) for m in METHODS}
    assert scores["sense"] > scores["zero-filled"] + 5
    assert scores["cs-wavelet"] > scores["sense"] and scores["cs-tv"] > scores["sense"]
    assert meas.extras["sensitivity_maps"].shape == (6, 64, 64)


def test_pixels_no_coil_sees_stay_zero():
    meas = simulate_mri(_phantom(), mask="poisson", acceleration=4, coils=4, seed=1)
    maps = meas.extras["sensitivity_maps"]
    maps[:, :, :8] = 0
    for method in ("cs-wavelet", "cs-tv"):
        assert np.all(reconstruct(meas, method).image[:, :8] == 0), method


def test_compressed_sensing_beats_zero_filling_single_coil():
    meas = simulate_mri(_phantom(), mask="gaussian2d", acceleration=3, coils=1, seed=2)
    zero_filled = _unit_psnr(reconstruct(meas, "zero-filled"), meas)
    assert _unit_psnr(reconstruct(meas, "cs-tv"), meas) > zero_filled + 3
    assert _unit_psnr(reconstruct(meas, "cs-wavelet"), meas) > zero_filled + 1


def test_outputs_are_cropped_to_the_reconstruction_size():
    meas = simulate_mri(_phantom(), mask="random", acceleration=2, coils=1, seed=3)
    meas.geometry["output_shape"] = [40, 32]
    meas.truth = meas.truth[12:52, 16:48]
    for method in METHODS:
        options = {} if method == "zero-filled" else {"iterations": 2}  # zero-filled refuses --iterations
        assert reconstruct(meas, method, **options).image.shape == (40, 32)


def test_bad_weights_are_refused():
    meas = simulate_mri(_phantom(16), mask="random", acceleration=2, coils=1, seed=3)
    with pytest.raises(UserError, match="must be a finite number >= 0"):
        reconstruct(meas, "cs-tv", weight=-1.0)


@pytest.mark.parametrize("method", ["sense", "cs-tv", "cs-wavelet"])
@pytest.mark.parametrize("iterations", [0, -3, 2.5])
def test_iteration_counts_that_are_not_whole_and_positive_are_refused(method, iterations):
    """0 ran the default, -3 returned zeros (sense), 2.5 a TypeError traceback."""
    meas = simulate_mri(_phantom(16), mask="random", acceleration=2, coils=2, seed=3)
    with pytest.raises(UserError, match="--iterations must be a whole number >= 1"):
        reconstruct(meas, method, iterations=iterations)


@pytest.mark.skipif(not bart.available(), reason="BART is not installed")
def test_cg_sense_agrees_with_bart_pics():
    meas = simulate_mri(_phantom(), mask="poisson", acceleration=3, coils=4, noise=0.02, seed=0)
    kspace, _, _ = measurement_tensors(meas)
    ours = reconstruct(meas, "sense", weight=0.05, iterations=100).unit_image
    theirs = bart.run(["pics", "-l2", "-r", "0.05", "-w", "1", "-i", "100", "kspace", "maps", "out"],
                      {"kspace": bart.kspace_to_bart(kspace[0].numpy()),
                       "maps": bart.kspace_to_bart(meas.extras["sensitivity_maps"])}, "out")
    np.testing.assert_allclose(ours, np.abs(theirs.reshape(64, 64)), atol=1e-4)


@pytest.mark.skipif(not bart.available(), reason="BART is not installed")
def test_l1_wavelet_is_on_par_with_bart_pics():
    meas = simulate_mri(_phantom(), mask="poisson", acceleration=4, coils=4, noise=0.01, seed=0)
    kspace, _, _ = measurement_tensors(meas)
    truth = meas.truth / meas.attrs["intensity_scale"]
    theirs = bart.run(["pics", "-R", "W:3:0:0.003", "-w", "1", "-i", "100", "kspace", "maps", "out"],
                      {"kspace": bart.kspace_to_bart(kspace[0].numpy()),
                       "maps": bart.kspace_to_bart(meas.extras["sensitivity_maps"])}, "out")
    bart_psnr = psnr(np.clip(np.abs(theirs.reshape(64, 64)), 0, 1), truth)
    assert _unit_psnr(reconstruct(meas, "cs-wavelet", weight=0.003), meas) > bart_psnr - 1.0


# --------------------------------------------------------------------------- wavelets
@pytest.mark.parametrize("name", ["haar", "db2", "db4"])
def test_wavelet_matches_pywavelets_and_is_orthonormal(name):
    x = torch.randn(2, 1, 64, 96, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    psi = OrthonormalWavelet2D(name, levels=3)
    c = psi.forward(x)
    reference = pywt.coeffs_to_array(pywt.wavedec2(x[1, 0].numpy(), name, mode="periodization", level=3))[0]
    np.testing.assert_allclose(c[1, 0].numpy(), reference, atol=1e-12)
    assert torch.allclose(torch.linalg.vector_norm(c), torch.linalg.vector_norm(x))
    z = torch.randn(1, 1, 64, 96, dtype=torch.complex128)
    assert torch.allclose(psi.inverse(psi.forward(z)), z, atol=1e-12)
    y = torch.randn(1, 1, 64, 96, dtype=torch.complex128)
    assert torch.isclose(torch.sum(psi.forward(z).conj() * y), torch.sum(z.conj() * psi.inverse(y)))


def test_soft_threshold_and_padding():
    c = torch.tensor([3 + 4j, 0.1 + 0j, 0j], dtype=torch.complex128)
    out = soft_threshold(c, 1.0)
    assert torch.allclose(out, torch.tensor([2.4 + 3.2j, 0j, 0j], dtype=torch.complex128))
    assert padded_shape((217, 181), 4) == (224, 192)
