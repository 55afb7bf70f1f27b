"""Score network and prior wrappers: shapes, any size, parameter budget, exact Gaussian prior."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from scorerecon.errors import UserError
from scorerecon.priors.analytic import GaussianPrior
from scorerecon.priors.config import load_config
from scorerecon.priors.network import ScoreUNet, count_parameters
from scorerecon.priors.parameterization import Parameterization
from scorerecon.priors.prior import ScorePrior
from scorerecon.priors.registry import SHIPPED, load_prior
from scorerecon.priors.sde import VESDE, VPSDE
from scorerecon.priors.training import Trainer, start_from_prior

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = dict(nf=16, ch_mult=(1, 2, 2), num_res_blocks=1, attention_levels=(2,))


def _randomise_output(net: ScoreUNet) -> ScoreUNet:
    torch.manual_seed(3)
    torch.nn.init.normal_(net.conv_out.weight, std=0.05)
    return net


@pytest.mark.parametrize("name", ["head-ct", "brain-mri"])
def test_shipped_configs_fit_the_budget(name):
    cfg = load_config(CONFIGS / f"{name}.toml")
    params = count_parameters(ScoreUNet(**cfg["network"]))
    assert 1e6 <= params <= 10e6
    assert 4 * params < 25e6  # the float32 export stays under 25 MB


FINE_TUNING_CONFIGS = sorted(path.name for path in CONFIGS.glob("*.toml")
                             if load_config(path)["training"]["init"] in SHIPPED)


@pytest.mark.parametrize("name", FINE_TUNING_CONFIGS)
def test_shipped_configs_start_from_a_compatible_shipped_prior(name):
    """Each config that continues a shipped network (configs/NAME-low.toml, -coarse, -mid) has its
    [network], [sde] and [parameterization]: start_from_prior raises on any difference."""
    cfg = load_config(CONFIGS / name)
    trainer = Trainer(cfg, np.zeros((1, 1, 64, 64), np.float32))
    start_from_prior(trainer, cfg["training"]["init"])
    prior = load_prior(cfg["training"]["init"])
    for key, value in prior.network.state_dict().items():
        assert torch.equal(trainer.ema.state_dict()[key], value)


def test_any_size_divisible_by_the_downsampling():
    torch.manual_seed(0)
    net = _randomise_output(ScoreUNet(channels=2, **TINY))
    for h, w in [(16, 16), (24, 40), (32, 8)]:
        out = net(torch.randn(2, 2, h, w), torch.tensor([0.1, 2.0]))
        assert out.shape == (2, 2, h, w) and torch.isfinite(out).all()
    with pytest.raises(UserError, match="not divisible by 4"):
        net.check_image_size(18, 16)


def test_initial_output_is_zero_and_conditioning_matters():
    torch.manual_seed(0)
    net = ScoreUNet(**TINY)
    x = torch.randn(1, 1, 16, 16)
    assert torch.all(net(x, torch.tensor([0.0])) == 0)
    _randomise_output(net)
    assert not torch.allclose(net(x, torch.tensor([-3.0])), net(x, torch.tensor([3.0])))


def test_batch_elements_are_independent():
    torch.manual_seed(0)
    net = _randomise_output(ScoreUNet(**TINY)).eval()
    x, c = torch.randn(3, 1, 16, 16), torch.tensor([-1.0, 0.0, 1.0])
    assert torch.allclose(net(x, c)[1:2], net(x[1:2], c[1:2]), atol=1e-5)


def test_score_prior_scales_by_sigma_and_checks_size():
    torch.manual_seed(0)
    net = _randomise_output(ScoreUNet(**TINY))
    sde = VESDE(0.01, 10.0)
    prior = ScorePrior(net, sde, {"channels": 1})
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([0.3, 0.7])
    expected = net(x, torch.log(sde.sigma(t))) / sde.sigma(t)[:, None, None, None]
    assert torch.allclose(prior.score(x, t), expected)
    assert torch.allclose(prior.denoise(x, 0.5), x + sde.sigma(0.5) ** 2 * prior.score(x, 0.5))
    with pytest.raises(UserError):
        prior.score(torch.randn(1, 1, 10, 16), 0.5)
    double = prior.denoise(x.double(), 0.5)  # was a dtype RuntimeError from the first convolution
    assert double.dtype == torch.float64 and torch.allclose(double.float(), prior.denoise(x, 0.5), atol=1e-5)


@pytest.mark.parametrize("sde", [VESDE(0.01, 10.0), VPSDE()], ids=["ve", "vp"])
def test_edm_preconditioning_and_tweedie_agree(sde):
    """Karras et al. 2022 Table 1 on x̃ = x/α, σ = β/α; score and denoiser satisfy Tweedie."""
    torch.manual_seed(0)
    net = _randomise_output(ScoreUNet(**TINY))
    prior = ScorePrior(net, sde, {"channels": 1}, Parameterization("edm", sigma_data=0.3))
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([0.3, 0.7])
    alpha, beta = (v[:, None, None, None] for v in (sde.alpha(t), sde.beta(t)))
    sigma, x_ve = beta / alpha, x / alpha
    total = sigma ** 2 + 0.09
    expected = 0.09 / total * x_ve + sigma * 0.3 / total.sqrt() * net(x_ve / total.sqrt(), torch.log(sigma.flatten()))
    assert torch.allclose(prior.denoise(x, t), expected, atol=1e-5)
    assert torch.allclose(prior.denoise(x, t), (x + beta ** 2 * prior.score(x, t)) / alpha, atol=1e-5)


def test_edm_denoiser_stays_bounded_at_high_noise():
    """At σ ≫ σ_d the EDM denoiser is ≈ σ_d F(x̃/σ): an O(1) image, where noise prediction gives σ F."""
    torch.manual_seed(0)
    net = _randomise_output(ScoreUNet(**TINY)).eval()
    sde = VESDE(0.01, 80.0)
    x = 80.0 * torch.randn(1, 1, 16, 16)
    edm = ScorePrior(net, sde, {}, Parameterization("edm", sigma_data=0.2)).denoise(x, 1.0)
    noise = ScorePrior(net, sde, {}, Parameterization("noise")).denoise(x, 1.0)
    assert edm.abs().max() < 1.0 < (noise - x).abs().max()


def test_bad_parameterization_is_one_clear_error():
    with pytest.raises(UserError, match="parameterization 'x0' is unknown"):
        Parameterization.from_dict({"type": "x0"})
    with pytest.raises(UserError, match="sigma_data"):
        Parameterization.from_dict({"type": "edm", "sigma_data": 0})
    assert Parameterization.from_dict(None).kind == "noise"  # priors saved before the option existed


def _gaussian(sde, seed=0):
    gen = torch.Generator().manual_seed(seed)
    root = torch.randn(4, 4, generator=gen, dtype=torch.float64) * 0.2
    return GaussianPrior(torch.tensor([0.2, 0.5, 0.4, 0.8]), root @ root.T + 0.01 * torch.eye(4), sde, (1, 2, 2))


@pytest.mark.parametrize("sde", [VESDE(0.01, 5.0), VPSDE()], ids=["ve", "vp"])
def test_gaussian_prior_score_is_the_gradient_of_log_pt(sde):
    prior = _gaussian(sde)
    t = torch.tensor([0.2, 0.9])
    x = torch.randn(2, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    a, b = sde.alpha(t).double(), sde.beta(t).double()
    logp = 0.0
    for i in range(2):
        cov = a[i] ** 2 * prior.cov + b[i] ** 2 * torch.eye(4, dtype=torch.float64)
        dist = torch.distributions.MultivariateNormal(a[i] * prior.mean, covariance_matrix=cov)
        logp = logp + dist.log_prob(x[i].reshape(-1))
    (grad,) = torch.autograd.grad(logp, x)
    assert torch.allclose(prior.score(x.detach(), t), grad, rtol=1e-6)


def test_tweedie_denoiser_is_the_exact_posterior_mean():
    """E[x0 | x_t] of a Gaussian = Kalman update with A = α I, noise β."""
    sde = VPSDE()
    prior = _gaussian(sde)
    t = 0.4
    xt = torch.randn(1, 1, 2, 2, dtype=torch.float64)
    a, b = float(sde.alpha(t)), float(sde.beta(t))
    mean, cov = prior.posterior(a * torch.eye(4, dtype=torch.float64), xt.reshape(-1), noise_std=b)
    assert torch.allclose(prior.denoise(xt, t).reshape(-1), mean, atol=1e-10)
    assert torch.linalg.eigvalsh(cov).min() > 0


def test_gaussian_prior_rejects_bad_input():
    with pytest.raises(UserError):
        GaussianPrior(torch.zeros(3), torch.eye(4), VESDE())
    with pytest.raises(UserError):
        GaussianPrior(torch.zeros(2), torch.tensor([[1.0, 0.0], [0.0, -1.0]]), VESDE())
    prior = _gaussian(VESDE())
    with pytest.raises(UserError):
        prior.score(torch.zeros(1, 1, 4, 4), 0.5)
    samples = prior.sample(20000, torch.Generator().manual_seed(0)).reshape(20000, -1).double()
    assert torch.allclose(torch.cov(samples.T), prior.cov, atol=0.01)
    assert math.isclose(float(samples.mean(0)[3]), 0.8, abs_tol=0.01)
