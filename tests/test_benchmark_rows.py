"""The score-methods benchmark's resumable rows (``--rows``): reused only under the same key."""

import json
from pathlib import Path

import pytest

from scorerecon.solvers.tuning import load_preset

from conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("score_methods")


def _quick(bench, rows: Path, out: Path, capsys) -> tuple[str, str]:
    bench.main(["--quick", "--tasks", "ct-sparse-view", "--methods", "fast", "--rows", str(rows),
                "-o", str(out)])
    return out.read_text(), capsys.readouterr().out


def test_rows_are_stored_reused_and_remeasured_when_the_preset_or_the_weights_change(bench, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SCORERECON_PRESETS", str(tmp_path / "presets"))
    rows = tmp_path / "rows"
    first, log = _quick(bench, rows, tmp_path / "a.md", capsys)
    stored = json.loads((rows / "ct-sparse-view__ct-head-0__fast.json").read_text())
    shipped = load_preset("ct-sparse-view")["methods"]["fast"]  # no preset in SCORERECON_PRESETS
    assert stored["key"]["settings"]["steps"] == shipped["steps"] and "(reused)" not in log
    assert "Rows reused" not in first

    # the same key: the row is read back, not measured, and the table says so
    stored["row"]["psnr"] = 99.0
    (rows / "ct-sparse-view__ct-head-0__fast.json").write_text(json.dumps(stored))
    second, log = _quick(bench, rows, tmp_path / "b.md", capsys)
    assert "(reused)" in log and "| fast | 99.00" in second
    assert "Rows reused from" in second and stored["commit"] in second

    # a preset that changes the method's settings changes the key: measured again
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "ct-sparse-view.json").write_text(json.dumps({"methods": {"fast": {"eta": 0.5}}}))
    third, log = _quick(bench, rows, tmp_path / "c.md", capsys)
    assert "(reused)" not in log and "| fast | 99.00" not in third
    assert json.loads((rows / "ct-sparse-view__ct-head-0__fast.json").read_text())["key"]["settings"]["eta"] == 0.5

    # the same prior name with other weights (a retrained default) changes the key: measured again
    _, log = _quick(bench, rows, tmp_path / "d.md", capsys)
    assert "(reused)" in log
    monkeypatch.setattr(bench, "prior_digest", lambda prior: "retrained")
    _, log = _quick(bench, rows, tmp_path / "e.md", capsys)
    assert "(reused)" not in log
    assert json.loads((rows / "ct-sparse-view__ct-head-0__fast.json").read_text())["key"]["prior_sha256"] == "retrained"


def test_a_row_is_measured_again_when_the_simulation_changes_under_its_key(bench, tmp_path, monkeypatch, capsys):
    """Every method of a table line must see one measurement: a row stored with its measurement's
    fingerprint is not reused on another (here 30 of 180 views under the task's name); a row
    stored before rows carried one is reused on the key alone."""
    monkeypatch.setenv("SCORERECON_PRESETS", str(tmp_path / "presets"))
    rows = tmp_path / "rows"
    _quick(bench, rows, tmp_path / "a.md", capsys)
    path = rows / "ct-sparse-view__ct-head-0__fast.json"
    assert len(json.loads(path.read_text())["measurement"]) == 12
    assert "(reused)" in _quick(bench, rows, tmp_path / "b.md", capsys)[1]
    monkeypatch.setitem(bench.TASKS, "ct-sparse-view", ("ct", dict(views=30, full_views=180)))
    assert "(reused)" not in _quick(bench, rows, tmp_path / "c.md", capsys)[1]
    legacy = json.loads(path.read_text())
    del legacy["measurement"]
    path.write_text(json.dumps(legacy))
    monkeypatch.setitem(bench.TASKS, "ct-sparse-view", ("ct", dict(views=23, full_views=180)))
    assert "(reused)" in _quick(bench, rows, tmp_path / "d.md", capsys)[1]


def test_the_fingerprint_tells_the_metal_simulations_apart_and_not_rounding():
    """Session 56's water pre-correction moved the metal sinogram by 0.0004 on average: another
    measurement; rounding of the float32 data (another host's arithmetic) is not."""
    import numpy as np

    from scorerecon.simulate import ct as ct_simulation
    bench = load_benchmark("score_methods")
    air = load_benchmark("metal_air_correction")
    image, pixel = bench.evaluation_images("ct", 64, 1, None)[0][1:]
    now = air.metal_case(image, pixel, ct_simulation.water_precorrection)
    clamped = air.metal_case(image, pixel, air.clamped_precorrection)
    fingerprint = bench.measurement_fingerprint(now)
    assert not bench.same_measurement(bench.measurement_fingerprint(clamped), fingerprint)
    now.data = np.nextafter(now.data, np.inf).astype(np.float32)  # one unit in the last place, everywhere
    assert bench.same_measurement(bench.measurement_fingerprint(now), fingerprint)


