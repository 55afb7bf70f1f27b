"""Expert priors by noise level: routing, the switch rule, the Tweedie error, files and the CLI."""

import json

import numpy as np
import pytest
import torch

from scorerecon.cli import main
from scorerecon.errors import UserError
from scorerecon.priors.analytic import GaussianPrior
from scorerecon.priors.config import resolve_config
from scorerecon.priors.experts import (NoiseLevelExperts, choose_switch, read_experts_file, tweedie_errors,
                                      write_experts_file)
from scorerecon.priors.registry import load_prior, prior_digest
from scorerecon.priors.sde import VESDE, VPSDE
from scorerecon.priors.training import train

SDE = VESDE(sigma_min=0.01, sigma_max=10.0)


def _gaussian(mean: float, scale: float, sde=SDE) -> GaussianPrior:
    return GaussianPrior(torch.full((4,), mean), scale * torch.eye(4), sde, image_shape=(1, 2, 2))


def test_each_sample_gets_the_score_of_its_noise_levels_expert():
    low, high = _gaussian(0.2, 0.1), _gaussian(0.7, 0.3)
    experts = NoiseLevelExperts(low, high, switch_sigma=0.5)
    x = torch.randn(4, 1, 2, 2, dtype=torch.float64)
    t = torch.tensor([SDE.time_of_noise(s) for s in (0.05, 0.4, 0.6, 5.0)])
    expected = torch.cat([low.score(x[:2], t[:2]), high.score(x[2:], t[2:])])
    assert torch.allclose(experts.score(x, t), expected)
    assert torch.allclose(experts.denoise(x, t[1]), low.denoise(x, t[1]))
    assert torch.allclose(experts.denoise(x, t[3]), high.denoise(x, t[3]))


def test_experts_must_share_sde_and_channels():
    with pytest.raises(UserError, match="share one SDE"):
        NoiseLevelExperts(_gaussian(0.2, 0.1), _gaussian(0.2, 0.1, VPSDE()), 0.5)
    with pytest.raises(UserError, match="positive"):
        NoiseLevelExperts(_gaussian(0.2, 0.1), _gaussian(0.2, 0.1), 0.0)


def test_experts_name_the_datasets_of_all_their_members():
    """A low expert trained on more data than the high one (mri-low on brain-mri + clinical-brain-mri
    under brain-mri-coarse on brain-mri) makes an experts prior trained on both."""
    low, high = _gaussian(0.2, 0.1), _gaussian(0.7, 0.3)
    low.metadata.update(dataset="brain-mri+clinical-brain-mri", modality="mri")
    high.metadata.update(dataset="brain-mri", modality="mri")
    experts = NoiseLevelExperts(low, high, switch_sigma=0.5)
    assert experts.metadata["dataset"] == "brain-mri+clinical-brain-mri" and experts.metadata["modality"] == "mri"
    chain = NoiseLevelExperts(experts, _gaussian(0.5, 0.2), 2.0)   # a third member that names no dataset
    assert chain.metadata["dataset"] == "brain-mri+clinical-brain-mri"


def test_tweedie_error_of_an_exact_gaussian_prior_is_its_posterior_variance():
    """For x0 ~ N(m, λ I) and y = x0 + σ z, E|E[x0|y] − x0|² per pixel = λσ² / (λ + σ²)."""
    prior, lam = _gaussian(0.5, 0.04), 0.04
    images = prior.sample(4000, torch.Generator().manual_seed(0))[:, 0].numpy()
    sigmas = [0.02, 0.2, 2.0]
    measured = tweedie_errors(prior, images, sigmas, batch=1000)
    exact = [lam * s ** 2 / (lam + s ** 2) for s in sigmas]
    assert np.allclose(measured, exact, rtol=0.05)


def test_switch_minimises_the_summed_log_error():
    sigmas = [0.01, 0.1, 1.0, 10.0]
    assert choose_switch(sigmas, [1, 2, 9, 9], [3, 3, 3, 3]) == pytest.approx(np.sqrt(0.1))
    assert choose_switch(sigmas, [1, 1, 1, 1], [3, 3, 3, 3]) == 20.0  # low everywhere
    assert choose_switch(sigmas, [5, 5, 5, 5], [3, 3, 3, 3]) == 0.005  # high everywhere


