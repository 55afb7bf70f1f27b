"""Training: the loss falls, --resume continues exactly, DDP equals one process, files are safe."""

import csv
import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from scorerecon.cli import main
from scorerecon.errors import UserError
from scorerecon.priors.checkpoint import read_checkpoint
from scorerecon.priors.config import load_config, resolve_config
from scorerecon.priors import registry
from scorerecon.priors.registry import load_prior
from scorerecon.priors.training import Trainer, _prepare_output, batch_indices, max_pairwise_distance, train


def _images(n=16, size=16, seed=0):
    """Discs of random radius, position and brightness: a small structured dataset in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = [(np.hypot(yy - rng.uniform(5, 11), xx - rng.uniform(5, 11)) < rng.uniform(2, 6)) * rng.uniform(0.4, 1)
           for _ in range(n)]
    return np.stack(out).astype(np.float32)


def _config(tmp_path, parameterization="edm", **training):
    tmp_path.mkdir(exist_ok=True)
    np.save(tmp_path / "train.npy", _images())
    opts = dict(steps=6, batch_size=4, warmup=2, checkpoint_every=2, log_every=1, lr=1e-3)
    opts.update(training)
    return resolve_config({
        "name": "tiny", "data": {"path": str(tmp_path / "train.npy"), "crop": 8, "image_size": 16},
        "sde": {"type": "ve", "sigma_min": 0.01, "sigma_max": 8.0},
        "parameterization": {"type": parameterization, "sigma_data": 0.3},
        "network": {"nf": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "attention_levels": [1]},
        "training": opts, "output": {"dir": str(tmp_path / "run")}})


def _log(path):
    with open(path, newline="") as handle:
        return [row for row in csv.DictReader(handle)]


def _zero_output_loss(x0, t, z, sde, sigma_data):
    """Karras eq. 8 with F = 0: D = c_skip x̃, w = 1/c_out² (their Table 1), by hand."""
    sigma = sde.beta(t).reshape(-1, 1, 1, 1)
    x_ve = x0 + sigma * z
    c_skip = sigma_data ** 2 / (sigma ** 2 + sigma_data ** 2)
    c_out = sigma * sigma_data / (sigma ** 2 + sigma_data ** 2).sqrt()
    return float(((c_skip * x_ve - x0) / c_out).pow(2).mean())


@pytest.mark.parametrize("kind", ["noise", "edm"])
def test_loss_falls_on_a_tiny_set(tmp_path, kind):
    cfg = _config(tmp_path, parameterization=kind, steps=60, batch_size=16, warmup=5, lr=2e-3)
    trainer = Trainer(cfg, np.load(tmp_path / "train.npy")[:, None])
    probe = [trainer.batch(10_000 + k) for k in range(4)]  # fixed held-out noise draws

    def probe_loss():
        with torch.no_grad():
            return float(np.mean([trainer.loss(*b) for b in probe]))

    before = probe_loss()   # the network's output layer starts at zero
    if kind == "noise":
        assert before == pytest.approx(1.0, abs=0.05)   # loss = E z² = 1
    else:
        expected = np.mean([_zero_output_loss(*b, trainer.sde, 0.3) for b in probe])
        assert before == pytest.approx(expected, rel=1e-4)
    for _ in range(60):
        trainer.train_step()
    assert probe_loss() < 0.8 * before


def test_resume_continues_exactly(tmp_path):
    train(_config(tmp_path / "a", steps=6), progress=False)
    part = _config(tmp_path / "b", steps=4)
    train(part, progress=False)
    part["training"]["steps"] = 6
    train(part, resume=True, progress=False)
    a, b = _log(tmp_path / "a/run/log.csv"), _log(tmp_path / "b/run/log.csv")
    assert [r["step"] for r in b] == [str(k) for k in range(1, 7)]
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    wa, wb = load_prior(tmp_path / "a/run/tiny.safetensors"), load_prior(tmp_path / "b/run/tiny.safetensors")
    for (ka, va), (kb, vb) in zip(wa.state_dict().items(), wb.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_a_run_killed_between_log_rows_logs_on_resume_what_an_uninterrupted_run_logs(tmp_path, monkeypatch):
    """The losses since the last log row travel with the checkpoint: with a checkpoint every 3
    steps and a row every 2, a kill after step 4 resumes at 3 and the row of step 4 averages
    steps 3 and 4 again, as in the run that was never stopped."""
    train(_config(tmp_path / "a", steps=6, checkpoint_every=3, log_every=2), progress=False)
    cfg = _config(tmp_path / "b", steps=6, checkpoint_every=3, log_every=2)
    step = Trainer.train_step

    def killed_after_step_4(self):
        if self.step == 4:
            raise KeyboardInterrupt
        return step(self)
    monkeypatch.setattr(Trainer, "train_step", killed_after_step_4)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    monkeypatch.setattr(Trainer, "train_step", step)
    train(cfg, resume=True, progress=False)
    a, b = _log(tmp_path / "a/run/log.csv"), _log(tmp_path / "b/run/log.csv")
    assert [(r["step"], r["loss"]) for r in b] == [(r["step"], r["loss"]) for r in a]
    assert [r["step"] for r in a] == ["2", "4", "6"]


def test_checkpoints_rotate_and_survive_corruption(tmp_path):
    cfg = _config(tmp_path, steps=4)
    train(cfg, progress=False)
    run = tmp_path / "run"
    assert read_checkpoint(run / "checkpoint.pt")["step"] == 4
    assert read_checkpoint(run / "checkpoint.prev.pt")["step"] == 2
    state = read_checkpoint(run / "checkpoint.pt")
    assert state["data_position"] == 16 and set(state["rng"]) >= {"torch", "numpy", "python"}
    # the last log row's loss travels with the checkpoint, so a stopped run's export has it
    assert abs(state["prior"]["metadata"]["final_loss"] - float(_log(run / "log.csv")[-1]["loss"])) < 1e-6
    (run / "checkpoint.pt").write_bytes(b"truncated")
    (run / ".checkpoint.k2j4x.tmp").write_bytes(b"the half-written save of a killed run")
    cfg["training"]["steps"] = 5
    train(cfg, resume=True, progress=False)  # falls back to checkpoint.prev.pt (step 2)
    assert not list(run.glob(".checkpoint.*.tmp"))  # the leftover of the kill is gone
    assert [r["step"] for r in _log(run / "log.csv")] == ["1", "2", "3", "4", "5"]
    # the damaged file was set aside, so no save rotated it over the good previous checkpoint
    assert (run / "checkpoint.unreadable.pt").read_bytes() == b"truncated"
    assert [read_checkpoint(run / name)["step"] for name in ("checkpoint.pt", "checkpoint.prev.pt")] == [5, 4]
    os.remove(run / "checkpoint.pt")  # as a kill inside the rotation of earlier versions left it
    cfg["training"]["steps"] = 6
    train(cfg, resume=True, progress=False)  # resumes from checkpoint.prev.pt (step 4), nothing to set aside
    assert read_checkpoint(run / "checkpoint.pt")["step"] == 6
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (run / name).write_bytes(b"garbage")
    with pytest.raises(UserError, match="are both damaged"):
        train(cfg, resume=True, progress=False)
    with pytest.raises(UserError, match="corrupted"):
        load_prior(run / "checkpoint.pt")


def test_a_kill_during_the_rotation_leaves_a_readable_checkpoint(tmp_path, monkeypatch):
    """checkpoint.pt exists at every instant of save_checkpoint: a failure just before the new
    file moves in leaves the old checkpoint under both names, and no temporary files."""
    import scorerecon.priors.checkpoint as checkpoint
    save_checkpoint = checkpoint.save_checkpoint
    save_checkpoint({"format": "scorerecon-prior-checkpoint", "step": 1}, tmp_path)
    save_checkpoint({"format": "scorerecon-prior-checkpoint", "step": 2}, tmp_path)
    real_replace = os.replace

    def killed_before_the_last_move(source, target):
        if str(source).endswith(".tmp") and os.path.basename(target) == "checkpoint.pt":
            raise KeyboardInterrupt
        real_replace(source, target)
    monkeypatch.setattr(checkpoint.os, "replace", killed_before_the_last_move)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"format": "scorerecon-prior-checkpoint", "step": 3}, tmp_path)
    steps = [torch.load(tmp_path / name, weights_only=True)["step"] for name in ("checkpoint.pt", "checkpoint.prev.pt")]
    assert steps == [2, 2] and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.prev.pt", "checkpoint.pt"]


def test_a_prior_file_this_version_cannot_build_is_one_user_error(tmp_path):
    cfg = _config(tmp_path, steps=2)
    exported = train(cfg, progress=False)
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open
    with safe_open(str(exported), framework="pt") as handle:
        header = handle.metadata()
    network, metadata = json.loads(header["network"]), json.loads(header["metadata"])
    for key, broken in (("network", {**network, "groups": 4}), ("network", [1, 2]), ("parameterization", []),
                        ("metadata", "abc"), ("metadata", {**metadata, "downsample": 0}),
                        ("metadata", {**metadata, "channels": 2})):
        save_file(load_file(str(exported)), str(tmp_path / "other.safetensors"),
                  metadata={**header, key: json.dumps(broken)})
        with pytest.raises(UserError, match="describes a prior this scorerecon cannot build"):
            load_prior(tmp_path / "other.safetensors")
    save_file(load_file(str(exported)), str(tmp_path / "newer.safetensors"), metadata={**header, "version": "99"})
    with pytest.raises(UserError, match="layout version '99', and this scorerecon reads version 1: upgrade "
                                        "scorerecon$"):  # one fix, not also 're-download or re-export it'
        load_prior(tmp_path / "newer.safetensors")


def test_resume_refuses_training_data_of_another_shape(tmp_path):
    cfg = _config(tmp_path, steps=2)
    train(cfg, progress=False)
    np.save(tmp_path / "train.npy", _images(n=20))  # the dataset prepared again, with more images
    cfg["training"]["steps"] = 4
    with pytest.raises(UserError, match=r"training data changed since the checkpoint \(16 images"):
        train(cfg, resume=True, progress=False)


def test_a_fresh_run_refuses_a_folder_holding_only_the_previous_checkpoint(tmp_path):
    cfg = _config(tmp_path, steps=4)
    train(cfg, progress=False)
    os.remove(tmp_path / "run/checkpoint.pt")
    with pytest.raises(UserError, match="--resume"):
        train(cfg, progress=False)
    assert read_checkpoint(tmp_path / "run/checkpoint.prev.pt")["step"] == 2


def test_resume_refuses_a_changed_config_and_a_fresh_run_refuses_an_old_folder(tmp_path):
    cfg = _config(tmp_path, steps=2)
    train(cfg, progress=False)
    with pytest.raises(UserError, match="--resume"):
        train(cfg, progress=False)
    cfg["network"]["nf"] = 12
    with pytest.raises(UserError, match=r"\[network\]"):
        train(cfg, resume=True, progress=False)
    cfg["network"]["nf"] = 8
    state = read_checkpoint(tmp_path / "run/checkpoint.pt")
    del state["config"]["parameterization"]   # a run started before the table existed
    torch.save(state, tmp_path / "run/checkpoint.pt")
    with pytest.raises(UserError, match=r"\[parameterization\]"):
        train(cfg, resume=True, progress=False)


def test_init_starts_a_new_run_from_a_prior_on_larger_crops_and_refuses_a_mismatch(tmp_path):
    first = load_prior(train(_config(tmp_path / "a", steps=2), progress=False))
    cfg = _config(tmp_path / "b", steps=3, init=str(tmp_path / "a/run/tiny.safetensors"))
    cfg["data"]["crop"] = 16   # stage 2 on whole images
    trainer = Trainer(cfg, np.load(tmp_path / "b/train.npy")[:, None])
    _prepare_output(trainer, tmp_path / "b/run", resume=False)
    for key, value in first.network.state_dict().items():
        assert torch.equal(trainer.network.state_dict()[key], value)
        assert torch.equal(trainer.ema.state_dict()[key], value)
    finetuned = load_prior(train(cfg, progress=False))
    assert finetuned.metadata["init"] == cfg["training"]["init"] and finetuned.metadata["crop"] == 16
    assert not torch.equal(finetuned.network.state_dict()["conv_out.weight"], first.network.state_dict()["conv_out.weight"])
    cfg["network"]["nf"] = 12
    cfg["output"]["dir"] = str(tmp_path / "c")
    with pytest.raises(UserError, match=r"init .*\[network\]"):
        train(cfg, progress=False)


def test_exported_prior_round_trip_and_bad_files(tmp_path, monkeypatch):
    cfg = _config(tmp_path, steps=2)
    path = train(cfg, progress=False)
    prior = load_prior(path)
    assert prior.metadata["crop"] == 8 and prior.metadata["steps"] == 2 and prior.sde.sigma_max == 8.0
    assert prior.parameterization.to_dict() == {"type": "edm", "sigma_data": 0.3}
    state = read_checkpoint(tmp_path / "run/checkpoint.pt")
    assert all(torch.equal(v, state["ema"][k]) for k, v in prior.network.state_dict().items())
    assert prior.metadata["final_loss"] == state["prior"]["metadata"]["final_loss"] > 0
    x = torch.rand(2, 1, 16, 16)
    assert prior.score(x, 0.5).shape == x.shape
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:200])
    with pytest.raises(UserError, match="not a readable"):
        load_prior(bad)
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata()
    header["network"] = json.dumps({**json.loads(header["network"]), "nf": 12})
    save_file(load_file(str(path)), str(bad), metadata=header)
    with pytest.raises(UserError, match="do not match"):
        load_prior(bad)
    old = {k: v for k, v in header.items() if k != "parameterization"} | {"network": json.dumps(cfg["network"])}
    save_file(load_file(str(path)), str(bad), metadata=old)   # written before the option existed
    assert load_prior(bad).parameterization.kind == "noise"
    with monkeypatch.context() as patch:  # an install whose weights are gone
        patch.setattr(registry, "WEIGHTS_DIR", tmp_path / "no-weights")
        with pytest.raises(UserError, match="prior 'head-ct' is not installed"):
            load_prior("head-ct")
    with pytest.raises(UserError, match="neither"):
        load_prior(tmp_path / "missing.safetensors")


def test_config_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[training]\nstepz = 3\n")
    with pytest.raises(UserError, match="stepz"):
        load_config(bad)
    bad.write_text("[training]\nsteps = -1\n")
    with pytest.raises(UserError, match="steps"):
        load_config(bad)
    for table, text, message in [("training", "seed = -1", "seed must be a whole number ≥ 0"),
                                 ("training", "grad_clip = 0", "grad_clip must be a positive finite number"),
                                 ("training", "lr = nan", "lr must be a positive finite number"),
                                 ("training", "grad_clip = inf", "grad_clip must be a positive finite number"),
                                 ("sde", "sigma_max = inf", "sigma_min < sigma_max < inf"),
                                 ("sde", "type = 'vp'\nbeta_max = inf", "beta_min < beta_max < inf"),
                                 ("parameterization", "sigma_data = nan", "sigma_data must be a positive finite"),
                                 ("data", "path = 'x.npy'\ndataset = 'head-ct'",
                                  r"\[data\] path and \[data\] dataset both name the training data"),
                                 ("network", "dropout = 2.0", r"dropout must lie in \[0, 1\)")]:
        bad.write_text(f"[{table}]\n{text}\n")
        with pytest.raises(UserError, match=message):
            load_config(bad)
    bad.write_text("[parameterization]\ntype = 'x0'\n")
    with pytest.raises(UserError, match="parameterization 'x0' is unknown"):
        load_config(bad)
    bad.write_text("[data]\npath = 'nowhere.npy'\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert main(["train", "--config", str(tmp_path / "absent.toml")]) == 2


def test_sigma_range_confines_training_to_an_experts_noise_levels(tmp_path):
    cfg = _config(tmp_path, steps=2, sigma_range=[0.5, 2.0])
    trainer = Trainer(cfg, np.load(tmp_path / "train.npy")[:, None])
    times = torch.cat([trainer.batch(k)[1] for k in range(50)])
    sigmas = trainer.sde.beta(times) / trainer.sde.alpha(times)
    assert sigmas.min() >= 0.5 * (1 - 1e-4) and sigmas.max() <= 2.0 * (1 + 1e-4)
    # VE: σ = σ_min (σ_max/σ_min)^t with t uniform, so log σ is uniform over [log 0.5, log 2]
    assert float(torch.log(sigmas).mean()) == pytest.approx(0.0, abs=0.12)
    prior = load_prior(train(cfg, progress=False))
    assert prior.metadata["sigma_range"] == [0.5, 2.0]
    cfg["training"]["sigma_range"] = [0.5, 4.0]
    with pytest.raises(UserError, match="sigma_range differs"):
        train(cfg, resume=True, progress=False)
    state = read_checkpoint(tmp_path / "run/checkpoint.pt")
    del state["config"]["training"]["sigma_range"]   # a run started before the option existed
    torch.save(state, tmp_path / "run/checkpoint.pt")
    cfg["training"].update(sigma_range=[], steps=3)
    train(cfg, resume=True, progress=False)
    for bad in ([2.0, 0.5], [0.1], ["a", 1.0], [0.0, 1.0]):
        with pytest.raises(UserError, match="sigma_range must be"):
            _config(tmp_path / "bad", sigma_range=bad)
    with pytest.raises(UserError, match="outside the SDE's noise levels"):
        Trainer(_config(tmp_path / "far", sigma_range=[20.0, 40.0]), np.load(tmp_path / "train.npy")[:, None])


def test_data_stream_and_sigma_max_helper():
    first = np.concatenate([batch_indices(k, 6, 10, seed=1) for k in range(5)])
    assert sorted(first[:10]) == list(range(10)) and sorted(first[10:20]) == list(range(10))
    images = np.zeros((3, 4, 4), np.float32)
    images[1] += 1.0
    images[2] += 0.5
    assert max_pairwise_distance(images) == pytest.approx(4.0)


def _free_port() -> int:
    """A TCP port nobody listens on now (the OS picks it), for the DDP rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank, world, cfg, images, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    trainer = Trainer(cfg, images, rank=rank, world_size=world)
    loss = trainer.train_step()
    if rank == 0:
        torch.save({"params": trainer.network.state_dict(), "loss": loss}, out)
    # the barrier: neither rank leaves while the other still works (rank 0 saving the result)
    torch.distributed.barrier()
    # gloo's teardown (destroy_process_group after this barrier) still aborted rank 1 now and then
    # with "terminate called without an active exception" after the step had finished: 3 of 13
    # runs of test_allocator.py + test_training.py, 0 of 25 of this test alone.  The result is
    # saved and both ranks passed the barrier, so the workers leave without C++ destructors
    # (1 failure, not captured, in 35 runs of the two files since).
    os._exit(0)


