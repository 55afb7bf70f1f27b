"""benchmarks/fast_steps.py keeps, in a task's preset, the step count of highest validation PSNR."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fast_steps.py"


def _script(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # as when run: it imports score_methods beside it
    spec = importlib.util.spec_from_file_location("fast_steps_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_step_count_of_highest_psnr_is_kept_with_the_other_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("SCORERECON_PRESETS", str(tmp_path / "presets"))
    script = _script(monkeypatch)
    preset = {"eta": 0.5, "cg_iterations": 3, "gamma": 0.01, "start_sigma": 0.05, "samples": 4, "steps": 12}
    script.tuning.save_preset("ct-sparse-view", "fast", preset, {"trials": 16}, tmp_path / "presets")
    results = {12: {"psnr": 35.0, "ssim": 0.96}, 48: {"psnr": 35.4, "ssim": 0.95}}
    kept = script.keep_best_steps("ct-sparse-view", preset, results, str(tmp_path / "presets"), "cmd", 2)
    written = json.loads((tmp_path / "presets" / "ct-sparse-view.json").read_text())
    assert kept == 48 and written["methods"]["fast"] == {**preset, "steps": 48}
    assert written["tuned"]["fast"]["trials"] == 16  # the tuner's provenance stays
    assert written["tuned"]["fast"]["steps_choice"]["psnr"] == {"12": 35.0, "48": 35.4}
    results[12]["psnr"] = 35.5
    assert script.keep_best_steps("ct-sparse-view", preset, results, str(tmp_path / "presets"), "cmd", 2) == 12
