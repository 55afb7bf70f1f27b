"""The optimisation toolkit: adjoint pairs, CG, power iteration, FISTA, TV prox, PDHG."""

import numpy as np
import pytest
import torch
from skimage.restoration import denoise_tv_chambolle

from scorerecon.solvers.optim import (conjugate_gradient, divergence_2d, fista, gradient_2d, pdhg,
                                      pdhg_preconditioners, power_iteration, tv_norm, tv_prox)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _tv_objective(z, x, w):
    return 0.5 * float(((z - x).abs() ** 2).sum()) + w * float(tv_norm(z).sum())


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_divergence_is_negative_adjoint_of_gradient(dtype):
    x = torch.randn(2, 1, 9, 7, generator=_gen(1), dtype=dtype)
    p = torch.randn(2, 1, 2, 9, 7, generator=_gen(2), dtype=dtype)
    lhs = torch.vdot(gradient_2d(x).flatten(), p.flatten())
    rhs = -torch.vdot(x.flatten(), divergence_2d(p).flatten())
    assert torch.allclose(lhs, rhs, atol=1e-10)


def test_gradient_of_ramp_and_tv_norm():
    ramp = torch.arange(5.0).reshape(1, 5).repeat(4, 1)  # x increases by 1 per column
    g = gradient_2d(ramp)
    assert torch.all(g[0] == 0) and torch.all(g[1][:, :-1] == 1) and torch.all(g[1][:, -1] == 0)
    assert float(tv_norm(ramp)) == pytest.approx(4 * 4)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_conjugate_gradient_matches_numpy_solve(dtype):
    g = _gen(3)
    n = 12
    a = torch.randn(2, n, n, generator=g, dtype=dtype)
    spd = a.mH @ a  # one SPD system per batch item
    b = torch.randn(2, n, generator=g, dtype=dtype)
    mu = 0.5
    x = conjugate_gradient(lambda v: (spd @ v.unsqueeze(-1)).squeeze(-1), b, iterations=200, tol=1e-12,
                           damping=mu)
    for i in range(2):
        ref = np.linalg.solve(spd[i].numpy() + mu * np.eye(n), b[i].numpy())
        np.testing.assert_allclose(x[i].numpy(), ref, rtol=1e-6, atol=1e-8)


def test_conjugate_gradient_warm_start_and_zero_rhs():
    spd = torch.diag(torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64))
    op = lambda v: v @ spd  # noqa: E731
    b = torch.tensor([[1.0, 2.0, 4.0]], dtype=torch.float64)
    assert torch.allclose(conjugate_gradient(op, b, x0=torch.ones_like(b), iterations=1), torch.ones_like(b))
    assert torch.all(conjugate_gradient(op, torch.zeros_like(b)) == 0)


def test_power_iteration_finds_largest_eigenvalue():
    diag = torch.tensor([0.5, 3.0, 7.0, 1.0])
    value = power_iteration(lambda v: diag * v, (4,), iterations=200, generator=_gen(4))
    assert value == pytest.approx(7.0, rel=1e-4)
    cvalue = power_iteration(lambda v: diag * v, (4,), iterations=200, generator=_gen(4),
                             dtype=torch.complex64)
    assert cvalue == pytest.approx(7.0, rel=1e-4)


def test_fista_solves_lasso_soft_threshold_case():
    # min ½‖x − b‖² + λ‖x‖₁ has the closed form soft(b, λ); run FISTA on the scaled problem
    # min ½‖2x − 2b‖² + 4λ‖x‖₁ (same minimiser, L = 4) to exercise the step size.
    g = _gen(5)
    b = torch.randn(50, generator=g, dtype=torch.float64)
    lam = 0.3
    soft = lambda v, t: torch.sign(v) * (v.abs() - t).clamp_min(0)  # noqa: E731
    x = fista(lambda v: 4 * (v - b), lambda v, t: soft(v, 4 * lam * t), torch.zeros_like(b),
              step=0.25, iterations=100)
    assert torch.allclose(x, soft(b, lam), atol=1e-10)


def test_fista_least_squares_objective_decreases_to_optimum():
    g = _gen(6)
    a = torch.randn(30, 10, generator=g, dtype=torch.float64)
    y = torch.randn(30, generator=g, dtype=torch.float64)
    lip = power_iteration(lambda v: a.T @ (a @ v), (10,), iterations=300, generator=g, dtype=torch.float64)
    values = []
    x = fista(lambda v: a.T @ (a @ v - y), lambda v, t: v, torch.zeros(10, dtype=torch.float64),
              step=1 / lip, iterations=500, callback=lambda k, v: values.append(float(((a @ v - y) ** 2).sum())))
    ref = np.linalg.lstsq(a.numpy(), y.numpy(), rcond=None)[0]
    np.testing.assert_allclose(x.numpy(), ref, atol=1e-6)
    assert values[-1] <= values[0]