def test_two_process_ddp_step_equals_one_process_on_the_whole_batch(tmp_path):
    cfg = _config(tmp_path, batch_size=8)
    images = np.load(tmp_path / "train.npy")[:, None]
    port = _free_port()
    mp.spawn(_ddp_worker, args=(2, cfg, images, port, str(tmp_path / "ddp.pt")), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "ddp.pt")
    single = Trainer(cfg, images)
    loss = single.train_step()
    assert ddp["loss"] == pytest.approx(loss, rel=1e-5)
    for key, value in single.network.state_dict().items():
        assert torch.allclose(ddp["params"][key], value, atol=1e-6), key


def test_a_list_of_datasets_trains_on_their_concatenation(tmp_path, monkeypatch):
    from scorerecon.priors.training import load_training_images
    monkeypatch.setenv("SCORERECON_DATA", str(tmp_path / "data"))
    for name, seed in (("one", 0), ("two", 1)):
        (tmp_path / "data" / name).mkdir(parents=True)
        np.save(tmp_path / "data" / name / "train.npy", _images(n=5 + seed, seed=seed))
    cfg = _config(tmp_path, steps=2)
    cfg["data"].update(path="", dataset=["one", "two"])
    images = load_training_images(cfg)
    assert images.shape == (11, 1, 16, 16)
    np.testing.assert_array_equal(images[:5, 0], _images(n=5, seed=0))
    np.testing.assert_array_equal(images[5:, 0], _images(n=6, seed=1))
    assert load_prior(train(cfg, progress=False)).metadata["dataset"] == "one+two"
    np.save(tmp_path / "data" / "two" / "train.npy", _images(n=3, size=24))
    with pytest.raises(UserError, match="different sizes"):
        load_training_images(cfg)
    cfg["data"]["dataset"] = ["one", "three"]
    with pytest.raises(UserError, match="scorerecon data prepare three"):
        load_training_images(cfg)
    for bad in ([], ["one", ""], 3):
        with pytest.raises(UserError, match="dataset must be a dataset name or a list"):
            resolve_config({"data": {"dataset": bad}})