def _tiny_config(name: str, data, out, **training) -> dict:
    """One training step of a tiny U-Net on 8² images."""
    return resolve_config({"name": name, "data": {"path": str(data), "crop": 8, "image_size": 8},
                           "network": {"nf": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "attention_levels": []},
                           "training": {"steps": 1, "batch_size": 2, **training}, "output": {"dir": str(out)}})


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """A prepared 'brain-mri' dataset of 8² noise and two tiny priors trained on it."""
    root = tmp_path_factory.mktemp("experts")
    rng = np.random.default_rng(0)
    data = root / "data" / "brain-mri"
    data.mkdir(parents=True)
    for split in ("train", "val"):
        np.save(data / f"{split}.npy", rng.uniform(0, 1, (6, 8, 8)).astype(np.float32))
    files = []
    for seed in (0, 1, 2):
        files.append(str(train(_tiny_config(f"mini{seed}", data / "train.npy", root / f"run{seed}", seed=seed),
                               progress=False)))
    return root, files


def test_experts_command_writes_a_file_that_loads_anywhere(tiny_data, monkeypatch, capsys):
    root, (low, high, _) = tiny_data
    monkeypatch.setenv("SCORERECON_DATA", str(root / "data"))
    out = root / "out" / "mini.json"
    out.parent.mkdir()
    assert main(["experts", "--low", low, "--high", high, "--dataset", "brain-mri", "--sigmas", "5",
                 "-o", str(out)]) == 0
    assert "switch σ" in capsys.readouterr().out
    body = json.loads(out.read_text())
    assert body["members"] == ["../run0/mini0.safetensors", "../run1/mini1.safetensors"]
    assert len(body["selections"][0]["low_mse"]) == 5
    experts = load_prior(out)
    assert isinstance(experts, NoiseLevelExperts) and experts.switch_sigmas == body["switch_sigmas"]
    x = torch.rand(2, 1, 8, 8)
    member = load_prior(low) if body["switch_sigmas"][0] >= 0.01 else load_prior(high)
    with torch.no_grad():
        assert torch.allclose(experts.denoise(x, 1e-5), member.denoise(x, 1e-5))
    assert experts.size_multiple == 2
    assert main(["sample", "--prior", str(out), "-n", "2", "-o", str(root / "s.npy"), "--steps", "2"]) == 0


def test_an_experts_prior_as_low_is_extended_by_a_third_network(tiny_data, monkeypatch):
    """`scorerecon experts --low PAIR.json --high THIRD` writes a chain of three whose new switch
    lies above the pair's; a version-1 file (one switch) still loads."""
    root, (low, high, third) = tiny_data
    monkeypatch.setenv("SCORERECON_DATA", str(root / "data"))
    pair, chain = root / "chain" / "pair.json", root / "chain" / "deeper" / "three.json"
    chain.parent.mkdir(parents=True)
    pair.write_text(json.dumps({"format": "scorerecon-experts", "version": "1", "low": low, "high": high,
                                "switch_sigma": 0.05}))
    assert main(["experts", "--low", str(pair), "--high", third, "--dataset", "brain-mri", "--sigmas", "4",
                 "-o", str(chain)]) == 0
    body = json.loads(chain.read_text())
    assert body["members"] == ["../../run0/mini0.safetensors", "../../run1/mini1.safetensors",
                               "../../run2/mini2.safetensors"]
    assert body["switch_sigmas"][0] == 0.05 < body["switch_sigmas"][1]
    assert body["selections"][0] == {}   # the pair's file recorded no measurement
    assert min(body["selections"][1]["sigmas"]) > 0.05 and body["selections"][1]["low"] == "../pair.json"
    experts = load_prior(chain)
    assert [m.metadata["name"] for m in experts.members] == ["mini0", "mini1", "mini2"]
    x = torch.rand(3, 1, 8, 8)
    sigmas = [0.02, np.sqrt(0.05 * body["switch_sigmas"][1]), 2 * body["switch_sigmas"][1]]
    t = torch.tensor([experts.sde.time_of_noise(s) for s in sigmas])
    with torch.no_grad():
        expected = torch.cat([m.denoise(x[i:i + 1], t[i:i + 1]) for i, m in enumerate(experts.members)])
        assert torch.allclose(experts.denoise(x, t), expected)
    with pytest.raises(UserError, match="must lie above"):
        NoiseLevelExperts(experts, experts.members[0], 0.01)
    with pytest.raises(UserError, match="single-network"):
        NoiseLevelExperts(experts.members[0], experts, 100.0)


