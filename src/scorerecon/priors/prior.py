"""The prior interface the solvers use: a score model s(x, t) ≈ ∇_x log p_t(x) plus its SDE.

Any prior (learned :class:`ScorePrior`, exact :class:`scorerecon.priors.analytic.GaussianPrior`)
offers

* ``sde``                      the forward SDE (:mod:`scorerecon.priors.sde`), p_0t = N(α x0, β² I);
* ``score(x, t)``              x in the unit domain, shape (B, C, H, W); t a float or (B,);
* ``denoise(x, t)``            Tweedie's formula E[x0 | x_t] = (x_t + β(t)² ∇ log p_t(x_t)) / α(t);
* ``check_image_size(H, W)``   UserError when the prior cannot be applied to that size;
* ``size_multiple``            (learned priors) image sides must be multiples of it;
* ``metadata``                 modality, crop size, channels, training information.

Coarse-scale priors (metadata ``downsample`` = f > 1, trained on images averaged over f × f
blocks) are applied to full-size images through the block means: the mean of f² pixels of
x_t = α x0 + β z is α P x0 + (β / f) z' with P the block average, a sample of the same SDE at the
noise level σ / f.  So D(x_t, t) = U D_f(c P x_t, t') with β(t')/α(t') = σ(t) / f,
c = α(t')/α(t), and U bilinear upsampling: the posterior mean of the coarse image, accurate
where the noise hides the fine detail anyway (high σ; ``scorerecon experts`` measures where).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from .network import ScoreUNet
from .parameterization import Parameterization
from .sde import SDE, _as_tensor, _bcast


LAYOUTS = ("default", "channels_last")


def chosen_layout() -> str:
    """``SCORERECON_LAYOUT``: ``channels_last``, or ``default`` (also when unset or empty) for
    PyTorch's default NCHW layout; any other value is a UserError."""
    chosen = os.environ.get("SCORERECON_LAYOUT") or "default"
    if chosen not in LAYOUTS:
        raise UserError(f"SCORERECON_LAYOUT={chosen!r} is not a layout: set it to channels_last, or to "
                        "default (or unset it) for PyTorch's default NCHW layout")
    return chosen


@contextmanager
def convolution_layout(prior) -> Iterator[bool]:
    """With ``SCORERECON_LAYOUT=channels_last`` (:func:`chosen_layout`), run the prior's networks
    with their convolution weights in ``torch.channels_last`` while inside, on the CPU; yields
    whether it did.  The convolutions then run in oneDNN's channels-last kernels, with the same
    results up to the order of the sums.  Off by default: on the 2-core AVX2 development hosts it
    was no faster (``benchmarks/denoiser_layout.py`` measures both layouts, per call and per
    reconstruction, on the host at hand).  On leaving, every weight gets back the very tensor it
    had.  Left alone: priors without a network and networks on a GPU (not measured there)."""
    members = getattr(prior, "members", [prior])
    networks = [m.network for m in members if isinstance(getattr(m, "network", None), nn.Module)]
    weights = [w for n in networks for w in n.parameters() if w.dim() == 4]
    if chosen_layout() == "default" or not weights or any(w.device.type != "cpu" for w in weights):
        yield False
        return
    saved = [(w, w.data) for w in weights]
    try:
        for w, data in saved:
            w.data = data.contiguous(memory_format=torch.channels_last)
        yield True
    finally:
        for w, data in saved:
            w.data = data


def per_sample_time(t, x: torch.Tensor) -> torch.Tensor:
    """t as a float32 tensor of shape (B,) on x's device (a float or () is broadcast)."""
    t = _as_tensor(t).to(device=x.device, dtype=torch.float32)
    return t.reshape(-1).expand(x.shape[0])


def denoise_through_block_means(denoise, sde: SDE, x: torch.Tensor, t: torch.Tensor, factor: int) -> torch.Tensor:
    """U D_f(c P x_t, t') (module docstring): the denoiser ``denoise(x, t)`` of f × f block means
    applied to full-size x_t (B, C, H, W) at times t (B,), upsampled bilinearly."""
    sigma = sde.beta(t) / sde.alpha(t)
    t_coarse = sde.time_of_noise(sigma / factor).to(torch.float32)
    coarse = F.avg_pool2d(x, factor) * _bcast(sde.alpha(t_coarse) / sde.alpha(t), x)
    return F.interpolate(denoise(coarse, t_coarse), scale_factor=factor, mode="bilinear", align_corners=False)


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
    def downsample(self) -> int:
        """f of a coarse-scale prior (trained on f × f block means); 1 for full resolution."""
        return int(self.metadata.get("downsample", 1))

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this: f · 2^(levels − 1) of the U-Net."""
        return self.downsample * 2 ** (self.network.levels - 1)

    def check_image_size(self, height: int, width: int) -> None:
        """UserError unless the U-Net accepts H×W (after the block means of a coarse-scale prior)."""
        f = self.downsample
        if height % f or width % f:
            raise UserError(f"image size {height}×{width} is not a multiple of {f}, the block size of this "
                            "coarse-scale prior: crop or pad the image")
        self.network.check_image_size(height // f, width // f)

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        return self.score(x, t)

    def _residual(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """(D(x_t, t) − x_t / α(t), t as (B,)), through the block means when downsample > 1."""
        self.check_image_size(x.shape[-2], x.shape[-1])
        t = per_sample_time(t, x)
        if self.downsample == 1:
            return self.parameterization.residual(self.network, x, t, self.sde), t
        denoised = denoise_through_block_means(self._denoise_at_network_scale, self.sde, x, t, self.downsample)
        return denoised - x / _bcast(self.sde.alpha(t), x), t

    def _denoise_at_network_scale(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x / _bcast(self.sde.alpha(t), x) + self.parameterization.residual(self.network, x, t, self.sde)

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
