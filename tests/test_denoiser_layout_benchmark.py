"""benchmarks/denoiser_layout.py: both layouts give the same denoised images and reconstructions,
and the tables say so."""

import os

import pytest
import torch

from conftest import load_benchmark


def test_the_two_layouts_agree_per_call_and_per_reconstruction(tmp_path, monkeypatch):
    monkeypatch.delenv("SCORERECON_LAYOUT", raising=False)
    bench = load_benchmark("denoiser_layout")
    out = tmp_path / "layout.md"
    threads = torch.get_num_threads()
    try:
        bench.main(["--priors", "head-ct", "--times", "0.1,0.6", "--batch", "2", "--size", "64", "--repeats", "1",
                    "--reconstruct", "mri-8x-equispaced", "--steps", "2", "-o", str(out)])
    finally:
        torch.set_num_threads(threads)
    text = out.read_text()
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| head-ct |")]
    assert [row[1] for row in rows] == ["0.1", "0.6"]
    assert all(float(row[5].rstrip(" |")) < 1e-3 for row in rows)  # same arithmetic, other order of the sums
    [row] = [line.split(" | ") for line in text.splitlines() if line.startswith("| mri-8x-equispaced |")]
    assert row[1] == "mri-brain-0" and row[2].startswith("2 × ")
    assert len(row[3].split("(")[1].split(",")) == 2 and len(row[4].split("(")[1].split(",")) == 2  # A B B A
    nchw, last = (float(v) for v in row[6].split(" / "))
    assert abs(nchw - last) < 0.01 and float(row[7].rstrip(" |")) < 1e-2
    assert "SCORERECON_LAYOUT" not in os.environ


def test_layout_sets_the_environment_a_user_would_and_restores_it(monkeypatch):
    bench = load_benchmark("denoiser_layout")
    monkeypatch.setenv("SCORERECON_LAYOUT", "default")
    with bench.layout("channels_last"):
        assert os.environ["SCORERECON_LAYOUT"] == "channels_last"
    assert os.environ["SCORERECON_LAYOUT"] == "default"
    monkeypatch.delenv("SCORERECON_LAYOUT")
    with bench.layout("NCHW"):
        assert os.environ["SCORERECON_LAYOUT"] == "default"
    assert "SCORERECON_LAYOUT" not in os.environ


def test_an_unknown_task_is_one_line(capsys):
    bench = load_benchmark("denoiser_layout")
    with pytest.raises(SystemExit) as stop:
        bench.main(["--reconstruct", "ct-everything"])
    assert stop.value.code == 2 and "unknown task 'ct-everything'" in capsys.readouterr().err


def test_a_prior_the_switch_cannot_move_is_refused_not_timed_twice():
    bench = load_benchmark("denoiser_layout")
    with pytest.raises(SystemExit, match="no network on the CPU"):
        bench.check_switchable(object(), "a prior without a network")
