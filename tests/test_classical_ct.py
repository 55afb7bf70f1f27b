"""Classical CT reconstructions: FBP scaling, SART, TV, LI-MAR, metal, options, CLI round trip."""

import json

import numpy as np
import pytest
import torch
from conftest import shepp_logan_hu

from scorerecon.cli import main
from scorerecon.data.intensity import hu_to_unit
from scorerecon.errors import UserError
from scorerecon.evaluation.metrics import image_metrics
from scorerecon.simulate.ct import simulate_ct
from scorerecon.solvers.classical_ct import (
    DEFAULT_TV_WEIGHT,
    ct_problem,
    default_tv_weight,
    interpolate_metal_trace,
)
from scorerecon.solvers.optim import tv_norm
from scorerecon.solvers.registry import reconstruct


def smooth_phantom(n: int = 64) -> np.ndarray:
    return shepp_logan_hu(n, smooth=True)


@pytest.fixture(scope="module")
def sparse():
    return simulate_ct(smooth_phantom(), views=15, full_views=90)


@pytest.fixture(scope="module")
def metal_case():
    hu = smooth_phantom(64)
    metal = np.zeros_like(hu, dtype=bool)
    metal[25:28, 20:23] = metal[36:39, 40:43] = True
    return simulate_ct(hu, metal=metal, views=45, full_views=90, seed=1)


def _psnr(rec, meas):
    mask = None if "metal_mask" not in meas.extras else ~meas.extras["metal_mask"].astype(bool)
    return image_metrics(rec.unit_image, hu_to_unit(meas.truth), mask)["psnr"]


def test_fbp_of_full_data_recovers_the_phantom_and_sparse_fbp_keeps_intensities(sparse):
    full = simulate_ct(smooth_phantom(), full_views=90)
    rec_full = reconstruct(full, "fbp")
    assert _psnr(rec_full, full) > 28
    assert rec_full.image.dtype == np.float32 and rec_full.image.shape == (64, 64)
    rec_sparse = reconstruct(sparse, "fbp")
    assert rec_sparse.info["view_scale"] == pytest.approx(6.0)
    # the N_full / N_kept scaling keeps the mean attenuation of the full-data FBP
    assert rec_sparse.unit_image.mean() == pytest.approx(rec_full.unit_image.mean(), rel=0.02)
    assert np.abs(rec_full.image - full.truth).mean() < 60  # HU


def test_iterative_methods_beat_fbp_on_sparse_views(sparse):
    fbp = _psnr(reconstruct(sparse, "fbp"), sparse)
    sart = reconstruct(sparse, "sart", iterations=50)
    tv = reconstruct(sparse, "tv")
    assert _psnr(sart, sparse) > fbp + 3
    assert _psnr(tv, sparse) > _psnr(sart, sparse)
    assert tv.info["weight"] == DEFAULT_TV_WEIGHT and tv.info["iterations"] == 300
    assert sart.info["iterations"] == 50
    assert tv.unit_image.min() >= 0 and sart.unit_image.min() >= 0


def test_tv_weight_controls_total_variation(sparse):
    low = reconstruct(sparse, "tv", weight=0.01, iterations=100).unit_image
    high = reconstruct(sparse, "tv", weight=1.0, iterations=100).unit_image
    assert float(tv_norm(torch.from_numpy(high))) < float(tv_norm(torch.from_numpy(low)))


def test_restricted_operator_is_the_operator_on_the_acquired_views(sparse):
    problem = ct_problem(sparse)
    sub, y = problem.restricted()
    x = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sub(x), problem.operator(x)[..., problem.acquired, :])
    torch.testing.assert_close(y, problem.sinogram[..., problem.acquired, :])
    assert int(problem.acquired.sum()) == 15


def test_linear_interpolation_across_the_trace_is_exact_for_linear_rows():
    bins = np.arange(20, dtype=np.float32)
    sino = np.stack([2 * bins + 1, 5 - bins, np.zeros(20, np.float32)])
    mask = np.ones_like(sino)
    mask[0, 5:9] = mask[1, 12:15] = 0
    mask[2] = 0
    holed = sino * mask
    filled = interpolate_metal_trace(holed, mask, np.array([True, True, False]))
    np.testing.assert_allclose(filled[:2], sino[:2])
    assert np.all(filled[2] == 0)  # views that were not acquired stay empty


