"""benchmarks/fast_settings.py keeps, in a task's preset of a sampler, the value of highest validation PSNR."""

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


def test_a_changed_setting_drops_the_std_calibration_fitted_to_the_old_one(tmp_path, monkeypatch):
    monkeypatch.setenv("SCORERECON_PRESETS", str(tmp_path / "presets"))
    script = load_benchmark("fast_settings")
    preset = {"start_sigma": 0.05, "samples": 4, "steps": 12, "std_scale": 1.6}
    script.tuning.save_preset("ct-sparse-view", "fast", preset, {"trials": 16, "std_calibration": {}},
                              tmp_path / "presets")
    results = {12: {"psnr": 35.4, "ssim": 0.96}, 48: {"psnr": 35.0, "ssim": 0.95}}
    assert script.keep_best("ct-sparse-view", "steps", preset, results, str(tmp_path / "presets"), "cmd", 2) == 12
    written = json.loads((tmp_path / "presets" / "ct-sparse-view.json").read_text())
    assert written["methods"]["fast"] == preset and "std_calibration" in written["tuned"]["fast"]  # unchanged
    results[48]["psnr"] = 35.6
    assert script.keep_best("ct-sparse-view", "steps", preset, results, str(tmp_path / "presets"), "cmd", 2) == 48
    written = json.loads((tmp_path / "presets" / "ct-sparse-view.json").read_text())
    assert written["methods"]["fast"] == {"start_sigma": 0.05, "samples": 4, "steps": 48}
    assert set(written["tuned"]["fast"]) == {"trials", "steps_choice"}


def test_an_entry_taken_from_the_fallback_task_becomes_the_tasks_own(tmp_path, monkeypatch):
    """ct-many-view runs ct-sparse-view's fast entry until a sweep on its own validation cases
    writes its own: the other settings copied, the 23-view provenance nested under settings_from."""
    monkeypatch.setenv("SCORERECON_PRESETS", str(tmp_path / "presets"))
    script = load_benchmark("fast_settings")
    monkeypatch.setattr(script.tuning, "preset_dirs", lambda: [tmp_path / "presets"])
    sparse = {"eta": 4.0, "samples": 4, "steps": 48, "std_scale": 2.3}
    script.tuning.save_preset("ct-sparse-view", "fast", sparse, {"trials": 20, "std_calibration": {}},
                              tmp_path / "presets")
    preset = script.tuning.load_preset("ct-many-view")["methods"]["fast"]
    assert preset == sparse
    results = {0.5: {"psnr": 51.7, "ssim": 0.996}, 4.0: {"psnr": 47.2, "ssim": 0.992}}
    assert script.keep_best("ct-many-view", "eta", preset, results, str(tmp_path / "presets"), "cmd", 2) == 0.5
    written = json.loads((tmp_path / "presets" / "ct-many-view.json").read_text())
    assert written["methods"]["fast"] == {"eta": 0.5, "samples": 4, "steps": 48}  # std scale dropped
    tuned = written["tuned"]["fast"]
    assert tuned["settings_from"] == {"task": "ct-sparse-view", "tuned": {"trials": 20}}  # its std fit dropped
    assert set(tuned) == {"settings_from", "eta_choice"}
    assert script.tuning.load_preset("ct-sparse-view")["methods"]["fast"] == sparse  # the fallback untouched