def test_a_method_with_a_samples_suffix_is_its_own_column_with_its_own_k(bench, tmp_path, monkeypatch, capsys):
    """fast-k3 runs the fast sampler with K = 3 beside fast at the run's K (2 under --quick), each
    stored under its own name and key."""
    monkeypatch.setenv("SCORERECON_PRESETS", str(tmp_path / "presets"))
    rows, out = tmp_path / "rows", tmp_path / "t.md"
    bench.main(["--quick", "--tasks", "ct-sparse-view", "--methods", "fast,fast-k3", "--rows", str(rows),
                "-o", str(out)])
    plain = json.loads((rows / "ct-sparse-view__ct-head-0__fast.json").read_text())
    three = json.loads((rows / "ct-sparse-view__ct-head-0__fast-k3.json").read_text())
    assert (plain["row"]["samples"], three["row"]["samples"]) == (2, 3)
    assert three["key"]["options"]["samples"] == 3 and three["key"]["settings"] == plain["key"]["settings"]
    table = out.read_text()
    assert "| fast | fast-k3 |" in table and "| ct-sparse-view | fast-k3 |" in table
    assert [bench.split_k_suffix(m) for m in ("song-k4", "score-k12", "song", "song-k", "song-k0", "-k4")] == [
        ("song", 4), ("score", 12), ("song", None), ("song-k", None), ("song-k0", None), ("-k4", None)]
    assert bench.sampler("score-k4") == "fast"
    # the fast table compares the fast sampler at its preset K, not fast-kK, with the others
    stats = {"psnr": (30.0, 0.0), "psnr_slices": [30.0]}
    row = {"best classical (tv)": stats, "fast-k3": {**stats, "psnr": (33.0, 0.0), "psnr_slices": [33.0]},
           "fast": stats, "song": {**stats, "psnr": (31.0, 0.0), "psnr_slices": [31.0]}}
    assert "| -1.00 (song) | -1.00 |" in bench.fast_table({"ct-sparse-view": row})
    with pytest.raises(SystemExit) as stop:
        bench.main(["--quick", "--methods", "fast,song-k0", "-o", str(out)])
    assert stop.value.code == 2 and "unknown score-based method(s) song-k0" in capsys.readouterr().err


def test_a_damaged_row_file_is_measured_again(bench, tmp_path):
    key = {"task": "t", "slice": "s", "method": "m"}
    bench.store_row(tmp_path, key, {"psnr": 1.0})
    assert bench.cached_row(tmp_path, key)["row"] == {"psnr": 1.0}
    (tmp_path / "t__s__m.json").write_text("{not json")
    assert bench.cached_row(tmp_path, key) is None
    assert bench.cached_row(tmp_path, {**key, "slice": "other"}) is None


