"""Forward SDEs of score-based generative modelling (Song et al., ICLR 2021, "Score-Based
Generative Modeling through Stochastic Differential Equations", eqs. 9, 11 and Appendix B).

Every SDE here is linear, ``dx = f(t) x dt + g(t) dw`` on t in [eps, T], so its transition
kernel is Gaussian (REFERENCE.md, section 1):

    p_0t(x_t | x_0) = N(α(t) x_0, β(t)² I).

``alpha(t)`` and ``beta(t)`` are those two scalars.  Between two times s < t the kernel is
``x_t = a x_s + b z`` with ``a = α(t)/α(s)`` and ``b² = β(t)² − a² β(s)²``; :meth:`SDE.discretize`
uses it for the reverse-diffusion predictor (Song 2021, eq. 46) on any time grid.

* VE (variance exploding, NCSN):  σ(t) = σ_min (σ_max/σ_min)^t,  α = 1,  β = σ(t).
* VP (variance preserving, DDPM): b(t) = β_min + t (β_max − β_min),  α = exp(−½∫b),  β² = 1 − α².
* sub-VP:                          same drift as VP,  β = 1 − α²  (Song 2021, eq. 11).

The network is conditioned on :meth:`SDE.noise_level` = log(β/α), the log noise level of the
equivalent VE process x/α (for VE it is log σ, as in NCSN++).  The SDE is recorded in every
checkpoint and prior file (:meth:`to_dict`) and never re-specified at sampling time.
"""

from __future__ import annotations

import math

import torch

from ..errors import UserError