def test_a_sweep_of_a_task_and_its_fallback_reads_both_entries_before_writing(tmp_path, monkeypatch):
    """ct-sparse-view is written first; ct-many-view, which borrows its entry, keeps the measured
    η 4.0 and so its std_scale, and nests the record the sweep measured under, not the new one."""
    monkeypatch.setenv("SCORERECON_PRESETS", str(tmp_path / "presets"))
    script = load_benchmark("fast_settings")
    monkeypatch.setattr(script.tuning, "preset_dirs", lambda: [tmp_path / "presets"])
    sparse = {"eta": 4.0, "samples": 4, "steps": 48, "std_scale": 2.3}
    script.tuning.save_preset("ct-sparse-view", "fast", sparse, {"trials": 20}, tmp_path / "presets")
    sweep = {"ct-sparse-view": (dict(sparse), {0.5: {"psnr": 40.0, "ssim": 0.9}, 4.0: {"psnr": 39.0, "ssim": 0.9}}),
             "ct-many-view": (dict(sparse), {0.5: {"psnr": 40.0, "ssim": 0.9}, 4.0: {"psnr": 41.0, "ssim": 0.9}})}
    monkeypatch.setattr(script, "measure", lambda task, *a: (*sweep[task], {}))
    monkeypatch.setattr(script, "table", lambda measured, args: "")
    script.main(["--tasks", "ct-sparse-view,ct-many-view", "--setting", "eta", "--values", "0.5,4",
                 "--write-presets", str(tmp_path / "presets"), "-o", str(tmp_path / "t.md")])
    many = json.loads((tmp_path / "presets" / "ct-many-view.json").read_text())
    assert many["methods"]["fast"]["std_scale"] == 2.3 and many["methods"]["fast"]["eta"] == 4.0
    assert many["tuned"]["fast"]["settings_from"] == {"task": "ct-sparse-view", "tuned": {"trials": 20}}


def test_another_samplers_setting_is_kept_in_its_own_preset_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("SCORERECON_PRESETS", str(tmp_path / "presets"))
    script = load_benchmark("fast_settings")
    fast = {"eta": 0.5, "samples": 4, "steps": 12}
    script.tuning.save_preset("ct-limited-angle", "fast", fast, {"trials": 16}, tmp_path / "presets")
    results = {0.3: {"psnr": 27.0, "ssim": 0.85}, 1.0: {"psnr": 26.5, "ssim": 0.86}}
    kept = script.keep_best("ct-limited-angle", "zeta", {}, results, str(tmp_path / "presets"), "cmd", 1, "dps")
    written = json.loads((tmp_path / "presets" / "ct-limited-angle.json").read_text())
    assert kept == 0.3 and written["methods"] == {"fast": fast, "dps": {"zeta": 0.3}}
    assert written["tuned"]["fast"] == {"trials": 16} and set(written["tuned"]["dps"]) == {"zeta_choice"}