def _noisy_image(seed=7, dtype=torch.float64):
    g = _gen(seed)
    img = torch.zeros(32, 32, dtype=torch.float64)
    img[8:24, 10:20] = 1.0
    return (img + 0.2 * torch.randn(32, 32, generator=g, dtype=torch.float64)).to(dtype)


def test_tv_prox_matches_skimage_chambolle():
    # scikit-image's denoise_tv_chambolle(f, weight=w) solves min_u ½‖u − f‖² + w TV(u) with the
    # same Neumann forward differences: the same weight convention as tv_prox.
    x = _noisy_image()
    w = 0.2
    ours = tv_prox(x, w, iterations=500)
    ref = denoise_tv_chambolle(x.numpy(), weight=w, eps=1e-9, max_num_iter=5000)
    np.testing.assert_allclose(ours.numpy(), ref, atol=5e-3)
    assert _tv_objective(ours, x, w) <= _tv_objective(torch.from_numpy(ref), x, w) + 1e-6
    assert not np.allclose(tv_prox(x, w / 2, iterations=500).numpy(), ref, atol=5e-2)


def test_tv_prox_decreases_objective_and_respects_bounds():
    x = _noisy_image()
    w = 0.15
    z = tv_prox(x, w, iterations=100, lower=0.0)
    assert float(z.min()) >= 0.0
    assert _tv_objective(z, x, w) < _tv_objective(x, x, w)
    assert _tv_objective(z, x, w) < _tv_objective(x.clamp_min(0), x, w)
    assert torch.equal(tv_prox(x, 0.0), x)


def test_tv_prox_complex_equals_real_on_rotated_image():
    # TV and the prox commute with a global phase: prox(e^{iφ} x) = e^{iφ} prox(x).
    x = _noisy_image()
    phase = torch.exp(torch.tensor(0.7j, dtype=torch.complex128))
    z_real = tv_prox(x, 0.1, iterations=200)
    z_cplx = tv_prox(phase * x.to(torch.complex128), 0.1, iterations=200)
    assert torch.allclose(z_cplx, phase * z_real, atol=1e-8)


def test_tv_prox_per_batch_weights():
    x = torch.stack([_noisy_image(1), _noisy_image(2)]).unsqueeze(1)
    z = tv_prox(x, torch.tensor([0.05, 0.2], dtype=torch.float64), iterations=100)
    for i, w in enumerate([0.05, 0.2]):
        assert torch.allclose(z[i], tv_prox(x[i], w, iterations=100), atol=1e-10)


def test_pdhg_and_fista_tv_agree_on_tv_regularised_least_squares():
    g = _gen(8)
    truth = _noisy_image(9).clamp(0, 1)
    mask = (torch.rand(32, 32, generator=g) < 0.5).double()
    y = mask * truth
    w = 0.05
    op = lambda v: mask * v  # noqa: E731
    x_pd = pdhg(op, op, y, torch.zeros_like(y), weight=w, op_norm=1.0, iterations=1000, lower=0.0)
    steps = pdhg_preconditioners(op, op, y, y)
    x_pc = pdhg(op, op, y, torch.zeros_like(y), weight=w, steps=steps, iterations=1000, lower=0.0)
    x_fi = fista(lambda v: mask * (mask * v - y), lambda v, t: tv_prox(v, w * t, 30, lower=0.0),
                 torch.zeros_like(y), step=1.0, iterations=200)

    def objective(v):
        return 0.5 * float(((mask * v - y) ** 2).sum()) + w * float(tv_norm(v))
    assert objective(x_pd) == pytest.approx(objective(x_fi), rel=5e-3)
    assert objective(x_pc) == pytest.approx(objective(x_pd), rel=5e-3)
    assert float(x_pd.min()) >= 0 and float(x_pc.min()) >= 0


def test_pdhg_preconditioners_are_inverse_row_and_column_sums():
    a = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [3.0, 0.0, 1.0]], dtype=torch.float64)
    sigma, tau = pdhg_preconditioners(lambda v: a @ v, lambda v: a.T @ v, torch.zeros(3, dtype=torch.float64),
                                      torch.zeros(3, dtype=torch.float64))
    assert torch.allclose(sigma, torch.tensor([1 / 3, 0.0, 1 / 4], dtype=torch.float64))
    assert torch.allclose(tau, 1 / (torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64) + 4))
    with pytest.raises(ValueError):
        pdhg(lambda v: a @ v, lambda v: a.T @ v, sigma, sigma, weight=0.1)
