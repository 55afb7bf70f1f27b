"""The prior interface the solvers use: a score model s(x, t) ≈ ∇_x log p_t(x) plus its SDE.

Any prior (learned :class:`ScorePrior`, exact :class:`scorerecon.priors.analytic.GaussianPrior`)
offers

* ``sde``                      the forward SDE (:mod:`scorerecon.priors.sde`), p_0t = N(α x0, β² I);
* ``score(x, t)``              x in the unit domain, shape (B, C, H, W); t a float or (B,);
* ``denoise(x, t)``            Tweedie's formula E[x0 | x_t] = (x_t + β(t)² ∇ log p_t(x_t)) / α(t);
* ``check_image_size(H, W)``   UserError when the prior cannot be applied to that size;
* ``size_multiple``            (learned priors) image sides must be multiples of it;
* ``metadata``                 modality, crop size, channels, training information.
"""

from __future__ import annotations

import torch
from torch import nn

from .network import ScoreUNet
from .parameterization import Parameterization
from .sde import SDE, _as_tensor, _bcast


def per_sample_time(t, x: torch.Tensor) -> torch.Tensor:
    """t as a float32 tensor of shape (B,) on x's device (a float or () is broadcast)."""
    t = _as_tensor(t).to(device=x.device, dtype=torch.float32)
    return t.reshape(-1).expand(x.shape[0])


class ScorePrior(nn.Module):
    """A trained network with its SDE and output scaling (:mod:`.parameterization`)."""

    def __init__(self, network: ScoreUNet, sde: SDE, metadata: dict | None = None,
                 parameterization: Parameterization | None = None):
        super().__init__()
        self.network = network
        self.sde = sde
        self.metadata = dict(metadata or {})
        self.parameterization = parameterization or Parameterization.from_dict(None)

    @property
    def channels(self) -> int:
        return self.network.config["channels"]

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this: 2^(levels − 1) of the U-Net."""
        return 2 ** (self.network.levels - 1)

    def check_image_size(self, height: int, width: int) -> None:
        """UserError unless the U-Net accepts H×W (divisible by 2^(levels−1))."""
        self.network.check_image_size(height, width)

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        return self.score(x, t)

    def _residual(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_image_size(x.shape[-2], x.shape[-1])
        t = per_sample_time(t, x)
        return self.parameterization.residual(self.network, x, t, self.sde), t

    def score(self, x: torch.Tensor, t) -> torch.Tensor:
        """Score estimate s_θ(x, t) = α (D − x/α) / β² for x (B, C, H, W) in the unit domain, t a float or (B,)."""
        residual, t = self._residual(x, t)
        return _bcast(self.sde.alpha(t) / self.sde.beta(t) ** 2, x) * residual

    def denoise(self, x: torch.Tensor, t) -> torch.Tensor:
        """Tweedie estimate D(x_t, t) of E[x0 | x_t]."""
        residual, t = self._residual(x, t)
        return x / _bcast(self.sde.alpha(t), x) + residual

    def describe(self) -> dict:
        """Everything needed to rebuild this prior: network config, SDE and metadata."""
        return {"network": dict(self.network.config), "sde": self.sde.to_dict(),
                "parameterization": self.parameterization.to_dict(), "metadata": dict(self.metadata)}
