"""Shipped priors by name, and ``load_prior(name_or_path)``.

Names resolve to ``scorerecon/priors/weights/<name>.json`` (an experts file,
:mod:`scorerecon.priors.experts`) or ``<name>.safetensors`` inside the installed package; anything
else is taken as a path to a ``.safetensors`` prior file, an experts ``.json`` file or a training
``checkpoint.pt``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..errors import UserError
from .checkpoint import read_prior_file
from .experts import NoiseLevelExperts, member_path, read_experts_body, read_experts_file
from .prior import ScorePrior

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED = {
    # The defaults: two trained networks split by noise level (priors.experts), the switch chosen on
    # validation slices by `scorerecon experts` (docs/model_cards/NAME/): for head-ct, those of a
    # patient no network saw (chest-ct val).
    "head-ct": "CT prior (head and chest), unit HU window [-1000, 2000]: ct-low at low noise, ct-full at high noise",
    "brain-mri": "T1 brain MRI magnitude prior, peak 1: mri-low at low noise, brain-mri-coarse at high noise",
    # EDM output scaling, trained with configs/NAME.toml (64² crops) then configs/NAME-slices.toml
    # (whole slices): right at every noise level, knows the layout of a slice.
    "head-ct-edm": "CT head prior (EDM), trained with configs/head-ct.toml then configs/head-ct-slices.toml",
    "brain-mri-edm": "T1 brain MRI prior (EDM), trained with configs/brain-mri.toml then configs/brain-mri-slices.toml",
    # brain-mri-edm continued on whole slices averaged over 4 × 4 blocks (a coarse-scale prior,
    # priors.prior): sees a whole 64² slice, more accurate than brain-mri-edm at every σ ≥ 0.9.
    "brain-mri-coarse": "T1 brain MRI coarse-scale prior (EDM, 4 × 4 block means), trained with "
                        "configs/brain-mri-coarse.toml",
    # The first release (noise prediction, 4,000 steps): more accurate below the experts' switch,
    # useless from pure noise (benchmarks/prior_noise_levels.py).
    "head-ct-v1": "first head-ct release: noise-prediction output, 4,000 steps (configs/head-ct.toml at 772290b)",
    "brain-mri-v1": "first brain-mri release: noise-prediction output, 4,000 steps (configs/brain-mri.toml at 772290b)",
    # A first release continued on the noise levels its default serves (below the switch), where
    # warm-started reconstruction spends every step.
    "head-ct-low": "head-ct-v1 continued 10,000 steps on σ ≤ 0.5 only (configs/head-ct-low.toml)",
    "brain-mri-low": "brain-mri-v1 continued 6,000 steps on σ ≤ 1 only (configs/brain-mri-low.toml)",
    # The low-noise expert on two subjects: brain-mri-low continued on Colin27 and a clinical patient.
    "mri-low": "brain-mri-low continued on Colin27 and a clinical T1 patient, σ ≤ 1 (configs/mri-low.toml)",
    # Trained on a GPU on two CT patients (head-ct + chest-ct train), chosen on a third (chest-ct val).
    "ct-low": "head-ct-low continued 900 steps on a GPU on head and chest CT, σ ≤ 1 (configs/ct-low.toml)",
    "ct-full": "head-ct-edm continued 900 steps on a GPU on whole head and chest CT slices (configs/ct-full.toml)",
}


def shipped_path(name: str) -> Path:
    """Where the shipped prior ``name`` lives in the package: its experts file where there is
    one, else its weight file."""
    experts = WEIGHTS_DIR / f"{name}.json"
    return experts if experts.is_file() else WEIGHTS_DIR / f"{name}.safetensors"


def prior_file(name_or_path: str | os.PathLike) -> Path:
    """The file a prior name or path loads from: a shipped prior's experts or weight file, else the
    path itself (one clear error when neither exists)."""
    text = str(name_or_path)
    if text in SHIPPED:
        path = shipped_path(text)
        if not path.is_file():
            raise UserError(f"prior {text!r} is not installed in {WEIGHTS_DIR}: reinstall scorerecon, "
                            "or pass the path of a prior file")
        return path
    path = Path(text).expanduser()
    if not path.is_file():
        raise UserError(f"prior {text!r} is neither a shipped prior ({', '.join(SHIPPED)}) nor an "
                        "existing file: give a name or the path of a .safetensors prior")
    return path


def load_prior(name_or_path: str | os.PathLike, device: str = "cpu") -> ScorePrior | NoiseLevelExperts:
    """Load a shipped prior by name (:data:`SHIPPED`) or a prior, experts or checkpoint file by path."""
    path = prior_file(name_or_path)
    if path.suffix == ".json":
        return read_experts_file(path, device=device)
    return read_prior_file(path).to(device)


def prior_digest(name_or_path: str | os.PathLike) -> str:
    """What a prior computes with, as 16 hex digits of SHA-256: the bytes of its weight file, or
    for experts the digests of its members and the switch σs (not the experts file's descriptive
    metadata).  A name says which prior; this says which weights it had when something was measured."""
    path = prior_file(name_or_path)
    if path.suffix != ".json":
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    body = read_experts_body(path)
    parts = {"members": [prior_digest(member_path(m, path)) for m in body["members"]],
             "switch_sigmas": body["switch_sigmas"]}
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]
