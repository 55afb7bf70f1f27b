"""Unconditional samplers on an exact Gaussian prior, a learned Gaussian toy, and the CLI."""

import numpy as np
import pytest
import torch
from PIL import Image

from scorerecon.cli import main
from scorerecon.errors import UserError
from scorerecon.priors.analytic import GaussianPrior
from scorerecon.priors.config import resolve_config
from scorerecon.priors.prior import ScorePrior
from scorerecon.priors.sampling import sample, step_times, time_grid
from scorerecon.priors.sde import VESDE, VPSDE
from scorerecon.priors.training import Trainer, train

MEAN = torch.tensor([0.3, 0.5, 0.6, 0.8], dtype=torch.float64)


def _cov():
    root = torch.tensor([[0.20, 0.00, 0.0, 0.0], [0.10, 0.15, 0.0, 0.0],
                         [0.05, -0.05, 0.1, 0.0], [0.0, 0.1, 0.05, 0.12]], dtype=torch.float64)
    return root @ root.T


def _moments(x):
    flat = x.reshape(x.shape[0], -1).double()
    return flat.mean(0), torch.cov(flat.T)


def test_time_grid():
    sde = VESDE(N=10)
    grid = time_grid(sde, 10)
    assert grid[0] == 1.0 and grid[-1] == pytest.approx(sde.eps) and len(grid) == 11
    assert sum(dt for _, dt in step_times(sde, 10)) == pytest.approx(1.0 - sde.eps, rel=1e-6)


VE = VESDE(0.01, 40.0)  # σ_max ≫ distance of the mean from 0, so p_T ≈ N(0, σ_max² I) (ODE needs it)


@pytest.mark.parametrize("sde,sampler,steps", [(VE, "pc", 200), (VE, "em", 400), (VE, "ode", 100),
                                               (VPSDE(), "pc", 200), (VPSDE(), "ode", 100)],
                         ids=["ve-pc", "ve-em", "ve-ode", "vp-pc", "vp-ode"])
def test_samplers_reproduce_an_exact_gaussian(sde, sampler, steps):
    prior = GaussianPrior(MEAN, _cov(), sde, (1, 2, 2))
    x = sample(prior, 4000, (2, 2), sampler=sampler, steps=steps, snr=0.16, seed=0)
    mean, cov = _moments(x)
    assert torch.allclose(mean, MEAN, atol=0.02)
    assert torch.allclose(cov, _cov(), atol=0.01)


def test_same_seed_same_samples_and_bad_sampler():
    prior = GaussianPrior(MEAN, _cov(), VESDE(0.01, 4.0), (1, 2, 2))
    assert torch.equal(sample(prior, 3, (2, 2), steps=5, seed=7), sample(prior, 3, (2, 2), steps=5, seed=7))
    with pytest.raises(UserError):
        sample(prior, 3, (2, 2), sampler="ddim")
    with pytest.raises(UserError):
        sample(prior, 3, (4, 4))


@pytest.mark.parametrize("kind", ["noise", "edm"])
def test_learned_score_of_a_gaussian_toy_is_close_to_the_exact_score(tmp_path, kind):
    """Train a tiny U-Net by DSM on samples of N(m, C) (2×2 images); compare with the exact score.

    Relative squared error, measured over data seeds 0–3 (the test uses 0): 0.10–0.21 ("noise")
    and 0.06–0.12 ("edm") at t = 0.2 (σ = 0.03, where the score is steepest), 0.01–0.12 at
    t ≥ 0.4; neither 800 steps, lr 2e-3 nor EMA 0.99 brings t = 0.2 reliably under 0.12."""
    sde = VESDE(0.01, 2.0)
    exact = GaussianPrior(MEAN, _cov(), sde, (1, 2, 2))
    data = exact.sample(4096, torch.Generator().manual_seed(0))
    cfg = resolve_config({"data": {"path": "unused", "crop": 2, "flip": False}, "sde": sde.to_dict(),
                          "parameterization": {"type": kind},
                          "network": {"nf": 16, "ch_mult": [1], "num_res_blocks": 1, "attention_levels": []},
                          "training": {"steps": 300, "batch_size": 128, "warmup": 20, "lr": 5e-3, "ema": 0.9}})
    trainer = Trainer(cfg, data.numpy())
    for _ in range(cfg["training"]["steps"]):
        trainer.train_step()
    learned = ScorePrior(trainer.ema, sde, {"channels": 1}, trainer.parameterization)
    gen = torch.Generator().manual_seed(1)
    errors = []
    for t in (0.2, 0.4, 0.6, 0.8):
        xt = data[:512] + sde.beta(t) * torch.randn(data[:512].shape, generator=gen)
        with torch.no_grad():
            diff = learned.score(xt, t) - exact.score(xt, t)
        errors.append(float(diff.pow(2).mean() / exact.score(xt, t).pow(2).mean()))
    assert errors[0] < 0.3 and max(errors[1:]) < 0.16, errors


def test_sample_command_writes_png_and_npy(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "train.npy", rng.uniform(0, 1, (8, 8, 8)).astype(np.float32))
    cfg = resolve_config({"name": "mini", "data": {"path": str(tmp_path / "train.npy"), "crop": 8, "image_size": 8},
                          "network": {"nf": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "attention_levels": []},
                          "training": {"steps": 1, "batch_size": 2}, "output": {"dir": str(tmp_path / "run")}})
    prior_file = str(train(cfg, progress=False))
    assert main(["sample", "--prior", prior_file, "-n", "5", "-o", str(tmp_path / "g.png"), "--steps", "3"]) == 0
    assert Image.open(tmp_path / "g.png").size == (24, 16)
    assert main(["sample", "--prior", prior_file, "-n", "2", "-o", str(tmp_path / "s.npy"), "--steps", "2",
                 "--sampler", "ode", "--size", "16"]) == 0
    assert np.load(tmp_path / "s.npy").shape == (2, 16, 16)
    assert main(["sample", "--prior", prior_file, "-o", str(tmp_path / "s.jpg"), "--steps", "1"]) == 2
    assert main(["sample", "--prior", str(tmp_path / "none.safetensors"), "-o", str(tmp_path / "x.png")]) == 2