def _as_tensor(t, like: torch.Tensor | None = None) -> torch.Tensor:
    if isinstance(t, torch.Tensor):
        return t.to(torch.float32) if not t.is_floating_point() else t
    device = like.device if like is not None else None
    return torch.tensor(float(t), dtype=torch.float32, device=device)


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample scalar (B,) or () so that it broadcasts against x (B, ...)."""
    return v.reshape(v.shape + (1,) * (x.dim() - v.dim())) if v.dim() else v


class SDE:
    """A linear forward SDE on [eps, T] discretised with N steps by default."""

    kind = ""
    T = 1.0

    def __init__(self, N: int = 1000, eps: float = 1e-5):
        if N < 1 or not 0.0 < eps < self.T:
            raise UserError(f"SDE needs N >= 1 and 0 < eps < {self.T}: got N={N}, eps={eps}")
        self.N = int(N)
        self.eps = float(eps)

    # -- to be provided by subclasses ------------------------------------------------------
    def alpha(self, t) -> torch.Tensor:
        """Mean scale α(t) of p_0t."""
        raise NotImplementedError

    def beta(self, t) -> torch.Tensor:
        """Standard deviation β(t) of p_0t."""
        raise NotImplementedError

    def sde(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Drift f(x, t) (same shape as x) and diffusion g(t) (shape of t)."""
        raise NotImplementedError

    def prior_sampling(self, shape, generator: torch.Generator | None = None,
                       device=None) -> torch.Tensor:
        """A sample of p_T, the distribution the reverse process starts from."""
        raise NotImplementedError

    def _params(self) -> dict:
        raise NotImplementedError

    # -- derived ----------------------------------------------------------------------------
    def marginal_prob(self, x0: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean α(t) x0 and std β(t) of p_0t(x_t | x0); t is () or (B,)."""
        t = _as_tensor(t, x0)
        return _bcast(self.alpha(t), x0) * x0, self.beta(t)

    def noise_level(self, t) -> torch.Tensor:
        """Network conditioning log(β(t)/α(t)) (= log σ(t) for VE)."""
        t = _as_tensor(t)
        return torch.log(self.beta(t) / self.alpha(t))

    def noise_range(self) -> tuple[float, float]:
        """(σ(eps), σ(T)): the noise levels β/α the SDE spans, smallest first."""
        return tuple(float(self.noise_level(t).exp()) for t in (self.eps, self.T))

    def time_of_noise(self, sigma):
        """t with β(t)/α(t) = σ, by bisection on the increasing noise level (clamped to [eps, T]);
        a float for a float σ, elementwise (float64) for a tensor."""
        target = torch.log(torch.as_tensor(sigma, dtype=torch.float64))
        lo, hi = torch.full_like(target, self.eps), torch.full_like(target, self.T)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            below = self.noise_level(mid) < target
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        t = 0.5 * (lo + hi)
        return t if isinstance(sigma, torch.Tensor) else float(t)

    def default_dt(self) -> float:
        """Step of the default grid of N steps from T down to eps."""
        return (self.T - self.eps) / self.N

    def transition(self, t, dt) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, b) of the forward kernel from s = t − dt to t: x_t = a x_s + b z."""
        t = _as_tensor(t)
        s = torch.clamp(t - dt, min=0.0)
        a = self.alpha(t) / self.alpha(s)
        b2 = self.beta(t) ** 2 - (a * self.beta(s)) ** 2
        return a, torch.sqrt(torch.clamp(b2, min=0.0))

    def discretize(self, x: torch.Tensor, t, dt: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Discrete forward step x_t = x_s + f_i + G_i z from s = t − dt (Song 2021, App. E).

        Returns ``(f_i, G_i)`` with f_i = (a − 1) x_s and G_i = b; for VE this is SMLD's
        G_i = sqrt(σ_i² − σ_{i−1}²), for VP DDPM's f_i = (sqrt(1 − β_i) − 1) x, G_i = sqrt(β_i).
        """
        a, b = self.transition(t, self.default_dt() if dt is None else dt)
        return (_bcast(a, x) - 1.0) * x, b

    def to_dict(self) -> dict:
        """JSON-serialisable description, inverse of :func:`sde_from_dict`."""
        return {"type": self.kind, "N": self.N, "eps": self.eps, **self._params()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.to_dict().items() if k != "type")
        return f"{type(self).__name__}({args})"


class VESDE(SDE):
    """Variance exploding SDE: dx = sqrt(d[σ²]/dt) dw, σ(t) = σ_min (σ_max/σ_min)^t."""

    kind = "ve"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, N: int = 1000, eps: float = 1e-5):
        if not 0.0 < sigma_min < sigma_max < math.inf:
            raise UserError(f"VE SDE needs 0 < sigma_min < sigma_max < inf: got {sigma_min}, {sigma_max}")
        super().__init__(N, eps)
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def sigma(self, t) -> torch.Tensor:
        return self.sigma_min * torch.exp(_as_tensor(t) * self._log_ratio)

    def alpha(self, t) -> torch.Tensor:
        return torch.ones_like(_as_tensor(t))

    def beta(self, t) -> torch.Tensor:
        return self.sigma(t)

    def sde(self, x, t):
        return torch.zeros_like(x), self.sigma(t) * math.sqrt(2.0 * self._log_ratio)

    def prior_sampling(self, shape, generator=None, device=None):
        return self.sigma_max * torch.randn(shape, generator=generator, device=device)

    def _params(self):
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max}


class VPSDE(SDE):
    """Variance preserving SDE: dx = −½ b(t) x dt + sqrt(b(t)) dw, b linear in t."""

    kind = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000, eps: float = 1e-3):
        if not 0.0 <= beta_min < beta_max < math.inf:
            raise UserError(f"VP SDE needs 0 <= beta_min < beta_max < inf: got {beta_min}, {beta_max}")
        super().__init__(N, eps)
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def rate(self, t) -> torch.Tensor:
        """The noise rate b(t) = β_min + t (β_max − β_min)."""
        return self.beta_min + _as_tensor(t) * (self.beta_max - self.beta_min)

    def log_alpha(self, t) -> torch.Tensor:
        """log α(t) = −¼ t² (β_max − β_min) − ½ t β_min."""
        t = _as_tensor(t)
        return -0.25 * t ** 2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def alpha(self, t):
        return torch.exp(self.log_alpha(t))

    def beta(self, t):
        return torch.sqrt(-torch.expm1(2.0 * self.log_alpha(t)))

    def sde(self, x, t):
        rate = self.rate(t)
        return -0.5 * _bcast(rate, x) * x, torch.sqrt(rate)

    def prior_sampling(self, shape, generator=None, device=None):
        return torch.randn(shape, generator=generator, device=device)

    def _params(self):
        return {"beta_min": self.beta_min, "beta_max": self.beta_max}


class SubVPSDE(VPSDE):
    """sub-VP SDE: VP drift, diffusion sqrt(b(t) (1 − exp(−2∫b))), std β = 1 − α²."""

    kind = "subvp"

    def beta(self, t):
        return -torch.expm1(2.0 * self.log_alpha(t))

    def sde(self, x, t):
        drift, _ = super().sde(x, t)
        discount = -torch.expm1(4.0 * self.log_alpha(t))
        return drift, torch.sqrt(self.rate(t) * discount)


_SDES = {cls.kind: cls for cls in (VESDE, VPSDE, SubVPSDE)}


def sde_from_dict(spec: dict) -> SDE:
    """Build an SDE from :meth:`SDE.to_dict` output or a config table (``type`` = ve|vp|subvp)."""
    spec = dict(spec)
    kind = str(spec.pop("type", "")).lower()
    if kind not in _SDES:
        raise UserError(f"unknown SDE type {kind!r}: use one of {', '.join(_SDES)}")
    try:
        return _SDES[kind](**spec)
    except TypeError as err:
        raise UserError(f"bad parameters for the {kind} SDE ({err}): see configs/head-ct.toml") from None
