"""Operator-agnostic optimisation toolkit (torch, real or complex tensors).

Everything here sees callables and tensors, never a modality:

* :func:`conjugate_gradient` — Hestenes–Stiefel CG for (A^H A + μ I) x = b, one system per batch
  item (Nocedal & Wright, *Numerical Optimization*, Algorithm 5.2).
* :func:`power_iteration` — the largest eigenvalue of a self-adjoint positive operator A^H A
  (the Lipschitz constant L of ∇½‖Ax − y‖², for step sizes 1/L).
* :func:`fista` — Beck & Teboulle (2009), "A fast iterative shrinkage-thresholding algorithm",
  SIAM J. Imaging Sci. 2(1), eq. (4.1)–(4.3).
* :func:`gradient_2d`, :func:`divergence_2d`, :func:`tv_norm` — forward differences with
  Neumann boundary and their negative adjoint, div = −∇^T; isotropic TV(x) = Σ √(|∂_y x|² + |∂_x x|²).
* :func:`tv_prox` — the isotropic-TV proximal map argmin_z ½‖z − x‖² + w TV(z) (optionally with
  box constraints l ≤ z ≤ u) by the fast gradient projection (FGP) on the dual of Beck & Teboulle
  (2009), "Fast gradient-based algorithms for constrained total variation image denoising and
  deblurring problems", IEEE TIP 18(11), Algorithm GP/FGP.
* :func:`pdhg` — Chambolle & Pock (2011), "A first-order primal-dual algorithm for convex problems
  with applications to imaging", J. Math. Imaging Vis. 40, Algorithm 1 (θ = 1), with scalar steps
  or the diagonal preconditioning of Pock & Chambolle (2011), "Diagonal preconditioning for first
  order primal-dual algorithms in convex optimization", ICCV (:func:`pdhg_preconditioners`).

Complex tensors: inner products are Re⟨a, b⟩ = Re Σ conj(a) b, and the TV of a complex image uses
the complex modulus of each difference, |∂ x|² = Re(∂ x)² + Im(∂ x)².
"""

from __future__ import annotations

from typing import Callable

import torch

Tensor = torch.Tensor


def _batch_dot(a: Tensor, b: Tensor) -> Tensor:
    """Re⟨a, b⟩ per batch item (dimension 0), shaped to broadcast against a."""
    prod = (a.conj() * b).real if a.is_complex() else a * b
    return prod.reshape(a.shape[0], -1).sum(dim=1).reshape((-1,) + (1,) * (a.dim() - 1))


def conjugate_gradient(normal_op: Callable[[Tensor], Tensor], rhs: Tensor, x0: Tensor | None = None,
                       iterations: int = 20, tol: float = 1e-6, damping: float = 0.0) -> Tensor:
    """Solve (N + μ I) x = rhs by conjugate gradients, with N = ``normal_op`` (e.g. A^H A).

    N must be self-adjoint positive semi-definite and act on each batch item (dimension 0)
    separately: every item is an independent system with its own step lengths.  Iterations stop
    early once every item reaches ‖r‖ ≤ tol ‖rhs‖.  ``damping`` is μ ≥ 0.
    """
    def apply(v: Tensor) -> Tensor:
        return normal_op(v) + damping * v if damping else normal_op(v)

    x = torch.zeros_like(rhs) if x0 is None else x0.clone()
    r = rhs - apply(x) if x0 is not None else rhs.clone()
    p = r.clone()
    rs = _batch_dot(r, r)
    stop = (tol * _batch_dot(rhs, rhs).sqrt()) ** 2
    for _ in range(iterations):
        if bool((rs <= stop).all()):
            break
        ap = apply(p)
        denom = _batch_dot(p, ap)
        # converged items stay frozen: rounding noise in the null space of a singular N
        # (e.g. a masked projection) would otherwise be amplified by rs / ⟨p, N p⟩
        alpha = torch.where((denom > 0) & (rs > stop), rs / denom.clamp_min(torch.finfo(denom.dtype).tiny),
                            torch.zeros_like(rs))
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = _batch_dot(r, r)
        beta = torch.where(rs > 0, rs_new / rs.clamp_min(torch.finfo(rs.dtype).tiny), torch.zeros_like(rs))
        p = r + beta * p
        rs = rs_new
    return x