@pytest.mark.parametrize("argv, message", [
    (["--setting", "steps", "--values", "60"], "between 4 and 50"),
    (["--setting", "samples", "--values", "2.5"], "takes comma-separated int values"),
    (["--tasks", "ct-sideways"], "unknown task(s) ct-sideways"),
    (["--method", "dps", "--setting", "steps", "--values", "4"], "--setting steps: dps has zeta"),
    (["--method", "dps", "--setting", "zeta"], "--setting zeta needs --values"),
    (["--method", "dps", "--setting", "zeta", "--values", "20"], "between 0.01 and 10.0"),
    (["--values", "200", "--beyond-budget", "--write-presets", "x"], "leave out --write-presets"),
    (["--quick", "--setting", "eta", "--values", "1", "--write-presets", "x"], "leave out --write-presets"),
    (["--size", "64", "--setting", "eta", "--values", "1", "--write-presets", "x"], "leave out --write-presets"),
    (["--setting", "eta", "--values", "5", "--beyond-budget"], "the fast sampler's --setting steps only"),
    (["--values", "2", "--beyond-budget"], "each steps must be at least 4"),
])
def test_bad_values_are_one_line_errors(capsys, argv, message):
    script = load_benchmark("fast_settings")
    with pytest.raises(SystemExit) as stop:
        script.main(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_steps_beyond_the_budget_are_measured_only_when_asked(tmp_path, monkeypatch):
    script = load_benchmark("fast_settings")
    swept = []
    monkeypatch.setattr(script, "measure", lambda task, setting, values, args: swept.append(values) or ({}, {}, {}))
    monkeypatch.setattr(script, "table", lambda measured, args: "")
    script.main(["--tasks", "ct-sparse-view", "--values", "100,200", "--beyond-budget", "-o", str(tmp_path / "t.md")])
    assert swept == [[100, 200]]


@pytest.mark.parametrize("task, views, message", [
    ("ct-sparse-view", 45, "45 views is a ct-many-view measurement: use that task"),
    ("ct-many-view", 37, "37 views is a ct-sparse-view measurement: use that task"),
    ("mri-single", 45, "mri-single has no number of views: one applies to ct-sparse-view, ct-many-view"),
])
def test_views_that_leave_the_task_are_one_line_errors(task, views, message, monkeypatch):
    script = load_benchmark("fast_settings")
    monkeypatch.setattr(script, "measure", lambda *a: pytest.fail("a sweep ran before the check"))
    with pytest.raises(SystemExit) as stop:
        script.main(["--tasks", f"ct-many-view,{task}", "--views", str(views), "--setting", "eta", "--values", "1"]
                    if task == "ct-sparse-view" else
                    ["--tasks", task, "--views", str(views), "--setting", "eta", "--values", "1"])
    assert str(stop.value.code).startswith(f"fast_settings: {message}")


def test_a_preset_folder_that_cannot_be_written_is_refused_before_the_sweep(tmp_path, monkeypatch):
    script = load_benchmark("fast_settings")
    monkeypatch.setattr(script, "measure", lambda *a: pytest.fail("a sweep ran before the check"))
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(SystemExit) as stop:
        script.main(["--tasks", "ct-sparse-view", "--setting", "eta", "--values", "1",
                     "--write-presets", str(tmp_path / "afile")])
    assert str(stop.value.code).startswith("fast_settings: ") and "is a file" in str(stop.value.code)


def test_views_are_not_written_into_a_preset(capsys):
    script = load_benchmark("fast_settings")
    with pytest.raises(SystemExit) as stop:
        script.main(["--tasks", "ct-many-view", "--views", "90", "--setting", "eta", "--values", "1",
                     "--write-presets", "presets"])
    assert stop.value.code == 2 and "leave out --write-presets" in capsys.readouterr().err


def test_the_table_shows_the_best_classical_method_on_the_same_validation_slices(monkeypatch):
    import argparse
    script = load_benchmark("fast_settings")
    preset = {"start_sigma": 0.5, "samples": 3, "steps": 48}
    monkeypatch.setattr(script, "current_settings", lambda args, task: preset)  # not the shipped preset's K
    results = {0.25: {"psnr": 26.1, "ssim": 0.85, "seconds": 70.0}, 0.5: {"psnr": 26.9, "ssim": 0.86, "seconds": 71.0}}
    classical = {"method": "cs-tv", "psnr": 23.24, "ssim": 0.8, "slices": ["ch2.nii.gz:axial:90", "ch2.nii.gz:sagittal:86"]}
    args = argparse.Namespace(method="fast", setting="start_sigma", slices=2, seed=0, size=None, quick=False, views=None)
    text = script.table({"mri-single": (preset, results, classical)}, args)
    assert "| mri-single | best classical (cs-tv) | — | — | — | 23.24 | 0.8000 | — |" in text
    assert "| mri-single | 0.5 (preset) | 3 | 48 | 144 | 26.90 |" in text
    assert "mri-single: ch2.nii.gz:axial:90, ch2.nii.gz:sagittal:86" in text
    assert "256²;" in text
    args.views = 90
    assert "256², simulated with 90 views of 180 (not the task's own);" in script.table(
        {"mri-single": (preset, results, classical)}, args)


def test_a_sweep_of_a_setting_without_a_preset_marks_the_methods_default():
    """DPS has no preset at 120°: the value measured beside the candidates is its default ζ = 1,
    and the table runs the prior's N steps (—), or 4 under --quick."""
    import argparse
    script = load_benchmark("fast_settings")
    results = {0.3: {"psnr": 23.25, "ssim": 0.64, "seconds": 624.0}, 1.0: {"psnr": 31.03, "ssim": 0.89, "seconds": 690.0}}
    classical = {"method": "tv", "psnr": 31.64, "ssim": 0.92, "slices": ["lung1:axial:24"]}
    args = argparse.Namespace(method="dps", setting="zeta", slices=1, seed=0, size=None, quick=False, views=None)
    text = script.table({"ct-limited-angle": ({}, results, classical)}, args)
    assert text.startswith("# DPS: zeta per task")
    assert "| ct-limited-angle | 1.0 (default) | 1 | — | — | 31.03 |" in text
    assert "| ct-limited-angle | 0.3 | 1 | — | — | 23.25 |" in text
    args.quick = True
    assert "| ct-limited-angle | 1.0 (default) | 1 | 4 | 4 | 31.03 |" in script.table(
        {"ct-limited-angle": ({}, results, classical)}, args)
