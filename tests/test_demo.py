"""``scorerecon demo`` end to end with the shipped head-ct prior (few steps to stay quick)."""

import json

import pytest

from scorerecon.cli import main


def test_demo_writes_the_figure_and_the_metrics_of_every_method(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--steps", "2", "--samples", "2"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    methods = metrics["methods"]
    assert list(methods) == ["fbp", "tv", "fast"]
    assert methods["fast"]["nfe"] == 2 and methods["fast"]["samples"] == 2
    assert 0 < methods["fast"]["within_1std"] <= methods["fast"]["within_2std"] <= 1  # the std map's coverage
    assert "within_1std" not in methods["tv"]
    assert methods["tv"]["psnr"] > methods["fbp"]["psnr"] + 5  # measured 33.8 vs 23.4 dB
    assert (out / "demo.png").stat().st_size > 10_000
    assert sorted(p.name for p in out.iterdir()) == ["demo.png", "metrics.json"]


def test_demo_refuses_a_bad_step_count(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["demo", "-o", str(tmp_path / "demo"), "--steps", "0"])
    assert info.value.code == 2 and "positive integer" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


def test_a_demo_that_fails_in_its_work_leaves_no_folder(tmp_path, monkeypatch):
    import scorerecon.evaluation.demo as demo

    def fails(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(demo, "reconstruct", fails)
    with pytest.raises(KeyboardInterrupt):
        demo.run_demo(tmp_path / "demo")
    assert not (tmp_path / "demo").exists()


def test_the_demo_counts_the_std_maps_coverage_on_the_unclipped_image_as_the_benchmarks_do():
    """Air reconstructed 100 HU below the window's floor with a std of 10 HU is not covered:
    clipping the image to the window first (before session 58) made its error 0, covered."""
    from types import SimpleNamespace

    import numpy as np

    from scorerecon.data.intensity import hu_to_unit
    from scorerecon.evaluation.demo import error_and_std_panels
    truth = np.full((8, 8), -1000.0, np.float32)
    image = np.full((8, 8), -1100.0, np.float32)
    result = SimpleNamespace(image=image, unit_image=hu_to_unit(image), std=np.full((8, 8), 10.0, np.float32))
    metrics = {}
    panels = error_and_std_panels("fast", result, SimpleNamespace(truth=truth), np.clip(hu_to_unit(truth), 0, 1),
                                  metrics)
    assert metrics["within_1std"] == 0.0 and metrics["within_2std"] == 0.0
    assert len(panels) == 2 and "|error| ≤ std: 0%" in panels[1][0]
