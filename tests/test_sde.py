"""SDEs: marginals against Monte-Carlo of the forward SDE, the moment ODEs, discretisation."""

import math

import pytest
import torch

from scorerecon.errors import UserError
from scorerecon.priors.sde import SubVPSDE, VESDE, VPSDE, sde_from_dict

SDES = [VESDE(sigma_min=0.01, sigma_max=5.0, N=100), VPSDE(N=100), SubVPSDE(N=100)]


def _euler_maruyama(sde, x0, t_end, n_steps, generator):
    """Simulate the forward SDE dx = f dt + g dw from t = 0 to t_end."""
    x, dt = x0.clone(), t_end / n_steps
    for i in range(n_steps):
        drift, g = sde.sde(x, torch.tensor(i * dt))
        x = x + drift * dt + g * math.sqrt(dt) * torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return x


@pytest.mark.parametrize("sde", SDES, ids=lambda s: s.kind)
@pytest.mark.parametrize("t_end", [0.4, 1.0])
def test_marginals_match_monte_carlo(sde, t_end):
    gen = torch.Generator().manual_seed(0)
    x0 = torch.tensor([0.8, -0.3], dtype=torch.float64).repeat(20000, 1)
    xt = _euler_maruyama(sde, x0, t_end, 400, gen)
    mean, std = sde.marginal_prob(x0[:1], torch.tensor([t_end]))
    # p_0t starts from std β(0) > 0 for VE (σ_min); the simulated path starts from exactly x0
    expected_std = math.sqrt(max(float(std) ** 2 - float(sde.beta(torch.tensor(0.0))) ** 2, 0.0))
    assert torch.allclose(xt.mean(0), mean[0], atol=4 * expected_std / math.sqrt(20000) + 2e-3)
    assert xt.std(0) == pytest.approx([expected_std] * 2, rel=0.03)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: s.kind)
def test_alpha_beta_solve_the_moment_equations(sde):
    """d log α/dt = f(t) and d β²/dt = 2 f β² + g² for the linear SDE dx = f x dt + g dw."""
    t, h = torch.linspace(0.05, 0.95, 7, dtype=torch.float64), 1e-5
    one = torch.ones(7, dtype=torch.float64)
    drift, g = sde.sde(one, t)
    dlog_alpha = (torch.log(sde.alpha(t + h)) - torch.log(sde.alpha(t - h))) / (2 * h)
    dvar = (sde.beta(t + h) ** 2 - sde.beta(t - h) ** 2) / (2 * h)
    assert torch.allclose(dlog_alpha, drift, rtol=1e-5, atol=1e-6)
    if sde.kind == "ve":  # p_0t of VE ignores the σ_min² offset only at t = 0, not in the ODE
        assert torch.allclose(dvar, g ** 2, rtol=1e-5)
    else:
        assert torch.allclose(dvar, 2 * drift * sde.beta(t) ** 2 + g ** 2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: s.kind)
def test_discrete_kernel_composes_to_the_marginal(sde):
    """Chaining x_t = x_s + f_i + G_i z over the grid reproduces N(α x0, β² I) (from eps)."""
    grid = torch.linspace(sde.eps, sde.T, 51, dtype=torch.float64)
    coef, var = torch.tensor(1.0, dtype=torch.float64), sde.beta(grid[0]) ** 2
    x = torch.ones(1, dtype=torch.float64)
    for s, t in zip(grid[:-1], grid[1:]):
        f, g = sde.discretize(x, t, float(t - s))
        a = 1.0 + float(f)           # f_i = (a − 1) x with x = 1
        coef, var = coef * a, a ** 2 * var + g ** 2
    assert float(coef) == pytest.approx(float(sde.alpha(grid[-1]) / sde.alpha(grid[0])), rel=1e-9)
    assert float(var) == pytest.approx(float(sde.beta(grid[-1]) ** 2), rel=1e-6)


def test_ve_discretisation_is_smld_and_vp_is_ddpm():
    ve, vp = VESDE(0.01, 50.0, N=10), VPSDE(0.1, 20.0, N=10)
    t, dt = torch.tensor(0.6), 0.1
    x = torch.randn(3, 1, 2, 2)
    f, g = ve.discretize(x, t, dt)
    assert torch.all(f == 0) and float(g) == pytest.approx(math.sqrt(ve.sigma(t) ** 2 - ve.sigma(t - dt) ** 2))
    f, g = vp.discretize(x, t, dt)
    beta_i = 1 - (vp.alpha(t) / vp.alpha(t - dt)) ** 2
    assert torch.allclose(f, (torch.sqrt(1 - beta_i) - 1) * x) and float(g) == pytest.approx(math.sqrt(beta_i))


def test_noise_level_prior_sampling_and_round_trip():
    ve = VESDE(0.01, 50.0, N=7)
    assert float(ve.noise_level(0.5)) == pytest.approx(math.log(float(ve.sigma(0.5))))
    gen = torch.Generator().manual_seed(1)
    assert float(ve.prior_sampling((4000,), gen).std()) == pytest.approx(50.0, rel=0.05)
    assert float(VPSDE().prior_sampling((4000,), gen).std()) == pytest.approx(1.0, rel=0.05)
    for sde in SDES:
        again = sde_from_dict(sde.to_dict())
        assert type(again) is type(sde) and again.to_dict() == sde.to_dict()


@pytest.mark.parametrize("spec", [{"type": "xx"}, {"type": "ve", "sigma_min": 2.0, "sigma_max": 1.0},
                                  {"type": "vp", "sigma_max": 3.0}, {"type": "ve", "N": 0}])
def test_bad_sde_specs_are_user_errors(spec):
    with pytest.raises(UserError):
        sde_from_dict(spec)


@pytest.mark.parametrize("sde", SDES, ids=["ve", "vp", "subvp"])
@pytest.mark.parametrize("sigma", [0.05, 0.3, 2.0])
def test_time_of_noise_inverts_the_noise_level(sde, sigma):
    """β(t)/α(t) = σ at t = time_of_noise(σ) (the warm start and the model cards rely on it)."""
    t = sde.time_of_noise(sigma)
    assert sde.eps <= t <= sde.T
    assert float(sde.beta(t) / sde.alpha(t)) == pytest.approx(sigma, rel=1e-4)


@pytest.mark.parametrize("sde", SDES, ids=["ve", "vp", "subvp"])
def test_time_of_noise_is_elementwise_on_tensors(sde):
    """A tensor of noise levels gives the times a float each would (coarse-scale priors use it)."""
    sigmas = torch.tensor([0.05, 0.3, 2.0])
    times = sde.time_of_noise(sigmas)
    assert times.shape == sigmas.shape
    assert times.tolist() == pytest.approx([sde.time_of_noise(float(s)) for s in sigmas], abs=1e-9)