def test_prior_digest_follows_the_weights_and_switches_not_the_name_or_metadata(tiny_data, tmp_path):
    """prior_digest: a copied weight file has the same digest, other weights another; an experts
    file's digest changes with a member's weights or a switch, not with its descriptive metadata."""
    import shutil
    _, (low, high, third) = tiny_data
    copy = tmp_path / "renamed.safetensors"
    shutil.copy(low, copy)
    assert prior_digest(copy) == prior_digest(low) != prior_digest(high)

    def pair(name, members, switch, metadata):
        path = tmp_path / name
        path.write_text(json.dumps({"format": "scorerecon-experts", "version": "2", "members": members,
                                    "switch_sigmas": [switch], "metadata": metadata}))
        return prior_digest(path)

    reference = pair("a.json", [low, high], 0.5, {"name": "a"})
    assert pair("b.json", [str(copy), high], 0.5, {"name": "b", "dataset": "other"}) == reference
    assert pair("c.json", [low, third], 0.5, {"name": "a"}) != reference
    assert pair("d.json", [low, high], 0.6, {"name": "a"}) != reference
    assert len(prior_digest("brain-mri")) == 16
    with pytest.raises(UserError, match="neither a shipped prior"):
        prior_digest(tmp_path / "missing.safetensors")


def test_bad_experts_files_give_one_clear_error(tiny_data, tmp_path):
    _, (low, *_) = tiny_data
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(UserError, match="not a readable scorerecon experts file"):
        read_experts_file(broken)
    nested = tmp_path / "nested.json"
    nested.write_text(json.dumps({"format": "scorerecon-experts", "low": str(broken), "high": low,
                                  "switch_sigma": 1.0}))
    with pytest.raises(UserError, match="itself an experts file"):
        load_prior(nested)
    with pytest.raises(UserError, match="itself an experts file"):
        prior_digest(nested)  # was a RecursionError where the file lists itself
    for body, message in (([], "missing scorerecon-experts header"),
                          ({"format": "scorerecon-experts", "version": "9", "members": [low, low],
                            "switch_sigmas": [1.0]}, "layout version '9', and this scorerecon reads 1 to 2: "
                                                     "upgrade scorerecon$"),
                          ({"format": "scorerecon-experts", "members": [low, low], "switch_sigmas": [1.0],
                            "metadata": "abc"}, "metadata is not a table")):
        broken.write_text(json.dumps(body))
        for load in (load_prior, prior_digest):
            with pytest.raises(UserError, match=message):
                load(broken)
    with pytest.raises(UserError, match="need 2 increasing switches"):
        write_experts_file(tmp_path / "equal.json", [low, low, low], [1.0, 1.0])
    assert not (tmp_path / "equal.json").exists()
    assert main(["experts", "--low", low, "--high", str(tmp_path / "none.safetensors"), "--dataset",
                 "brain-mri", "-o", str(tmp_path / "x.json")]) == 2
    assert not (tmp_path / "x.json").exists()


def test_training_cannot_start_from_an_experts_prior(tiny_data, tmp_path):
    root, (low, high, _) = tiny_data
    experts = tmp_path / "pair.json"
    experts.write_text(json.dumps({"format": "scorerecon-experts", "low": low, "high": high, "switch_sigma": 1.0}))
    cfg = _tiny_config("mini", root / "data" / "brain-mri" / "train.npy", tmp_path / "run", init=str(experts))
    with pytest.raises(UserError, match="experts prior"):
        train(cfg, progress=False)
