"""``scorerecon train`` with a config it cannot run: one line naming the config entry and the fix,
exit status 2, no traceback, and where the config alone shows it, before any training work."""

import json

import numpy as np
import pytest
import torch

from scorerecon.cli import main
from scorerecon.errors import UserError
from scorerecon.priors import training
from scorerecon.priors.network import ScoreUNet


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


def _config(tmp_path, images=None, **tables) -> str:
    """A tiny training config in tmp_path (data, 1 step on the CPU), its tables updated by ``tables``."""
    np.save(tmp_path / "train.npy", np.random.default_rng(0).random((8, 16, 16), dtype=np.float32)
            if images is None else images)
    cfg = {"data": {"path": str(tmp_path / "train.npy"), "crop": 8, "image_size": 16},
           "network": {"nf": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "attention_levels": []},
           "training": {"steps": 1, "batch_size": 2, "device": "cpu"},
           "output": {"dir": str(tmp_path / "run")}}
    for table, entries in tables.items():
        cfg[table].update(entries)
    text = "".join(f"[{table}]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in entries.items())
                   for table, entries in cfg.items())
    (tmp_path / "tiny.toml").write_text(text)
    return str(tmp_path / "tiny.toml")


@pytest.fixture
def no_training(monkeypatch):
    """Loading the training data fails the test: a refusal must come before it."""
    def loads(cfg):
        raise AssertionError("the training data was loaded before the refusal")
    monkeypatch.setattr(training, "load_training_images", loads)


def test_the_tiny_config_trains_and_exports_into_an_existing_folder(tmp_path, capsys):
    (tmp_path / "priors").mkdir()
    export = tmp_path / "priors" / "p.safetensors"
    assert main(["train", "--no-progress", "--config", _config(tmp_path, output={"export": str(export)})]) == 0
    assert export.is_file()


def test_an_output_dir_that_is_a_file_is_refused_before_any_work(tmp_path, capsys, no_training):
    (tmp_path / "run").write_text("mine")
    assert main(["train", "--config", _config(tmp_path)]) == 2
    assert f"[output] dir: {tmp_path / 'run'} is a file: give a folder for this output" in _one_line(capsys)
    assert (tmp_path / "run").read_text() == "mine"
    assert main(["train", "--config", _config(tmp_path, output={"dir": str(tmp_path / "run" / "sub")})]) == 2
    assert f"[output] dir: cannot make a folder in {tmp_path / 'run'}" in _one_line(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:3"])
def test_cuda_without_cuda_is_refused_before_any_work(tmp_path, capsys, no_training, device):
    assert main(["train", "--config", _config(tmp_path, training={"device": device})]) == 2
    assert 'needs CUDA, which is not available here: set device = "cpu"' in _one_line(capsys)
    assert not (tmp_path / "run").exists()


def test_a_gpu_the_machine_lacks_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("LOCAL_RANK", "2")  # a third torchrun process on a machine of two GPUs
    for device in ("cuda:3", "cuda"):
        with pytest.raises(UserError, match=r"device cuda:[23] does not exist: this machine has 2 GPU\(s\)"):
            training.init_distributed(device)


@pytest.mark.parametrize("export, message", [
    ("nodir/p.safetensors", "[output] export: output folder {tmp}/nodir does not exist: create it"),
    ("p.pt", "[output] export {tmp}/p.pt is not a .safetensors file name: set it to a file name ending in "
             ".safetensors")])
def test_an_export_path_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys, no_training,
                                                                          export, message):
    config = _config(tmp_path, output={"export": str(tmp_path / export)})
    assert main(["train", "--config", config]) == 2
    assert message.format(tmp=tmp_path) in _one_line(capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_training_data_with_nan_or_inf_is_refused_when_loaded(tmp_path, capsys, bad):
    images = np.random.default_rng(0).random((8, 16, 16), dtype=np.float32)
    images[5, 3, 4] = bad
    assert main(["train", "--config", _config(tmp_path, images=images)]) == 2
    line = _one_line(capsys)
    assert f"training data {tmp_path / 'train.npy'} holds NaN or infinite values: clean it" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("tables, message", [
    ({"network": {"ch_mult": [0, 2]}}, "[network] ch_mult must list one whole number ≥ 1 per level"),
    ({"network": {"ch_mult": []}}, "[network] ch_mult must list one whole number ≥ 1 per level"),
    ({"data": {"image_size": -1}}, "[data] image_size must be a positive finite number, got -1"),
    ({"data": {"image_size": 18}, "network": {"ch_mult": [1, 2, 2]}},
     "[data] image_size 18 is not a multiple of 4"),
    ({"data": {"image_size": 12, "downsample": 4}}, "[data] image_size 12 is not a multiple of 8"),
    ({"data": {"crop": 6}, "network": {"ch_mult": [1, 2, 2]}}, "[data] crop 6 is not a multiple of 4"),
    ({"network": {"channels": 0}}, "[network] channels must be a positive finite number, got 0")])
def test_network_and_image_sizes_are_checked_with_the_config(tmp_path, capsys, no_training, tables, message):
    assert main(["train", "--config", _config(tmp_path, **tables)]) == 2
    assert message in _one_line(capsys)


def test_the_network_refuses_a_channel_multiple_below_one():
    with pytest.raises(UserError, match="ch_mult non-empty with entries >= 1"):
        ScoreUNet(nf=8, ch_mult=(0, 2))
