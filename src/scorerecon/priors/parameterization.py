"""How the network output F becomes a denoiser D(x_t, t) ≈ E[x0 | x_t] and a score.

Write x_t = α x0 + β z in its variance-exploding form x̃ = x_t / α = x0 + σ z, σ = β / α, and let

    D = c_skip(σ) x̃ + c_out(σ) F(c_in x̃, log σ).

* ``noise``: Song et al. 2021's NCSN++ output scaling, c_skip = 1, c_out = σ, c_in = α: the
  network reads x_t and predicts −z, and score = F / β.  Its x0 error is σ times the network's
  error, so at σ_max = 80 a 3 % error in F is an error of 2.4 in an image that spans [0, 1]
  (measured by ``benchmarks/prior_noise_levels.py`` on the first shipped priors).
* ``edm``: the preconditioning of Karras et al. 2022 (Table 1, "Preconditioning"),

      c_skip = σ_d² / (σ² + σ_d²),  c_out = σ σ_d / √(σ² + σ_d²),  c_in = 1 / √(σ² + σ_d²),

  with σ_d the standard deviation of the data.  The network's input and its training target
  (x0 − c_skip x̃) / c_out both have unit variance at every σ, and at high noise D tends to
  σ_d F: the network predicts the clean image instead of the noise, so the error in x0 stays
  bounded where cold-start sampling begins.

The score follows from Tweedie's formula, ∇ log p_t(x_t) = (α D − x_t) / β².  Both are computed
from the residual r = D − x̃ = (c_skip − 1) x̃ + c_out F, which avoids cancellation at small σ:
D = x̃ + r and score = α r / β².  Training minimises E w(σ) ‖D − x0‖² with w = 1 / c_out²
(Karras eq. 8 with λ = 1 / c_out²; for ``noise`` this is Song's λ = β² weighting, ‖F + z‖²).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError
from .sde import SDE, _bcast

KINDS = ("noise", "edm")
#: what a prior file or training checkpoint written before the option existed used
LEGACY = {"type": "noise", "sigma_data": 0.5}


@dataclass(frozen=True)
class Parameterization:
    """The output scaling of a score network (see the module docstring)."""

    kind: str = "edm"
    sigma_data: float = 0.5

    def __post_init__(self):
        if self.kind not in KINDS:
            raise UserError(f"parameterization {self.kind!r} is unknown: use one of {', '.join(KINDS)}")
        if not 0 < self.sigma_data < float("inf"):
            raise UserError(f"sigma_data must be a positive finite number, got {self.sigma_data!r}")

    def coefficients(self, alpha: torch.Tensor, sigma: torch.Tensor):
        """(c_skip − 1, c_out, c_in) for per-sample α and σ = β/α, each of shape (B,)."""
        if self.kind == "noise":
            return torch.zeros_like(sigma), sigma, alpha
        total = sigma ** 2 + self.sigma_data ** 2
        return -sigma ** 2 / total, sigma * self.sigma_data / total.sqrt(), total.rsqrt()

    def residual(self, network: nn.Module, x: torch.Tensor, t: torch.Tensor, sde: SDE) -> torch.Tensor:
        """r = D(x_t, t) − x_t/α, in x's dtype, for x (B, C, H, W) and t of shape (B,); the network
        sees its input in its weights' dtype (a float64 x would not convolve with float32 weights)."""
        alpha = sde.alpha(t)
        sigma = sde.beta(t) / alpha
        skip_minus_one, c_out, c_in = (_bcast(c, x) for c in self.coefficients(alpha, sigma))
        x_ve = x / _bcast(alpha, x)
        weights = next(network.parameters()).dtype
        out = network((c_in * x_ve).to(weights), sde.noise_level(t)).to(x.dtype)
        return skip_minus_one * x_ve + c_out * out

    def loss_weight(self, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """w(σ) = 1 / c_out², per sample."""
        return self.coefficients(alpha, sigma)[1].pow(-2)

    def to_dict(self) -> dict:
        return {"type": self.kind, "sigma_data": self.sigma_data}

    @classmethod
    def from_dict(cls, table: dict | None) -> "Parameterization":
        """From a config table or stored description; ``None`` (written before it existed) is :data:`LEGACY`."""
        table = LEGACY if table is None else table
        unknown = set(table) - {"type", "sigma_data"}
        if unknown:
            raise UserError(f"unknown key {sorted(unknown)[0]!r} in [parameterization]: valid keys are type, sigma_data")
        return cls(kind=table.get("type", cls.kind), sigma_data=float(table.get("sigma_data", cls.sigma_data)))
