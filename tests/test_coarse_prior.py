"""Coarse-scale priors ([data] downsample = f): trained on f × f block means, applied to full-size
images through the block means of x_t at the noise level σ / f."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.measure import block_reduce

from scorerecon.errors import UserError
from scorerecon.priors.analytic import GaussianPrior
from scorerecon.priors.prior import denoise_through_block_means
from scorerecon.priors.registry import load_prior
from scorerecon.priors.sde import VESDE, VPSDE
from scorerecon.priors.training import average_pool, check_resumable, load_training_images, train
from test_training import _config


def test_block_means_match_scikit_image():
    images = np.random.default_rng(0).random((3, 1, 8, 12)).astype(np.float32)
    assert np.allclose(average_pool(images, 4), block_reduce(images, (1, 1, 4, 4), np.mean), atol=1e-6)
    assert average_pool(images, 1) is images
    with pytest.raises(UserError, match="cannot be downsampled by 3"):
        average_pool(images[..., :10], 3)


@pytest.mark.parametrize("sde", [VESDE(0.01, 20.0), VPSDE()], ids=["ve", "vp"])
def test_block_means_of_the_exact_posterior_mean_are_the_coarse_posterior_mean(sde):
    """x0 with i.i.d. N(m, λ) pixels: the 2 × 2 block means are i.i.d. N(m, λ/4), and the coarse
    prior, fed c P x_t at the noise level σ/2, must return P E[x0 | x_t] exactly (Tweedie of both
    Gaussians); this checks the noise level and the scale c = α(t')/α(t) of the derivation."""
    m, lam, f = 0.3, 0.5, 2
    fine = GaussianPrior(torch.full((64,), m), lam * torch.eye(64), sde, (1, 8, 8))
    coarse = GaussianPrior(torch.full((16,), m), lam / f ** 2 * torch.eye(16), sde, (1, 4, 4))
    seen = []

    def coarse_denoiser(x, t):
        seen.append(coarse.denoise(x, t))
        return seen[-1]

    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    t = torch.tensor([0.2, 0.5, 0.9])
    out = denoise_through_block_means(coarse_denoiser, sde, x.float(), t, f)
    expected = F.avg_pool2d(fine.denoise(x, t), f)
    assert torch.allclose(seen[0].double(), expected, atol=1e-5)
    upsampled = F.interpolate(seen[0], scale_factor=f, mode="bilinear", align_corners=False)
    assert torch.allclose(out, upsampled)  # the coarse estimate, brought back to full size


def test_a_prior_trained_on_block_means_applies_to_full_size_images(tmp_path):
    cfg = _config(tmp_path, steps=2)
    cfg["data"].update(downsample=2, crop=8)
    images = load_training_images(cfg)
    assert np.allclose(images, block_reduce(np.load(tmp_path / "train.npy")[:, None], (1, 1, 2, 2), np.mean))
    prior = load_prior(train(cfg, progress=False))
    assert prior.downsample == 2 and prior.size_multiple == 4
    x = torch.rand(2, 1, 16, 16)
    assert prior.denoise(x, 0.5).shape == x.shape and prior.score(x, torch.tensor([0.3, 0.7])).shape == x.shape
    within_blocks = 0.1 * torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(8, 8)  # zero mean in every block
    assert torch.allclose(prior.denoise(x, 0.5), prior.denoise(x + within_blocks, 0.5), atol=1e-6)
    with pytest.raises(UserError, match="multiple of 2"):
        prior.score(torch.rand(1, 1, 15, 15), 0.5)
    saved = {**cfg, "data": {k: v for k, v in cfg["data"].items() if k != "downsample"}}
    with pytest.raises(UserError, match=r"\[data\]"):   # a checkpoint from before the key meant downsample = 1
        check_resumable(cfg, saved)
    cfg["data"]["downsample"] = 1
    check_resumable(cfg, saved)