def test_repeat_oversamples_a_small_dataset_of_a_list(tmp_path, monkeypatch):
    from scorerecon.priors.training import load_training_images
    monkeypatch.setenv("SCORERECON_DATA", str(tmp_path / "data"))
    for name, n in (("big", 6), ("small", 2)):
        (tmp_path / "data" / name).mkdir(parents=True)
        np.save(tmp_path / "data" / name / "train.npy", _images(n=n, seed=n))
    cfg = _config(tmp_path, steps=2)
    cfg["data"].update(path="", dataset=["big", "small"], repeat=[1, 3])
    images = load_training_images(cfg)
    assert images.shape == (12, 1, 16, 16)
    np.testing.assert_array_equal(images[:6, 0], _images(n=6, seed=6))
    for copy in range(3):
        np.testing.assert_array_equal(images[6 + 2 * copy:8 + 2 * copy, 0], _images(n=2, seed=2))
    for bad in ([1], [1, 0], [1, 2.5], [True, 1], 2):
        with pytest.raises(UserError, match="repeat must be"):
            resolve_config({"data": {"dataset": ["big", "small"], "repeat": bad}})


def test_bf16_on_a_cpu_that_emulates_it_warns_in_one_line(tmp_path, monkeypatch, capsys):
    from scorerecon.priors import training
    assert not training.bf16_is_emulated(torch.device("cuda"))
    monkeypatch.setattr(training, "bf16_is_emulated", lambda device: True)
    train(_config(tmp_path, steps=1, bf16=True), progress=False)
    lines = [line for line in capsys.readouterr().err.splitlines() if "bf16" in line]
    assert len(lines) == 1 and "set [training] bf16 = false" in lines[0]
    train(_config(tmp_path / "fp32", steps=1), progress=False)
    assert "bf16" not in capsys.readouterr().err
