"""Expert denoisers by noise level: one prior made of several trained networks.

A small network cannot be the most accurate at every noise level at once (measured by
``benchmarks/prior_noise_levels.py``): the shipped ``-v1`` networks denoise best at σ ≤ 0.1 and
fail from pure noise, the EDM networks know the global layout at high σ but are less precise at
low σ, and a coarse-scale network (:mod:`.prior`, ``downsample``) sees a whole slice at high σ.
Balaji et al. 2022 (eDiff-I, section 4) split the noise range between expert denoisers;
:class:`NoiseLevelExperts` does the same with two experts and one switch:

    s(x, t) = s_low(x, t)  if σ(t) ≤ σ_switch,   s_high(x, t) otherwise,

with σ(t) = β(t) / α(t) of the shared SDE.  ``low`` may itself be an experts prior whose switches
lie below σ_switch, so a chain of N networks covers the noise range in N pieces.
:func:`choose_switch` picks each σ_switch from measured Tweedie errors on held-out images, and an
experts file (JSON, written by ``scorerecon experts``) stores the chain, lowest noise first, with
the measurements that chose each switch::

    {"format": "scorerecon-experts", "version": "2", "members": [NAME_OR_PATH, ...],
     "switch_sigmas": [σ_1, ...], "metadata": {...}, "selections": [{...}, ...]}

Member paths are relative to the experts file; names are shipped priors.  Version 1 files (one
switch: "low", "high", "switch_sigma", "selection") are read as chains of two.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..atomic import write_json
from ..errors import UserError
from .prior import per_sample_time

FORMAT = "scorerecon-experts"
VERSION = "2"
SHARED_METADATA = ("modality", "image_size", "channels", "dataset", "intensity")  # training details stay with the members


def shared_metadata(low, high) -> dict:
    """What an experts prior says of itself: the high expert's :data:`SHARED_METADATA`, with
    ``dataset`` the datasets of all members joined by '+' (first seen first), as a training run
    on several datasets names them (:func:`scorerecon.priors.config.training_data_name`)."""
    shared = {key: high.metadata[key] for key in SHARED_METADATA if key in high.metadata}
    names = [name for prior in (low, high) for name in str(prior.metadata.get("dataset", "")).split("+") if name]
    if names:
        shared["dataset"] = "+".join(dict.fromkeys(names))
    return shared


class NoiseLevelExperts(nn.Module):
    """The score of ``low`` at σ(t) ≤ ``switch_sigma`` and of ``high`` above it (same SDE);
    ``low`` may be an experts prior whose switches lie below ``switch_sigma``."""

    def __init__(self, low, high, switch_sigma: float, metadata: dict | None = None):
        super().__init__()
        if isinstance(high, NoiseLevelExperts):
            raise UserError("the high-noise expert must be a single-network prior: to chain experts, "
                            "give the experts prior as the low one")
        if isinstance(low, NoiseLevelExperts) and not low.switch_sigmas[-1] < switch_sigma:
            raise UserError(f"the switch σ {switch_sigma:.3g} must lie above the low experts' switches "
                            f"({', '.join(f'{s:.3g}' for s in low.switch_sigmas)})")
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
        self.metadata = dict(metadata) if metadata else shared_metadata(low, high)

    @property
    def members(self) -> list:
        """The single-network experts, lowest noise first."""
        return (self.low.members if isinstance(self.low, NoiseLevelExperts) else [self.low]) + [self.high]

    @property
    def switch_sigmas(self) -> list[float]:
        """The switches between consecutive members, increasing."""
        return (self.low.switch_sigmas if isinstance(self.low, NoiseLevelExperts) else []) + [self.switch_sigma]

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
def evenly_spaced(images: np.ndarray, count: int) -> np.ndarray:
    """``count`` slices of ``images`` evenly spaced from the first to the last (all if fewer)."""
    return images[np.linspace(0, len(images) - 1, min(count, len(images))).round().astype(int)]


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


def choose_switch(sigmas, low_errors, high_errors, floor: float = 0.0) -> float:
    """σ_switch minimising the summed log MSE over the σ grid (log-spaced, so each decade counts
    alike; the log makes the errors relative, so the large ones at high σ do not decide alone)
    when ``low`` serves σ ≤ σ_switch and ``high`` the rest; the switch lies halfway (in log σ)
    between two grid points, or beyond the grid's ends (above ``floor``, the top switch of a
    ``low`` experts prior, where the grid starts)."""
    sigmas = np.asarray(sigmas, float)
    low, high = np.log(np.asarray(low_errors)), np.log(np.asarray(high_errors))
    costs = [low[:k].sum() + high[k:].sum() for k in range(len(sigmas) + 1)]
    k = int(np.argmin(costs))
    if k == 0:
        return float(np.sqrt(floor * sigmas[0]) if floor else sigmas[0] / 2)
    if k == len(sigmas):
        return float(sigmas[-1] * 2)
    return float(np.sqrt(sigmas[k - 1] * sigmas[k]))


# ----------------------------------------------------------------------- files
def write_experts_file(path: str | os.PathLike, members: list[str], switch_sigmas: list[float],
                       metadata: dict | None = None, selections: list[dict] | None = None) -> Path:
    """Write an experts file (atomically): ``members`` lowest noise first, one switch between each
    pair, and the measurement that chose each switch."""
    if len(switch_sigmas) != len(members) - 1 or any(
            not low < high for low, high in zip([0.0, *switch_sigmas], switch_sigmas)):  # positive, increasing
        raise UserError(f"{len(members)} experts need {len(members) - 1} increasing switches, got {switch_sigmas}")
    body = {"format": FORMAT, "version": VERSION, "members": [str(m) for m in members],
            "switch_sigmas": [float(s) for s in switch_sigmas], "metadata": dict(metadata or {}),
            "selections": list(selections or [])}
    path = write_json(path, body)
    path.chmod(0o644)
    return path


def read_experts_body(path: str | os.PathLike) -> dict:
    """The JSON of an experts file as version 2 (members, switch_sigmas, metadata, selections);
    one whose member is itself an experts file is refused."""
    path = Path(path)
    try:
        body = json.loads(path.read_text())
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            raise ValueError("missing scorerecon-experts header")
        if str(body.get("version", "1")) not in ("1", VERSION):
            raise UserError(f"{path} is an experts file of layout version {body['version']!r}, and this "
                            f"scorerecon reads 1 to {VERSION}: upgrade scorerecon")
        if "members" not in body:   # version 1: one switch
            body = {**body, "members": [body["low"], body["high"]], "switch_sigmas": [body["switch_sigma"]],
                    "selections": [body.get("selection") or {}]}
        members, switches = [str(m) for m in body["members"]], [float(s) for s in body["switch_sigmas"]]
        if len(members) < 2 or len(switches) != len(members) - 1:
            raise ValueError(f"{len(members)} members need {len(members) - 1} switches, found {len(switches)}")
        if not isinstance(body.get("metadata") or {}, dict):
            raise ValueError("its metadata is not a table")
        nested = [m for m in members if member_path(m, path).suffix == ".json"]
        if nested:  # a chain lists networks: every reader of the file (loading, digests, extending) relies on it
            raise UserError(f"{path}: expert {nested[0]!r} is itself an experts file; list its members "
                            "instead (scorerecon experts --low THAT_FILE extends a chain)")
    except UserError:
        raise  # its own fix, not the one below
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path} is not a readable scorerecon experts file ({err}): "
                        "rewrite it with 'scorerecon experts'") from None
    selections = list(body.get("selections") or [])
    selections += [{}] * (len(switches) - len(selections))   # one per switch, {} where none was recorded
    return {"members": members, "switch_sigmas": switches, "metadata": body.get("metadata") or {},
            "selections": selections}


def member_path(member: str, experts_file: Path) -> Path:
    """Where a member named in ``experts_file`` lives: a shipped name's file, else a path relative
    to the experts file."""
    from .registry import SHIPPED, shipped_path
    return shipped_path(member) if member in SHIPPED else Path(experts_file).parent / member


def read_experts_file(path: str | os.PathLike, device: str = "cpu") -> NoiseLevelExperts:
    """Load an experts file and its member priors (names, or paths relative to the file)."""
    from .registry import load_prior
    path = Path(path)
    body = read_experts_body(path)
    priors = [load_prior(member_path(member, path), device=device) for member in body["members"]]
    experts = priors[0]
    for prior, switch in zip(priors[1:], body["switch_sigmas"]):
        experts = NoiseLevelExperts(experts, prior, switch)
    experts.metadata = dict(body["metadata"]) or experts.metadata
    return experts.to(device)


def _chain_of(name: str) -> tuple[list[Path | str], list[float], list[dict]]:
    """Members (shipped names or absolute paths), switches and selections of the prior ``name``:
    a chain of one for a single network."""
    from .registry import SHIPPED, prior_file
    path = prior_file(name)
    if path.suffix != ".json":
        return [name if name in SHIPPED else path.resolve()], [], []
    body = read_experts_body(path)
    members = [m if m in SHIPPED else member_path(m, path).resolve() for m in body["members"]]
    return members, body["switch_sigmas"], body["selections"]


def build_experts_file(low: str, high: str, dataset: str, output: str | os.PathLike, *, slices: int = 8,
                       sigmas: int = 25, seed: int = 0) -> tuple[Path, str]:
    """The ``scorerecon experts`` command: measure both priors' Tweedie errors on ``slices``
    evenly spaced validation slices of ``dataset`` at ``sigmas`` log-spaced noise levels over the
    SDE's range (above the top switch when ``low`` is an experts prior, whose chain it extends),
    choose the switch (:func:`choose_switch`) and write the experts file; returns its path and a
    Markdown table of the measurements."""
    from ..atomic import check_output_file
    from ..data.datasets import load_split
    from .registry import SHIPPED, load_prior
    check_output_file(output)  # before the measurements, not after them
    low_prior, high_prior = load_prior(low), load_prior(high)
    members, switches, selections = _chain_of(low)
    floor = switches[-1] if switches else 0.0
    any_switch_above = 2 * floor if floor else 1.0
    NoiseLevelExperts(low_prior, high_prior, any_switch_above)  # same SDE, channels, kinds, or one clear error
    val = load_split(dataset, "val")
    images = evenly_spaced(val, slices)
    sde = high_prior.sde
    lowest, highest = sde.noise_range()
    if floor * 1.05 >= highest:
        raise UserError(f"{low}'s top switch σ {floor:.3g} lies at the top of the noise range ({highest:.3g}): "
                        "no noise level is left for another expert")
    grid = np.geomspace(max(lowest, floor * 1.05), highest, sigmas)
    low_mse = tweedie_errors(low_prior, images, grid, seed)
    high_mse = tweedie_errors(high_prior, images, grid, seed)
    switch = choose_switch(grid, low_mse, high_mse, floor)
    output = Path(output)

    def reference(member) -> str:
        return member if member in SHIPPED else os.path.relpath(Path(member).resolve(), output.resolve().parent)

    members = [reference(m) for m in members] + [reference(high)]
    selection = {"dataset": f"{dataset} val", "slices": len(images), "seed": seed, "sigmas": grid.tolist(),
                 "low": reference(low), "high": members[-1], "low_mse": low_mse, "high_mse": high_mse,
                 "rule": "switch minimising the summed log MSE over the σ grid (choose_switch)"}
    metadata = {"name": output.stem, **shared_metadata(low_prior, high_prior), "experts": members}
    path = write_experts_file(output, members, [*switches, switch], metadata, [*selections, selection])
    return path, selection_table(grid, low_mse, high_mse, switch, [selection["low"], selection["high"]])


def selection_table(grid, low_mse, high_mse, switch: float, members) -> str:
    """Tweedie PSNR (peak 1) of both experts per σ, and which one the experts prior uses."""
    lines = [f"| σ | {members[0]} (low) PSNR dB | {members[1]} (high) PSNR dB | used |", "|---|---|---|---|"]
    for sigma, lo, hi in zip(grid, low_mse, high_mse):
        used = "low" if sigma <= switch else "high"
        lines.append(f"| {sigma:.3g} | {-10 * math.log10(lo):.2f} | {-10 * math.log10(hi):.2f} | {used} |")
    return "\n".join(lines) + f"\n\nswitch σ = {switch:.3g}"
