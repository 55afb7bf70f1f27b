"""benchmarks/prior_noise_levels.py: one prior's denoiser rows, whatever the SDE it is written in."""

import numpy as np
import torch

from conftest import load_benchmark
from scorerecon.priors.analytic import GaussianPrior
from scorerecon.priors.sde import VESDE, VPSDE


def test_the_rows_of_one_gaussian_prior_agree_under_a_ve_and_a_vp_sde():
    """The exact denoiser of a Gaussian at noise σ does not depend on the SDE: the VP prior's
    rows equal the VE prior's (before, its state was not scaled by α(t), so they differed)."""
    script = load_benchmark("prior_noise_levels")
    side = 8
    idx = torch.arange(side * side, dtype=torch.float64)
    cov = 0.02 * torch.exp(-torch.abs(idx[:, None] - idx[None, :]) / 4) + 1e-3 * torch.eye(side * side)
    mean = torch.full((side * side,), 0.4)
    clean = np.random.default_rng(0).multivariate_normal(mean.numpy(), cov.numpy()).reshape(side, side)
    rows = [script.score_rows(GaussianPrior(mean, cov, sde, image_shape=(1, side, side)), clean.astype(np.float32))
            for sde in (VESDE(0.01, 100.0), VPSDE())]
    assert rows[0] == rows[1]
