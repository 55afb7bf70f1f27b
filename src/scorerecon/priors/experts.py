"""Expert denoisers by noise level: one prior made of two trained networks.

A small network cannot be the most accurate at every noise level at once (measured by
``benchmarks/prior_noise_levels.py``): the shipped ``-v1`` networks denoise best at σ ≤ 0.1 and
fail from pure noise, the EDM networks know the global layout at high σ but are less precise at
low σ.  Balaji et al. 2022 (eDiff-I, section 4) split the noise range between expert denoisers;
:class:`NoiseLevelExperts` does the same with two experts and one switch:

    s(x, t) = s_low(x, t)  if σ(t) ≤ σ_switch,   s_high(x, t) otherwise,

with σ(t) = β(t) / α(t) of the shared SDE.  :func:`choose_switch` picks σ_switch from measured
Tweedie errors of both experts on held-out images, and an experts file (JSON, written by
``scorerecon experts``) stores the choice with the members' names and the measurements::

    {"format": "scorerecon-experts", "version": "1", "low": NAME_OR_PATH, "high": NAME_OR_PATH,
     "switch_sigma": σ_switch, "metadata": {...}, "selection": {...}}

Member paths are relative to the experts file; names are shipped priors.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..atomic import atomic_path
from ..errors import UserError
from .prior import per_sample_time

FORMAT = "scorerecon-experts"
VERSION = "1"
SHARED_METADATA = ("modality", "image_size", "channels", "dataset", "intensity")  # training details stay with the members


class NoiseLevelExperts(nn.Module):
    """The score of ``low`` at σ(t) ≤ ``switch_sigma`` and of ``high`` above it (same SDE)."""

    def __init__(self, low, high, switch_sigma: float, metadata: dict | None = None):
        super().__init__()
        if isinstance(low, NoiseLevelExperts) or isinstance(high, NoiseLevelExperts):
            raise UserError("an expert must be a single-network prior, not another experts prior")
        if low.sde.to_dict() != high.sde.to_dict():
            raise UserError("expert priors must share one SDE (found "
                            f"{low.sde.to_dict()} and {high.sde.to_dict()}): combine priors trained alike")
        channels = [int(p.metadata.get("channels", 1)) for p in (low, high)]
        if channels[0] != channels[1]:
            raise UserError(f"expert priors must have the same channels ({channels[0]} and {channels[1]})")
        if not switch_sigma > 0:
            raise UserError(f"switch_sigma must be positive, got {switch_sigma}")
        self.low, self.high = low, high
        self.sde = high.sde
        self.switch_sigma = float(switch_sigma)
        self.metadata = dict(metadata) if metadata else \
            {key: high.metadata[key] for key in SHARED_METADATA if key in high.metadata}

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this for both experts."""
        return math.lcm(*(getattr(p, "size_multiple", 1) for p in (self.low, self.high)))

    def check_image_size(self, height: int, width: int) -> None:
        self.low.check_image_size(height, width)
        self.high.check_image_size(height, width)

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        return self.score(x, t)

    def score(self, x: torch.Tensor, t) -> torch.Tensor:
        return self._route("score", x, t)

    def denoise(self, x: torch.Tensor, t) -> torch.Tensor:
        return self._route("denoise", x, t)

    def _route(self, method: str, x: torch.Tensor, t) -> torch.Tensor:
        """Evaluate each sample with the expert of its noise level (one call per expert)."""
        t = per_sample_time(t, x)
        use_low = self.sde.beta(t) / self.sde.alpha(t) <= self.switch_sigma
        if bool(use_low.all()):
            return getattr(self.low, method)(x, t)
        if not bool(use_low.any()):
            return getattr(self.high, method)(x, t)
        out = torch.empty_like(x)
        out[use_low] = getattr(self.low, method)(x[use_low], t[use_low])
        out[~use_low] = getattr(self.high, method)(x[~use_low], t[~use_low])
        return out


# ----------------------------------------------------------------------- choosing the switch
@torch.no_grad()
def tweedie_errors(prior, images: np.ndarray, sigmas, seed: int = 0, batch: int = 4) -> list[float]:
    """Mean squared error of one Tweedie step D(α(t) (x0 + σ z), t) against x0 per σ, with t the
    time of noise level β(t)/α(t) = σ; the same noise z for every σ and prior."""
    x0 = torch.as_tensor(np.asarray(images, np.float32))[:, None]
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=gen)
    errors = []
    for sigma in sigmas:
        t = prior.sde.time_of_noise(float(sigma))
        alpha = float(prior.sde.alpha(t))
        total = 0.0
        for start in range(0, len(x0), batch):
            clean = x0[start:start + batch]
            noisy = alpha * (clean + float(sigma) * noise[start:start + batch])
            total += float(((prior.denoise(noisy, t) - clean) ** 2).sum())
        errors.append(total / x0.numel())
    return errors


