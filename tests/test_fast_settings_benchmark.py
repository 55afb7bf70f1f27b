"""benchmarks/fast_settings.py keeps, in a task's preset, the value of highest validation PSNR."""

import json

import pytest

from conftest import load_benchmark


@pytest.mark.parametrize("setting, values", [("steps", (12, 48)), ("start_sigma", (0.05, 0.2))])
def test_the_value_of_highest_psnr_is_kept_with_the_other_settings(tmp_path, monkeypatch, setting, values):
    monkeypatch.setenv("SCORERECON_PRESETS", str(tmp_path / "presets"))
    script = load_benchmark("fast_settings")
    preset = {"eta": 0.5, "cg_iterations": 3, "gamma": 0.01, "start_sigma": 0.05, "samples": 4, "steps": 12}
    script.tuning.save_preset("ct-sparse-view", "fast", preset, {"trials": 16}, tmp_path / "presets")
    low, high = values
    results = {low: {"psnr": 35.0, "ssim": 0.96}, high: {"psnr": 35.4, "ssim": 0.95}}
    kept = script.keep_best("ct-sparse-view", setting, preset, results, str(tmp_path / "presets"), "cmd", 2)
    written = json.loads((tmp_path / "presets" / "ct-sparse-view.json").read_text())
    assert kept == high and written["methods"]["fast"] == {**preset, setting: high}
    assert written["tuned"]["fast"]["trials"] == 16  # the tuner's provenance stays
    choice = written["tuned"]["fast"][f"{setting}_choice"]
    assert choice["psnr"] == {str(low): 35.0, str(high): 35.4} and choice["source"].startswith("chest-ct val")
    results[low]["psnr"] = 35.5
    assert script.keep_best("ct-sparse-view", setting, preset, results, str(tmp_path / "presets"), "cmd", 2) == low


@pytest.mark.parametrize("argv, message", [
    (["--setting", "steps", "--values", "60"], "between 4 and 50"),
    (["--setting", "samples", "--values", "2.5"], "takes comma-separated int values"),
    (["--tasks", "ct-sideways"], "unknown task(s) ct-sideways"),
])
def test_bad_values_are_one_line_errors(capsys, argv, message):
    script = load_benchmark("fast_settings")
    with pytest.raises(SystemExit) as stop:
        script.main(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err