def test_stored_only_tables_the_stored_rows_and_lists_the_missing(bench, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SCORERECON_PRESETS", str(tmp_path / "presets"))
    rows, out = tmp_path / "rows", tmp_path / "t.md"
    bench.main(["--quick", "--tasks", "ct-sparse-view", "--methods", "fast", "--rows", str(rows),
                "--stored-only", "-o", str(out)])
    table = out.read_text()
    assert "| fast |" not in table and "best classical" in table
    assert "Not measured yet" in table and "ct-sparse-view ct-head-0 fast" in table
    assert not rows.exists(), "--stored-only must measure (and store) nothing"
    with pytest.raises(SystemExit) as stop:
        bench.main(["--quick", "--stored-only", "-o", str(out)])
    assert stop.value.code == 2 and "--stored-only needs --rows" in capsys.readouterr().err


def test_stored_only_leaves_out_a_method_stored_for_some_of_the_slices(bench, tmp_path, monkeypatch, capsys):
    """A mean over one slice beside a classical mean over two would not compare: left out, said."""
    monkeypatch.setenv("SCORERECON_PRESETS", str(tmp_path / "presets"))
    rows, out = tmp_path / "rows", tmp_path / "t.md"
    two_slices = ["--quick", "--slices", "2", "--tasks", "ct-sparse-view", "--methods", "fast", "--rows", str(rows)]
    bench.main([*two_slices, "-o", str(out)])
    assert "| ct-sparse-view | fast |" in out.read_text()
    (rows / "ct-sparse-view__ct-head-1__fast.json").unlink()
    bench.main([*two_slices, "--stored-only", "-o", str(out)])
    table = out.read_text()
    assert "| ct-sparse-view | fast |" not in table and "best classical" in table
    assert "ct-sparse-view: fast (stored for some of the slices only)" in table
    assert "ct-sparse-view ct-head-1 fast" in table  # and listed among the missing rows


def test_slices_from_a_prepared_dataset(bench, tmp_path, monkeypatch, capsys):
    """--dataset-slices NAME:SPLIT measures slices of a prepared dataset, named by index."""
    import numpy as np
    folder = tmp_path / "data" / "clinical-brain-mri"
    folder.mkdir(parents=True)
    y, x = np.mgrid[:64, :64]
    images = np.stack([np.where(np.hypot(y - 32, x - 32) < r, 1.0, 0.1) for r in (20, 24, 28)]).astype(np.float32)
    np.save(folder / "val.npy", images)
    slices = [{"source": f"brain2:axial:{k}", "spacing_mm": [0.78, 0.78]} for k in range(3)]
    (folder / "meta.json").write_text(json.dumps({"modality": "mr", "slices": {"val": slices}}))
    monkeypatch.setenv("SCORERECON_DATA", str(tmp_path / "data"))
    bench.main(["--quick", "--tasks", "mri-8x-equispaced", "--methods", "fast",  # --quick: 1 slice
                "--dataset-slices", "clinical-brain-mri:val", "--rows", str(tmp_path / "rows"),
                "-o", str(tmp_path / "t.md")])
    assert [p.name for p in (tmp_path / "rows").iterdir()] == ["mri-8x-equispaced__clinical-brain-mri-val-0__fast.json"]
    assert "slices of clinical-brain-mri:val for MRI" in (tmp_path / "t.md").read_text()
    with pytest.raises(SystemExit):
        bench.main(["--dataset-slices", "clinical-brain-mri"])
    assert "write NAME:SPLIT" in capsys.readouterr().err


def test_the_side_by_side_table_bolds_the_best_psnr_and_marks_the_unmeasured(bench):
    def stats(psnr, ssim, nfe, samples, seconds):
        return {"psnr": (psnr, 0.0), "ssim": (ssim, 0.0), "nfe": (nfe, 0.0), "samples": (samples, 0.0),
                "seconds": (seconds, 0.0)}

    results = {"ct-sparse-view": {"best classical (tv)": stats(33.84, 0.949, 0, 0, 0.6),
                                  "fast": stats(35.99, 0.965, 48, 4, 51.3),
                                  "song": stats(35.97, 0.958, 2001, 1, 670.6)},
               "mri-8x-poisson": {"best classical (cs-tv)": stats(41.45, 0.976, 0, 0, 0.9),
                                  "dps": stats(46.28, 0.989, 1001, 1, 318.2)}}
    lines = bench.side_by_side_table(results).splitlines()
    assert lines[0] == "| task | best classical | fast | song | dps |"
    assert lines[2] == ("| 23-view CT | 33.84 / 0.949 (tv) | **35.99 / 0.965** (48 × 4, 51) | "
                        "35.97 / 0.958 (2001, 671) | — |")
    assert lines[3] == "| MRI 8× Poisson disc | 41.45 / 0.976 (cs-tv) | — | — | **46.28 / 0.989** (1001, 318) |"

    # a method outside the README's columns gets its own column after them, not dropped
    results["ct-metal"] = {"best classical (tv)": stats(38.0, 0.974, 0, 0, 5.6), "guidance": stats(30.0, 0.9, 1001, 1, 400.0)}
    lines = bench.side_by_side_table(results).splitlines()
    assert lines[0] == "| task | best classical | fast | song | dps | guidance |"
    assert lines[4] == "| metal-artifact removal | **38.00 / 0.974** (tv) | — | — | — | 30.00 / 0.900 (1001, 400) |"
    # NAME-kK columns come last, after every other method, even where they sort before it by name
    results["ct-metal"]["dps-k4"] = stats(31.0, 0.9, 1001, 4, 1400.0)
    assert bench.method_columns(results) == ["fast", "song", "dps", "guidance", "dps-k4"]


def test_the_gains_table_subtracts_unrounded_means(bench):
    """36.2251 − 34.1308 is +2.09, where the rounded means (36.23 − 34.13) would give +2.10."""
    def stats(psnr):
        return {"psnr": (psnr, 0.0), "ssim": (0.9, 0.0), "nfe": (1.0, 0.0), "samples": (1.0, 0.0), "seconds": (1.0, 0.0)}

    results = {"ct-sparse-view": {"best classical (tv)": stats(34.1308), "song": stats(36.2251)},
               "mri-8x-equispaced": {"best classical (cs-tv)": stats(28.7641), "fast": stats(30.0579),
                                     "guidance": stats(26.1347)}}
    lines = bench.gains_table(results).splitlines()
    assert lines[0] == "| task | fast | song | guidance |"
    assert lines[2] == "| 23-view CT | — | +2.09 | — |"
    assert lines[3] == "| MRI 8× equispaced | +1.29 | — | -2.63 |"


def test_the_fast_table_compares_with_the_best_other_sampler_by_mean_and_per_slice(bench):
    """Metal in session 41: guidance (39.591, 41.258) is the best other sampler by its mean, not
    Langevin (39.081, 41.175); fast (39.705, 41.999) is +0.43 over it: +0.11 and +0.74 per slice."""
    def stats(*psnr):
        return {"psnr": (sum(psnr) / len(psnr), 0.0), "psnr_slices": list(psnr)}

    results = {"ct-metal": {"best classical (tv)": stats(38.0, 40.3), "fast": stats(39.705, 41.999),
                            "langevin": stats(39.081, 41.175), "guidance": stats(39.591, 41.258)},
               "ct-sparse-view": {"best classical (tv)": stats(34.13), "song": stats(36.23)}}
    lines = bench.fast_table(results).splitlines()
    assert lines[2:] == ["| metal-artifact removal | +0.43 (guidance) | +0.11, +0.74 |"]  # no fast row: no line
    assert bench.fast_table({"ct-sparse-view": results["ct-sparse-view"]}) == ""
    alias = {name if name != "fast" else "score": row for name, row in results["ct-metal"].items()}
    assert bench.fast_table({"ct-metal": alias}).splitlines()[2:] == lines[2:]  # `score` is the fast sampler


def test_a_difference_under_half_a_hundredth_keeps_its_sign_and_size(bench):
    """Metal in session 46: fast 40.8523 against guidance-k4 40.8561 printed as -0.00; it needs a
    third decimal.  Differences of 0.005 dB or more keep two decimals, zero stays +0.00."""
    assert bench.signed_db(40.8523 - 40.8561) == "-0.004"
    assert bench.signed_db(0.0012) == "+0.001"
    assert bench.signed_db(0.005) == "+0.01"
    assert bench.signed_db(-1.0512) == "-1.05"
    assert bench.signed_db(0.0) == "+0.00"
    row = {"best classical (tv)": {"psnr": (39.15, 0.0), "psnr_slices": [38.0, 40.3]},
           "fast": {"psnr": (40.8523, 0.0), "psnr_slices": [39.71, 42.00]},
           "guidance-k4": {"psnr": (40.8561, 0.0), "psnr_slices": [40.00, 41.72]}}
    assert bench.fast_table({"ct-metal": row}).splitlines()[2] == \
        "| metal-artifact removal | -0.004 (guidance-k4) | -0.29, +0.28 |"


def test_generalisation_rows_are_stored_and_reused_with_the_score_methods_key(tmp_path, monkeypatch):
    """generalisation.py --rows keeps one row per slice and setting; a rerun tables the stored row
    (named with its commit) instead of measuring it again, until the preset that ran it changes."""
    monkeypatch.setenv("SCORERECON_PRESETS", str(tmp_path / "presets"))
    generalisation = load_benchmark("generalisation")
    rows, out = tmp_path / "rows", tmp_path / "g.md"
    generalisation.main(["--quick", "--rows", str(rows), "-o", str(out)])
    names = sorted(path.name for path in rows.iterdir())
    assert names == ["ct-23-views__ct-head-0__fast.json", "ct-8-views__ct-head-0__fast.json",
                     "mri-4x-equispaced__mri-brain-0__fast.json", "mri-8x-equispaced__mri-brain-0__fast.json"]
    assert "reused" not in out.read_text()
    stored = json.loads((rows / "mri-4x-equispaced__mri-brain-0__fast.json").read_text())
    assert stored["key"]["settings"]["samples"] == load_preset("mri-single")["methods"]["fast"]["samples"]
    stored["row"]["psnr"] = 99.0
    (rows / "mri-4x-equispaced__mri-brain-0__fast.json").write_text(json.dumps(stored))
    generalisation.main(["--quick", "--rows", str(rows), "-o", str(out)])
    table = out.read_text()
    assert "| 4 × equispaced | mri-single | 99.00 |" in table
    assert f"mri-4x-equispaced mri-brain-0 ({stored['commit']}" in table

    # a changed mri-single preset: its settings are measured again, the CT rows are still reused
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "mri-single.json").write_text(json.dumps({"methods": {"fast": {"samples": 2}}}))
    generalisation.main(["--quick", "--rows", str(rows), "-o", str(out)])
    table = out.read_text()
    assert "99.00" not in table and "ct-23-views ct-head-0 (" in table and "mri-4x-equispaced" not in table
    assert json.loads((rows / "mri-4x-equispaced__mri-brain-0__fast.json").read_text())["row"]["samples"] == 2
    with pytest.raises(SystemExit) as stop:
        generalisation.main(["--quick", "--method", "fast-k0", "-o", str(out)])
    assert stop.value.code == 2
