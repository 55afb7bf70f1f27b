"""benchmarks/compare_priors.py scores two priors on the same validation cases in one run."""

import json
from argparse import Namespace

import numpy as np
import pytest

from conftest import load_benchmark


@pytest.fixture
def script(monkeypatch, tmp_path):
    """The script as a module, with a prepared 'chest-ct' validation split (the CT tasks') of three 32² slices."""
    data = tmp_path / "data" / "chest-ct"
    data.mkdir(parents=True)
    yy, xx = np.mgrid[-1:1:32j, -1:1:32j]
    disc = (xx ** 2 + yy ** 2 < 0.6).astype(np.float32)
    np.save(data / "val.npy", np.stack([disc * v for v in (0.3, 0.5, 0.7)]))
    (data / "meta.json").write_text(json.dumps({"slices": {"val": [{"spacing_mm": [1.1, 1.1]}] * 3}}))
    monkeypatch.setenv("SCORERECON_DATA", str(tmp_path / "data"))
    return load_benchmark("compare_priors")


def _args(**kw):
    return Namespace(**{"slices": 1, "size": None, "steps": 2, "seed": 0, **kw})


def test_the_same_prior_twice_scores_the_same_and_the_table_gives_the_difference(script):
    priors = {"baseline": "head-ct-v1", "candidate": "head-ct-v1"}
    same = script.measure("ct-sparse-view", priors, _args())
    assert same["baseline"]["psnr"] == same["candidate"]["psnr"] > 10
    other = script.measure("ct-sparse-view", {**priors, "candidate": "head-ct-edm"}, _args())
    gain = other["candidate"]["psnr"] - other["baseline"]["psnr"]
    assert gain != 0   # a different network at the warm start's noise levels
    row = script.table({"ct-sparse-view": other}, {**priors, "candidate": "head-ct-edm"}, _args()).splitlines()[-1]
    samples = script.tuning.load_preset("ct-sparse-view")["methods"]["fast"]["samples"]
    assert row.startswith(f"| ct-sparse-view | {samples} | 2 |") and f"| {gain:+.2f} |" in row


def test_a_bad_prior_name_exits_with_one_line(script, capsys):
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--baseline", "no-such-prior", "--candidate", "head-ct", "--tasks", "ct-metal", "--quick"])
    assert "no-such-prior" in str(exit_info.value.code) and "\n" not in str(exit_info.value.code)


def test_validation_cases_are_simulated_at_each_slices_pixel_size(script):
    """The tuner's cases keep the dataset's pixel size (1.1 mm here), also when downsampled."""
    full, = script.tuning.validation_cases("ct-sparse-view", 1)
    half, = script.tuning.validation_cases("ct-sparse-view", 1, size=16)
    assert full.geometry["pixel_size"] == pytest.approx(1.1) and half.geometry["pixel_size"] == pytest.approx(2.2)


def test_the_table_shows_the_k_and_steps_that_ran_where_the_preset_leaves_them_out(script, tmp_path, monkeypatch):
    """A fast entry without samples or steps runs the sampler's defaults, K = 2 and 20 steps (the
    table showed K 1 and steps None)."""
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "ct-sparse-view.json").write_text(json.dumps({"methods": {"fast": {"eta": 1.0}}}))
    monkeypatch.setenv("SCORERECON_PRESETS", str(presets))
    result = {"psnr": 30.0, "ssim": 0.9, "seconds": 1.0}
    measured = {"ct-sparse-view": {"baseline": result, "candidate": result}}
    row = script.table(measured, {"baseline": "a", "candidate": "b"}, _args(steps=None)).splitlines()[-1]
    defaults = script.settings_for("fast", "ct-sparse-view", {})
    assert (defaults["samples"], defaults["steps"]) == (2, 20) and row.startswith("| ct-sparse-view | 2 | 20 |")
