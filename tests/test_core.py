"""The shared core: measurement file round trip, atomic outputs, metrics, CLI error contract."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from scorerecon.atomic import atomic_path
from scorerecon.cli import main
from scorerecon.data.intensity import hu_to_unit, unit_to_hu
from scorerecon.data.measurement import Measurement, read_measurement, write_measurement
from scorerecon.errors import UserError
from scorerecon.evaluation.metrics import (GAUSSIAN_WITHIN_1STD, body_mask, error_and_std, evaluate_images,
                                          gaussian_std_scale, psnr, ssim, std_coverage, std_scale_at_samples,
                                          std_scale_for_coverage)


def _measurement(**overrides):
    rng = np.random.default_rng(0)
    fields = dict(modality="ct", data=rng.random((12, 20)).astype(np.float32),
                  mask=np.ones((12, 20), np.uint8),
                  geometry={"kind": "parallel", "angles": np.linspace(0, np.pi, 12, endpoint=False),
                            "n_detectors": 20, "pixel_size": 0.5},
                  truth=rng.random((16, 16)).astype(np.float32) * 100,
                  extras={"metal_mask": np.zeros((16, 16), bool)}, attrs={"seed": 3, "flux": 1e5})
    fields.update(overrides)
    return Measurement(**fields)


def test_measurement_round_trip(tmp_path):
    meas = _measurement()
    write_measurement(tmp_path / "m.h5", meas)
    back = read_measurement(tmp_path / "m.h5")
    assert back.modality == "ct"
    np.testing.assert_array_equal(back.data, meas.data)
    np.testing.assert_array_equal(back.mask, meas.mask)
    np.testing.assert_array_equal(back.truth, meas.truth)
    np.testing.assert_allclose(back.geometry["angles"], meas.geometry["angles"])
    assert back.geometry["n_detectors"] == 20 and back.geometry["kind"] == "parallel"
    assert back.attrs["seed"] == 3 and back.attrs["flux"] == 1e5
    np.testing.assert_array_equal(back.extras["metal_mask"], meas.extras["metal_mask"])


def test_attributes_of_every_storable_kind_survive_the_round_trip(tmp_path):
    """Arrays and lists longer than 8 were dropped (or written as root datasets nobody read)."""
    attrs = {"seed": 3, "flag": True, "name": "x", "arr": np.arange(3), "nine": list(range(9)),
             "letters": list("abcdefghi")}
    write_measurement(tmp_path / "m.h5", _measurement(attrs=attrs))
    back = read_measurement(tmp_path / "m.h5").attrs
    assert {k: back[k] for k in attrs} == {**attrs, "arr": [0, 1, 2]}
    with pytest.raises(UserError, match="measurement attribute 'd' \\(dict\\) cannot be stored"):
        write_measurement(tmp_path / "d.h5", _measurement(attrs={"d": {"x": 1}}))
    assert not (tmp_path / "d.h5").exists()


@pytest.mark.parametrize("bad, message", [
    (dict(data=np.full((12, 20), np.nan, np.float32)), "NaN"),
    (dict(mask=np.zeros((12, 20), np.uint8)), "keeps no measurement"),
    (dict(mask=np.ones((5, 3), np.uint8)), "does not match"),
])
def test_bad_measurements_are_refused_without_output(tmp_path, bad, message):
    with pytest.raises(UserError, match=message):
        write_measurement(tmp_path / "m.h5", _measurement(**bad))
    assert list(tmp_path.iterdir()) == []


def test_mri_k_space_needs_a_coil_axis_and_a_column_mask_is_spread_over_the_rows():
    kspace = np.ones((1, 8, 6), np.complex64)
    column = np.array([1, 0, 1, 0, 1, 0], np.uint8)
    meas = Measurement(modality="mri", data=kspace, mask=column, geometry={}).validate()
    assert meas.mask.shape == (8, 6) and np.array_equal(meas.mask[3], column)
    row = Measurement(modality="mri", data=kspace, mask=column[None], geometry={}).validate()  # (1, W)
    assert np.array_equal(row.mask, meas.mask)  # ESPIRiT reads the calibration region off (H, W)
    with pytest.raises(UserError, match=r"MRI k-space must be \(coils, H, W\), got shape \(8, 6\)"):
        Measurement(modality="mri", data=kspace[0], mask=column, geometry={}).validate()


def test_real_k_space_and_a_complex_sinogram_are_refused():
    """A real array is not k-space (the k-space of an image is complex: a magnitude or a real
    part was saved instead), and a CT sinogram of line integrals is real."""
    mask = np.ones((8, 6), np.uint8)
    with pytest.raises(UserError, match="MRI data must be complex k-space, got float32 values"):
        Measurement(modality="mri", data=np.ones((1, 8, 6), np.float32), mask=mask, geometry={}).validate()
    with pytest.raises(UserError, match="CT data must be a real sinogram"):
        Measurement(modality="ct", data=np.ones((8, 6), np.complex64), mask=mask, geometry={}).validate()


def test_a_fractional_mask_is_stored_as_where_it_measures(tmp_path):
    """A weight of 0.5 is a measured entry: stored as 1, not cast to 0 (a file refused on reading)."""
    meas = _measurement()
    meas.mask = np.where(np.asarray(meas.mask) != 0, 0.5, 0.0)
    write_measurement(tmp_path / "m.h5", meas)
    assert np.array_equal(read_measurement(tmp_path / "m.h5").mask, np.asarray(meas.mask) != 0)


def test_reading_non_measurements(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_measurement(tmp_path / "missing.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(UserError, match="not an HDF5"):
        read_measurement(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(UserError, match="neither"):
        read_measurement(tmp_path / "other.h5")


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("done")
    assert target.read_text() == "done" and len(list(tmp_path.iterdir())) == 1


def test_atomic_path_refuses_missing_or_readonly_folder(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="does not exist"):
        with atomic_path(tmp_path / "nope" / "x.npy"):
            pass
    locked = tmp_path / "locked"
    locked.mkdir()
    # root ignores permission bits, so the folder is made unwritable where atomic_path asks
    monkeypatch.setattr("scorerecon.atomic.os.access", lambda path, mode, **kw: Path(path).resolve() != locked.resolve())
    with pytest.raises(UserError, match="not writable"):
        with atomic_path(locked / "x.npy"):
            pass
    assert list(locked.iterdir()) == []


def test_hu_window_is_affine_and_invertible():
    hu = np.array([-1000.0, 0.0, 2000.0, 3000.0])
    np.testing.assert_allclose(hu_to_unit(hu), [0.0, 1 / 3, 1.0, 4 / 3])
    np.testing.assert_allclose(unit_to_hu(hu_to_unit(hu)), hu)


def test_metrics_follow_scikit_image():
    rng = np.random.default_rng(1)
    truth = rng.random((40, 40))
    recon = np.clip(truth + 0.05 * rng.standard_normal((40, 40)), 0, 1)
    assert psnr(recon, truth) == pytest.approx(peak_signal_noise_ratio(truth, recon, data_range=1))
    assert ssim(recon, truth) == pytest.approx(structural_similarity(truth, recon, data_range=1))
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:30] = True
    mse = np.mean((recon[mask] - truth[mask]) ** 2)
    assert psnr(recon, truth, mask) == pytest.approx(10 * np.log10(1 / mse))
    with pytest.raises(UserError, match="shape"):
        psnr(recon[:30], truth)


def test_a_std_map_half_the_true_error_scale_is_calibrated_by_a_factor_of_two():
    """Errors drawn from N(0, σ²) against a std map of σ / 2: the 68.27 % quantile of |error| / std
    is 2 (the Gaussian's), after which 68 % and 95 % of the pixels lie within 1 and 2 std."""
    rng = np.random.default_rng(0)
    truth = rng.uniform(size=(400, 400))
    sigma = 0.05 * (1 + truth)  # a different σ per pixel: the map has to follow it
    image = truth + sigma * rng.standard_normal(truth.shape)
    error, std = error_and_std(image, sigma / 2, truth)
    before = std_coverage(error, std)
    assert before["within_1std"] == pytest.approx(0.383, abs=0.005) and before["r_std_err"] > 0.1
    scale = std_scale_for_coverage(error, std)
    assert scale == pytest.approx(2.0, rel=0.01)
    after = std_coverage(error, scale * std)
    assert after["within_1std"] == pytest.approx(GAUSSIAN_WITHIN_1STD, abs=1e-4)
    assert after["within_2std"] == pytest.approx(0.954, abs=0.005)
    keep = np.zeros(truth.shape, bool)
    keep[:10] = True  # excluded pixels (e.g. metal) are left out
    assert error_and_std(image, sigma, truth, exclude=~keep)[0].size == keep.sum()


@pytest.mark.parametrize("ratio", [0.5, 1.0, 1.6])
def test_a_scale_calibrated_at_one_k_carries_to_another(ratio):
    """K Gaussian draws around μ̂ and a truth σ_t = ratio·σ_s from it, per pixel: the scale
    fitted at K = 4 and carried to K = 2 and 8 covers 68 % there too; the fitted scale kept as it
    is, or 1, does not.  ratio 1 (a sampler of the true posterior) needs the model's t factors."""
    rng = np.random.default_rng(0)
    pixels = 200_000
    spread = rng.uniform(0.5, 2.0, pixels)  # σ_s varies over the image
    truth = ratio * spread * rng.standard_normal(pixels)

    def error_and_spread(samples):
        draws = spread * rng.standard_normal((samples, pixels))
        return np.abs(draws.mean(axis=0) - truth), draws.std(axis=0)

    fitted = std_scale_for_coverage(*error_and_spread(4))
    for samples in (2, 8):
        error, std = error_and_spread(samples)
        carried = std_scale_at_samples(fitted, 4, samples)
        assert np.mean(error <= carried * std) == pytest.approx(GAUSSIAN_WITHIN_1STD, abs=0.01)
        assert abs(np.mean(error <= fitted * std) - GAUSSIAN_WITHIN_1STD) > 0.03
    if ratio == 1.0:
        assert [round(gaussian_std_scale(k), 2) for k in (2, 4, 8)] == [3.18, 1.55, 1.22]
        assert fitted == pytest.approx(gaussian_std_scale(4), rel=0.02)
    assert std_scale_at_samples(fitted, 4, 4) == fitted
    with pytest.raises(UserError, match="at least 2 posterior samples, got K = 1"):
        std_scale_at_samples(fitted, 4, 1)


def test_std_maps_that_cannot_be_calibrated_are_named():
    error, std = np.array([0.0, 0.1, 0.2, 0.3]), np.zeros(4)
    with pytest.raises(UserError, match="the std map is 0 on 75% of the pixels, where the error is not"):
        std_scale_for_coverage(error, std)
    with pytest.raises(UserError, match="the error is 0 on at least 50% of the pixels"):
        std_scale_for_coverage(np.array([0.0, 0.0, 0.0, 1.0]), np.ones(4), coverage=0.5)
    # a pixel with std 0 and no error counts as covered: 3 of 4 within 0.2 std
    assert std_scale_for_coverage(np.array([0.0, 0.1, 0.2, 0.4]), np.array([0.0, 1.0, 1.0, 1.0]), 0.75) == 0.2
    with pytest.raises(UserError, match="coverage must lie between 0 and 1"):
        std_scale_for_coverage(error, std + 1, coverage=1.0)
    image = np.zeros((4, 4))
    with pytest.raises(UserError, match=r"std map shape \(3, 3\) differs from image shape \(4, 4\)"):
        error_and_std(image, np.ones((3, 3)), image)
    with pytest.raises(UserError, match="every pixel is excluded"):
        error_and_std(image, np.ones((4, 4)), image, exclude=np.ones((4, 4), bool))


def test_body_mask_and_ct_evaluation():
    truth_hu = np.full((32, 32), -1000.0)
    truth_hu[8:24, 8:24] = 40.0
    assert body_mask(hu_to_unit(truth_hu)).sum() == 16 * 16
    metrics = evaluate_images(truth_hu + 30.0, truth_hu, modality="ct")
    assert metrics["psnr"] == pytest.approx(20 * np.log10(3000 / 30.0))


def test_masks_are_booleans_of_the_images_shape():
    """A uint8 mask was used as an index array (another PSNR than the same mask as booleans); a
    transposed exclude mask was reshaped into place and scrambled the pixels it left out."""
    rng = np.random.default_rng(0)
    truth = rng.random((16, 24))
    recon = truth + 0.05 * rng.standard_normal((16, 24))
    mask = np.zeros((16, 24), bool)
    mask[4:12, 6:20] = True
    for metric in (psnr, ssim):
        assert metric(recon, truth, mask.astype(np.uint8)) == metric(recon, truth, mask)
        assert metric(recon, truth, mask[None]) == metric(recon, truth, mask)
        with pytest.raises(UserError, match=r"the mask has shape \(24, 16\), the images \(16, 24\)"):
            metric(recon, truth, mask.T)
    hu = truth * 1000
    with pytest.raises(UserError, match="mask of pixels to leave out has shape"):
        evaluate_images(hu, hu, exclude=mask.T)
    with pytest.raises(UserError, match="excluded mask has shape"):
        error_and_std(recon, np.ones_like(truth), truth, exclude=mask.T)


def test_cli_user_errors_exit_2_with_one_line(tmp_path, capsys):
    code = main(["reconstruct", str(tmp_path / "missing.h5"), "-o", str(tmp_path / "x.npy")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "does not exist" in err
    assert not (tmp_path / "x.npy").exists()


def test_cli_metrics_json_is_written(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((8, 8), np.float32))
    np.save(tmp_path / "b.npy", np.full((8, 8), 30.0, np.float32))
    code = main(["evaluate", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--json", str(tmp_path / "m.json")])
    assert code == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["psnr"] == pytest.approx(20 * np.log10(3000 / 30.0))