def power_iteration(op: Callable[[Tensor], Tensor], shape: tuple[int, ...], iterations: int = 30,
                    generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu") -> float:
    """Largest eigenvalue of the self-adjoint positive operator ``op`` (e.g. x ↦ A^H A x), or of
    any operator whose dominant eigenvalue is real and positive (e.g. FBP after projection).

    Von Mises iteration v ← op(v)/‖op(v)‖ from a Gaussian start drawn with ``generator``;
    returns the Rayleigh quotient ⟨v, op v⟩ of the last iterate.
    """
    real = torch.float32 if dtype in (torch.float32, torch.complex64) else torch.float64
    v = torch.randn(shape, generator=generator, dtype=real).to(device)
    if dtype.is_complex:
        v = torch.complex(v, torch.randn(shape, generator=generator, dtype=real).to(device))
    v = v / torch.linalg.vector_norm(v)
    value = 0.0
    for _ in range(iterations):
        w = op(v)
        value = float(torch.sum((v.conj() * w).real if w.is_complex() else v * w))
        norm = torch.linalg.vector_norm(w)
        if norm == 0:
            return 0.0
        v = w / norm
    return value


def fista(grad_f: Callable[[Tensor], Tensor], prox_g: Callable[[Tensor, float], Tensor], x0: Tensor,
          step: float, iterations: int = 100,
          callback: Callable[[int, Tensor], None] | None = None) -> Tensor:
    """FISTA (Beck & Teboulle 2009) for min_x f(x) + g(x), f smooth with ∇f L-Lipschitz.

    With ``step`` = 1/L and ``prox_g(v, t)`` = argmin_z ½‖z − v‖² + t g(z)::

        x_k     = prox_g(y_k − step ∇f(y_k), step)
        t_{k+1} = (1 + √(1 + 4 t_k²)) / 2
        y_{k+1} = x_k + ((t_k − 1)/t_{k+1}) (x_k − x_{k−1})

    ``callback(k, x_k)`` is called after every iteration.
    """
    x_prev = x0.clone()
    y = x0.clone()
    t = 1.0
    for k in range(iterations):
        x = prox_g(y - step * grad_f(y), step)
        t_next = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
        y = x + ((t - 1.0) / t_next) * (x - x_prev)
        x_prev, t = x, t_next
        if callback is not None:
            callback(k, x)
    return x_prev


# ------------------------------------------------------------------ total variation ---
def gradient_2d(x: Tensor) -> Tensor:
    """Forward differences over the last two axes, Neumann boundary: (..., H, W) → (..., 2, H, W).

    Channel 0 is ∂_y x[i, j] = x[i+1, j] − x[i, j] (0 on the last row), channel 1 is ∂_x likewise.
    """
    dy = torch.zeros_like(x)
    dx = torch.zeros_like(x)
    dy[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    dx[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    return torch.stack((dy, dx), dim=-3)


def divergence_2d(p: Tensor) -> Tensor:
    """Discrete divergence (..., 2, H, W) → (..., H, W), the negative adjoint: div = −∇^T."""
    py, px = p[..., 0, :, :], p[..., 1, :, :]
    div = torch.zeros_like(py)
    div[..., :-1, :] += py[..., :-1, :]
    div[..., 1:, :] -= py[..., :-1, :]
    div[..., :, :-1] += px[..., :, :-1]
    div[..., :, 1:] -= px[..., :, :-1]
    return div


def _pointwise_norm(p: Tensor) -> Tensor:
    """√(Σ_c |p_c|²) over the gradient axis (−3), kept for broadcasting."""
    return torch.sqrt((p.abs() ** 2).sum(dim=-3, keepdim=True))


def tv_norm(x: Tensor) -> Tensor:
    """Isotropic total variation Σ_ij |∇x|_ij summed over the last two axes (shape x.shape[:-2])."""
    return _pointwise_norm(gradient_2d(x)).squeeze(-3).sum(dim=(-2, -1))


def _as_weight(weight: float | Tensor, x: Tensor) -> Tensor:
    """A weight broadcastable against x: a float, or a tensor of x's leading (batch) shape."""
    w = torch.as_tensor(weight, dtype=x.real.dtype if x.is_complex() else x.dtype, device=x.device)
    return w.reshape(w.shape + (1,) * (x.dim() - w.dim()))


def tv_prox(x: Tensor, weight: float | Tensor, iterations: int = 50, lower: float | None = None,
            upper: float | None = None) -> Tensor:
    """argmin_z ½‖z − x‖² + weight · TV(z)  (s.t. lower ≤ z ≤ upper), by FGP on the dual.

    Beck & Teboulle (2009, IEEE TIP), Algorithm FGP: with the dual variable p (|p_ij| ≤ 1) and
    z(p) = P_C(x + w div p),

        p_k     = P_{|·|≤1}( r_k + ∇ z(r_k) / (8 w) )
        t_{k+1} = (1 + √(1 + 4 t_k²)) / 2,   r_{k+1} = p_k + ((t_k − 1)/t_{k+1}) (p_k − p_{k−1})

    (8 bounds ‖∇‖²).  Complex x: p is complex and |p_ij|² sums the squared moduli; the box
    constraint applies to real images only.  ``weight`` may be a tensor of x's batch shape.
    """
    if (lower is not None or upper is not None) and x.is_complex():
        raise ValueError("box constraints apply to real images only")
    w = _as_weight(weight, x)
    if not bool((w > 0).any()):
        return _clip(x, lower, upper)
    safe_w = torch.where(w > 0, w, torch.ones_like(w))
    p_prev = torch.zeros(x.shape[:-2] + (2,) + x.shape[-2:], dtype=x.dtype, device=x.device)
    r = p_prev
    t = 1.0
    for _ in range(iterations):
        z = _clip(x + w * divergence_2d(r), lower, upper)
        q = r + gradient_2d(z) / (8.0 * safe_w.unsqueeze(-3))
        p = q / _pointwise_norm(q).clamp_min(1.0)
        t_next = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
        r = p + ((t - 1.0) / t_next) * (p - p_prev)
        p_prev, t = p, t_next
    return _clip(x + w * divergence_2d(p_prev), lower, upper)


def _clip(x: Tensor, lower: float | None, upper: float | None) -> Tensor:
    return x if lower is None and upper is None else x.clamp(min=lower, max=upper)


def pdhg_preconditioners(op: Callable[[Tensor], Tensor], op_adjoint: Callable[[Tensor], Tensor],
                         x_like: Tensor, y_like: Tensor) -> tuple[Tensor, Tensor]:
    """Diagonal steps (σ, τ) of Pock & Chambolle (2011, ICCV, α = 1) for K = [A; ∇], A ≥ 0 entrywise.

    σ_i = 1 / Σ_j A_ij on the rows of A (0 on empty rows), τ_j = 1 / (Σ_i A_ij + 4): for a
    nonnegative matrix the row and column sums are A 1 and A^T 1, and every pixel enters at most
    4 forward differences (the TV rows get σ = 1/2, see :func:`pdhg`).
    """
    rows = op(torch.ones_like(x_like))
    sigma = torch.where(rows > 0, 1.0 / rows.clamp_min(torch.finfo(rows.dtype).tiny), torch.zeros_like(rows))
    tau = 1.0 / (op_adjoint(torch.ones_like(y_like)) + 4.0)
    return sigma, tau


def pdhg(op: Callable[[Tensor], Tensor], op_adjoint: Callable[[Tensor], Tensor], y: Tensor, x0: Tensor,
         weight: float, iterations: int = 200, op_norm: float | None = None,
         steps: tuple[Tensor, Tensor] | None = None, lower: float | None = None,
         callback: Callable[[int, Tensor], None] | None = None) -> Tensor:
    """Chambolle–Pock for min_x ½‖A x − y‖² + weight · TV(x) (+ x ≥ lower), real images.

    K = [A; ∇], θ = 1 (Chambolle & Pock 2011, Algorithm 1).  Steps: either scalar,
    σ = τ = 1/‖K‖ with ‖K‖² ≤ ‖A‖² + 8 (``op_norm`` = ‖A‖, e.g. √ of :func:`power_iteration`
    on A^H A), or diagonal ``steps`` = (σ on y's grid, τ on x's grid) from
    :func:`pdhg_preconditioners`, with σ = 1/2 on the TV rows (Pock & Chambolle 2011, ICCV).
    Dual proxes: data term q ← (q + σ(A x̄ − y)) / (1 + σ); TV term p ← P_{|·|≤weight}(p + σ ∇x̄).
    """
    if steps is None:
        if op_norm is None:
            raise ValueError("pdhg needs op_norm or diagonal steps")
        sigma = tau = sigma_tv = 1.0 / (op_norm ** 2 + 8.0) ** 0.5
    else:
        (sigma, tau), sigma_tv = steps, 0.5
    x = x0.clone()
    x_bar = x.clone()
    q = torch.zeros_like(y)
    p = torch.zeros(x.shape[:-2] + (2,) + x.shape[-2:], dtype=x.dtype, device=x.device)
    for k in range(iterations):
        q = (q + sigma * (op(x_bar) - y)) / (1.0 + sigma)
        p = p + sigma_tv * gradient_2d(x_bar)
        p = p / (_pointwise_norm(p) / weight).clamp_min(1.0) if weight > 0 else torch.zeros_like(p)
        x_new = _clip(x - tau * (op_adjoint(q) - divergence_2d(p)), lower, None)
        x_bar = 2.0 * x_new - x
        x = x_new
        if callback is not None:
            callback(k, x)
    return x