def test_every_method_puts_the_metal_back_and_li_mar_beats_fbp(metal_case):
    metal = metal_case.extras["metal_mask"].astype(bool)
    value = hu_to_unit(metal_case.attrs["metal_hu"])
    scores = {}
    for method in ("fbp", "li-mar", "sart", "tv"):
        rec = reconstruct(metal_case, method)
        np.testing.assert_allclose(rec.unit_image[metal], value, rtol=1e-6)
        scores[method] = _psnr(rec, metal_case)
    assert scores["li-mar"] > scores["fbp"] + 5
    assert scores["sart"] > scores["fbp"] and scores["tv"] > scores["fbp"]


def test_default_tv_weight_grows_with_noise():
    assert default_tv_weight(None, 23) == DEFAULT_TV_WEIGHT
    assert default_tv_weight(1e5, 23) == pytest.approx(DEFAULT_TV_WEIGHT + 1.0)
    assert default_tv_weight(1e5, 92) == pytest.approx(DEFAULT_TV_WEIGHT + 2.0)
    assert default_tv_weight(1e6, 23) < default_tv_weight(1e4, 23)


@pytest.mark.parametrize("method, options, message", [
    ("li-mar", {}, "metal"),
    ("sart", {"iterations": 0}, "iterations"),
    ("tv", {"iterations": float("inf")}, "iterations must be a whole number"),
    ("tv", {"weight": -1.0}, "weight"),
    ("tv", {"weight": float("inf")}, "weight must be a positive finite number"),
    ("fbp", {"filter": "box"}, "filter"),
])
def test_bad_options_raise_user_errors(sparse, method, options, message):
    with pytest.raises(UserError, match=message):
        reconstruct(sparse, method, **options)


@pytest.mark.parametrize("flux", [0, float("nan")])
def test_a_bad_flux_attribute_is_named_when_tv_needs_its_default_weight(sparse, flux):
    sparse.attrs["flux"] = flux
    with pytest.raises(UserError, match="flux attribute is .*, not a positive number of photons"):
        reconstruct(sparse, "tv")
    assert reconstruct(sparse, "tv", weight=0.1, iterations=2).info["weight"] == 0.1


def test_cli_simulate_then_reconstruct_round_trip(tmp_path, capsys):
    image = tmp_path / "phantom.npy"
    np.save(image, smooth_phantom())
    meas, metal_meas, mask = tmp_path / "m.h5", tmp_path / "metal.h5", tmp_path / "metal_mask.npy"
    metal = np.zeros((64, 64), np.uint8)
    metal[30:33, 28:31] = 1
    np.save(mask, metal)
    assert main(["simulate", "ct", str(image), "-o", str(meas), "--views", "30", "--full-views", "60"]) == 0
    assert main(["simulate", "ct", str(image), "-o", str(metal_meas), "--full-views", "60",
                 "--metal", str(mask), "--seed", "3"]) == 0
    truth = np.load(image)
    expected = {"fbp": 20, "sart": 25, "tv": 25}
    for method, floor in expected.items():
        out, metrics = tmp_path / f"{method}.npy", tmp_path / f"{method}.json"
        assert main(["reconstruct", str(meas), "-o", str(out), "--method", method, "--metrics", str(metrics)]) == 0
        rec = np.load(out)
        assert rec.shape == (64, 64) and rec.dtype == np.float32
        assert np.abs(rec - truth).mean() < 150  # HU
        assert json.loads(metrics.read_text())["psnr"] > floor
    out = tmp_path / "li-mar.npy"
    assert main(["reconstruct", str(metal_meas), "-o", str(out), "--method", "li-mar"]) == 0
    assert np.load(out)[31, 29] > 10000  # the metal is back, in HU
    # a failing reconstruction writes nothing
    failed = tmp_path / "failed.npy"
    assert main(["reconstruct", str(meas), "-o", str(failed), "--method", "li-mar"]) == 2
    assert not failed.exists()
    assert "metal" in capsys.readouterr().err
    assert main(["simulate", "ct", str(image), "-o", str(tmp_path / "x.h5"), "--views", "0"]) == 2
    assert not (tmp_path / "x.h5").exists()