def choose_switch(sigmas, low_errors, high_errors) -> float:
    """σ_switch minimising the summed log MSE over the σ grid (log-spaced, so each decade counts
    alike; the log makes the errors relative, so the large ones at high σ do not decide alone)
    when ``low`` serves σ ≤ σ_switch and ``high`` the rest; the switch lies halfway (in log σ)
    between two grid points, or beyond the grid's ends."""
    sigmas = np.asarray(sigmas, float)
    low, high = np.log(np.asarray(low_errors)), np.log(np.asarray(high_errors))
    costs = [low[:k].sum() + high[k:].sum() for k in range(len(sigmas) + 1)]
    k = int(np.argmin(costs))
    if k == 0:
        return float(sigmas[0] / 2)
    if k == len(sigmas):
        return float(sigmas[-1] * 2)
    return float(np.sqrt(sigmas[k - 1] * sigmas[k]))


# ----------------------------------------------------------------------- files
def write_experts_file(path: str | os.PathLike, low: str, high: str, switch_sigma: float,
                       metadata: dict | None = None, selection: dict | None = None) -> Path:
    """Write an experts file (atomically)."""
    body = {"format": FORMAT, "version": VERSION, "low": str(low), "high": str(high),
            "switch_sigma": float(switch_sigma), "metadata": dict(metadata or {}),
            "selection": dict(selection or {})}
    path = Path(path)
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(body, indent=2) + "\n")
    path.chmod(0o644)
    return path


def read_experts_file(path: str | os.PathLike, device: str = "cpu") -> NoiseLevelExperts:
    """Load an experts file and its two member priors (names, or paths relative to the file)."""
    from .registry import SHIPPED, load_prior, shipped_path
    path = Path(path)
    try:
        body = json.loads(path.read_text())
        if body.get("format") != FORMAT:
            raise ValueError("missing scorerecon-experts header")
        members = [body["low"], body["high"]]
        switch = float(body["switch_sigma"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path} is not a readable scorerecon experts file ({err}): "
                        "rewrite it with 'scorerecon experts'") from None
    priors = []
    for member in members:
        member_path = shipped_path(member) if member in SHIPPED else path.parent / member
        if member_path.suffix == ".json":
            raise UserError(f"{path}: expert {member!r} is itself an experts file; "
                            "name single-network priors (.safetensors) as experts")
        priors.append(load_prior(member_path, device=device))
    return NoiseLevelExperts(*priors, switch, body.get("metadata")).to(device)


def build_experts_file(low: str, high: str, dataset: str, output: str | os.PathLike, *, slices: int = 8,
                       sigmas: int = 25, seed: int = 0) -> tuple[Path, str]:
    """The ``scorerecon experts`` command: measure both priors' Tweedie errors on ``slices``
    evenly spaced validation slices of ``dataset`` at ``sigmas`` log-spaced noise levels over the
    SDE's range, choose the switch (:func:`choose_switch`) and write the experts file; returns its
    path and a Markdown table of the measurements."""
    from ..data.datasets import load_split
    from .registry import SHIPPED, load_prior
    low_prior, high_prior = load_prior(low), load_prior(high)
    NoiseLevelExperts(low_prior, high_prior, 1.0)  # same SDE and channels, or one clear error
    val = load_split(dataset, "val")
    images = val[np.linspace(0, len(val) - 1, min(slices, len(val))).round().astype(int)]
    sde = high_prior.sde
    grid = np.geomspace(float(sde.noise_level(sde.eps).exp()), float(sde.noise_level(sde.T).exp()), sigmas)
    low_mse = tweedie_errors(low_prior, images, grid, seed)
    high_mse = tweedie_errors(high_prior, images, grid, seed)
    switch = choose_switch(grid, low_mse, high_mse)
    output = Path(output)
    members = [m if m in SHIPPED else os.path.relpath(Path(m).resolve(), output.resolve().parent)
               for m in (low, high)]
    selection = {"dataset": f"{dataset} val", "slices": len(images), "seed": seed, "sigmas": grid.tolist(),
                 "low_mse": low_mse, "high_mse": high_mse,
                 "rule": "switch minimising the summed log MSE over the σ grid (choose_switch)"}
    shared = {key: high_prior.metadata[key] for key in SHARED_METADATA if key in high_prior.metadata}
    metadata = {"name": output.stem, **shared, "experts": {"low": members[0], "high": members[1]}}
    path = write_experts_file(output, *members, switch, metadata, selection)
    return path, selection_table(grid, low_mse, high_mse, switch, members)


def selection_table(grid, low_mse, high_mse, switch: float, members) -> str:
    """Tweedie PSNR (peak 1) of both experts per σ, and which one the experts prior uses."""
    lines = [f"| σ | {members[0]} (low) PSNR dB | {members[1]} (high) PSNR dB | used |", "|---|---|---|---|"]
    for sigma, lo, hi in zip(grid, low_mse, high_mse):
        used = "low" if sigma <= switch else "high"
        lines.append(f"| {sigma:.3g} | {-10 * math.log10(lo):.2f} | {-10 * math.log10(hi):.2f} | {used} |")
    return "\n".join(lines) + f"\n\nswitch σ = {switch:.3g}"
