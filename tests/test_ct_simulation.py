"""CT simulation: noise-free physics, Poisson statistics, metal, masks, bad input, files."""

import numpy as np
import pytest
import torch
from conftest import shepp_logan_hu

from scorerecon.data.intensity import (
    MU_WATER_PER_MM,
    ct_line_integral_scale,
    hu_to_unit,
)
from scorerecon.data.measurement import read_measurement
from scorerecon.errors import UserError
from scorerecon.operators.ct import (
    CTGeometry,
    CTOperator,
    metal_trace_mask,
    sinogram_to_unit,
    view_mask,
)
from scorerecon.simulate.ct import (
    ELECTRONIC_NOISE_STD,
    auto_metal_mask,
    metal_hu,
    photon_counts,
    polychromatic_transmission,
    simulate_ct,
    simulate_ct_file,
    water_precorrection,
)


def test_noise_free_sinogram_is_scaled_radon_transform_of_unit_image():
    hu = shepp_logan_hu()
    meas = simulate_ct(hu, pixel_size=0.8, views=30, full_views=90)
    geometry = CTGeometry.from_dict(meas.geometry)
    op = CTOperator(geometry)
    expected = op.transform(torch.from_numpy(hu_to_unit(hu))[None, None])[0, 0].numpy()
    expected = expected * ct_line_integral_scale(0.8) * meas.mask
    np.testing.assert_allclose(meas.data, expected, rtol=1e-5, atol=1e-5)
    assert meas.data.dtype == np.float32 and meas.data.shape == geometry.sinogram_shape
    assert meas.mask.sum(axis=1).astype(bool).sum() == 30
    np.testing.assert_array_equal(meas.truth, hu)
    # a 64-pixel water disc is ~ μ_water · 64 · 0.8 thick through the centre
    disc = np.where(np.hypot(*np.indices((64, 64)) - 31.5) < 30, 0.0, -1000.0)
    water = simulate_ct(disc, pixel_size=0.8, full_views=8)
    assert water.data[:, water.data.shape[1] // 2].mean() == pytest.approx(MU_WATER_PER_MM * 60 * 0.8, rel=0.03)


def test_fan_beam_simulation_round_trips_through_the_unit_helper():
    hu = shepp_logan_hu()
    meas = simulate_ct(hu, views=12, full_views=36, geometry="fan", detector="curved")
    op = CTOperator(CTGeometry.from_dict(meas.geometry))
    expected = op.transform(torch.from_numpy(hu_to_unit(hu))[None, None]) * op.mask
    torch.testing.assert_close(sinogram_to_unit(meas)[0, 0] * torch.from_numpy(meas.mask.astype(np.float32)),
                               expected[0, 0] * torch.from_numpy(meas.mask.astype(np.float32)), rtol=1e-4, atol=1e-4)
    assert meas.geometry["detector_shape"] == "curved"
    assert np.flatnonzero(meas.mask.reshape(36, -1).any(1)).tolist() == list(range(0, 36, 3))  # around the circle


def test_photon_counts_have_poisson_mean_and_variance_plus_electronic_noise():
    rng = np.random.default_rng(0)
    flux, transmission = 1e4, np.full(200_000, 0.05)
    counts = photon_counts(transmission, flux, rng)
    assert counts.mean() == pytest.approx(flux * 0.05, rel=0.005)
    assert counts.var() == pytest.approx(flux * 0.05 + ELECTRONIC_NOISE_STD ** 2, rel=0.02)
    assert photon_counts(np.zeros(1000), flux, rng).min() >= 1.0  # floored before the log


def test_noisy_post_log_residuals_match_the_delta_method_and_seed():
    hu = shepp_logan_hu()
    clean = simulate_ct(hu, full_views=60)
    noisy = simulate_ct(hu, full_views=60, flux=2e4, seed=3)
    p = clean.data.astype(np.float64)
    counts = 2e4 * np.exp(-p)
    z = (noisy.data - p) * np.sqrt(counts ** 2 / (counts + ELECTRONIC_NOISE_STD ** 2))
    assert abs(z.mean()) < 0.05 and z.std() == pytest.approx(1.0, rel=0.05)
    assert np.array_equal(noisy.data, simulate_ct(hu, full_views=60, flux=2e4, seed=3).data)
    assert not np.array_equal(noisy.data, simulate_ct(hu, full_views=60, flux=2e4, seed=4).data)
    assert noisy.attrs["flux"] == 2e4 and noisy.attrs["seed"] == 3


def test_beam_hardening_and_water_precorrection():
    t = np.linspace(0, 8, 17)
    water = -np.log(polychromatic_transmission({"water": t}))
    bone = -np.log(polychromatic_transmission({"bone": t}))
    # hardening: attenuation per unit length decreases with thickness (a concave curve) ...
    assert np.all(np.diff(water, 2) < 0) and np.all(np.diff(bone, 2) < 0)
    # ... more so for bone, whose attenuation depends more on energy
    assert bone[-1] / (16 * bone[1]) < water[-1] / (16 * water[1])
    np.testing.assert_allclose(water_precorrection(water), t, atol=2e-3)
    # noisy air rays (post-log below 0) continue along the curve's slope at 0 instead of
    # clamping to 0: noise around 0 stays centred there
    small = np.array([-0.01, -0.001, 0.001, 0.01])
    corrected = water_precorrection(small)
    np.testing.assert_allclose(corrected[:2], -corrected[:1:-1], rtol=2e-3)
    assert np.all(corrected[:2] < 0)
    assert metal_hu("iron") > metal_hu("titanium") > 5000


def _error_energy(x, truth, keep):
    return float(np.mean((x - truth)[keep] ** 2))


def test_metal_streaks_in_fbp_and_li_mar_reduces_them():
    from scorerecon.solvers.classical_ct import fbp_method, li_mar_method
    hu = shepp_logan_hu(96)
    metal = np.zeros_like(hu, dtype=bool)
    metal[40:45, 30:35] = metal[50:55, 60:65] = True
    meas = simulate_ct(hu, metal=metal, full_views=120, seed=1)
    clean = simulate_ct(hu, full_views=120)
    truth = hu_to_unit(hu)
    keep = ~metal
    e_clean = _error_energy(fbp_method(clean).unit_image, truth, keep)
    e_metal = _error_energy(fbp_method(meas).unit_image, truth, keep)
    e_limar = _error_energy(li_mar_method(meas).unit_image, truth, keep)
    assert e_metal > 5 * e_clean
    assert e_limar < 0.2 * e_metal


def test_masks_are_combined_in_the_file(tmp_path):
    hu = shepp_logan_hu()
    metal = np.zeros_like(hu, dtype=bool)
    metal[30:33, 20:23] = True
    meas = simulate_ct(hu, views=10, full_views=60, limited_angle=150, metal=metal)
    geometry = CTGeometry.from_dict(meas.geometry)
    views = view_mask(60, k=10).astype(bool)
    in_range = np.degrees(geometry.angles) < 150
    trace = metal_trace_mask(geometry, metal) == 0
    expected = views[:, None] & in_range[:, None] & ~trace
    np.testing.assert_array_equal(meas.mask.astype(bool), expected)
    assert np.all(meas.data[~expected] == 0)
    acquired_trace = views[:, None] & in_range[:, None] & trace
    assert np.all(meas.extras["metal_trace_data"][~acquired_trace] == 0)
    assert np.all(meas.extras["metal_trace_data"][acquired_trace] > 0)
    np.testing.assert_array_equal(meas.extras["metal_mask"], metal.astype(np.uint8))
    assert meas.attrs["metal"] == "mask" and meas.attrs["metal_hu"] == pytest.approx(metal_hu("iron"))
    np.testing.assert_array_equal(meas.truth, hu)  # truth without metal
    # 10 views requested over 180°, 150° of them acquired
    assert meas.attrs["views"] == 10 and meas.attrs["acquired_views"] == int((views & in_range).sum()) < 10


def test_auto_metal_is_seeded_and_inside_the_body():
    from scipy import ndimage
    hu = shepp_logan_hu(128)
    a, b = auto_metal_mask(hu, 1.0, seed=5), auto_metal_mask(hu, 1.0, seed=5)
    assert np.array_equal(a, b) and not np.array_equal(a, auto_metal_mask(hu, 1.0, seed=6))
    assert np.all(hu[a] > -500)
    assert ndimage.label(a)[1] == 2
    meas = simulate_ct(hu, metal="auto", full_views=30, seed=5)
    assert np.array_equal(meas.extras["metal_mask"].astype(bool), a)
    assert meas.attrs["flux"] == 1e5  # photon starvation by default
    with pytest.raises(UserError, match="no body"):
        auto_metal_mask(np.full((64, 64), -1000.0), 1.0, seed=0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(views=0), "views"),
    (dict(views=200), "views"),
    (dict(full_views=0), "full_views must be a whole number >= 1"),
    (dict(limited_angle=0), "limited-angle"),
    (dict(limited_angle=190), "limited-angle"),
    (dict(limited_angle=370, geometry="fan"), "limited-angle"),
    (dict(geometry="cone"), "geometry"),
    (dict(detector="round"), "detector"),
    (dict(detector="curved"), "curved detector is a fan-beam detector"),
    (dict(flux=-5), "flux"),
    (dict(pixel_size=0), "pixel size"),
    (dict(pixel_size=float("inf")), "pixel_size must be a finite number"),
    (dict(flux=1e19), "beyond 1e\\+15 photons"),  # numpy's Poisson raised ValueError
    (dict(metal=np.zeros((10, 10), bool)), "does not match"),
    (dict(metal=np.zeros((64, 64), bool)), "empty"),
    (dict(metal=np.ones((64, 64), bool)), "whole image"),
    (dict(metal=np.eye(64, dtype=bool), metal_material="gold"), "unknown metal"),
])
def test_bad_options_raise_one_line_user_errors(kwargs, message):
    with pytest.raises(UserError, match=message) as err:
        simulate_ct(shepp_logan_hu(), **kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("image, message", [
    (np.full((32, 32), np.nan), "NaN"),
    (np.zeros((4, 32, 32)), "2-D"),
    (np.zeros(32), "2-D"),
    (np.zeros((4, 4)), "too small"),
])
def test_bad_images_raise_user_errors(image, message):
    with pytest.raises(UserError, match=message):
        simulate_ct(image)


def test_simulate_file_round_trip_and_no_partial_output(tmp_path):
    hu = shepp_logan_hu()
    image = tmp_path / "slice.npy"
    np.save(image, hu)
    out = tmp_path / "meas.h5"
    meas = simulate_ct_file(image, out, views=8, full_views=40, flux=1e6, seed=2)
    back = read_measurement(out)
    np.testing.assert_array_equal(back.data, meas.data)
    np.testing.assert_array_equal(back.mask, meas.mask)
    assert back.attrs["flux"] == 1e6 and back.attrs["views"] == 8 and "limited_angle" not in back.attrs
    assert back.attrs["acquired_views"] == 8
    assert CTGeometry.from_dict(back.geometry) == CTGeometry.from_dict(meas.geometry)
    bad = tmp_path / "bad.h5"
    with pytest.raises(UserError):
        simulate_ct_file(image, bad, views=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meas.h5", "slice.npy"]
    mask_file = tmp_path / "metal.npy"
    np.save(mask_file, np.zeros((64, 64), np.uint8))
    with pytest.raises(UserError, match="empty"):
        simulate_ct_file(image, tmp_path / "m.h5", metal=str(mask_file), full_views=20)
    assert not (tmp_path / "m.h5").exists()
    np.savez(tmp_path / "oblong.npz", image=hu, spacing=[1.0, 0.5])
    with pytest.raises(UserError, match="pixels of 1 x 0.5 mm: the CT simulation needs square pixels"):
        simulate_ct_file(tmp_path / "oblong.npz", tmp_path / "o.h5", full_views=20)
    assert not (tmp_path / "o.h5").exists()
