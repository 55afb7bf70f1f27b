"""Shipped priors by name, and ``load_prior(name_or_path)``.

Names resolve to ``scorerecon/priors/weights/<name>.safetensors`` inside the installed package;
anything else is taken as a path to a ``.safetensors`` prior file or a training ``checkpoint.pt``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UserError
from .checkpoint import read_prior_file
from .prior import ScorePrior

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED = {
    "head-ct": "CT head prior, unit HU window [-1000, 2000], trained with configs/head-ct.toml "
               "(64² crops) then configs/head-ct-slices.toml (whole slices)",
    "brain-mri": "T1 brain MRI magnitude prior, peak 1, trained with configs/brain-mri.toml "
                 "(64² crops) then configs/brain-mri-slices.toml (whole slices)",
    # The first release (noise prediction, 4,000 steps): more accurate at σ ≤ 1, so better for
    # warm-started reconstruction; useless from pure noise (benchmarks/prior_noise_levels.py).
    "head-ct-v1": "first head-ct release: noise-prediction output, 4,000 steps (configs/head-ct.toml at 772290b)",
    "brain-mri-v1": "first brain-mri release: noise-prediction output, 4,000 steps (configs/brain-mri.toml at 772290b)",
}


def shipped_path(name: str) -> Path:
    """Where the shipped prior ``name`` lives in the package."""
    return WEIGHTS_DIR / f"{name}.safetensors"


def load_prior(name_or_path: str | os.PathLike, device: str = "cpu") -> ScorePrior:
    """Load a shipped prior by name (:data:`SHIPPED`) or a prior / checkpoint file by path."""
    text = str(name_or_path)
    if text in SHIPPED:
        path = shipped_path(text)
        if not path.is_file():
            raise UserError(f"prior {text!r} is not installed: train it with 'scorerecon train --config "
                            f"configs/{text}.toml' and copy the exported file to {path}, or pass a file path")
    else:
        path = Path(text).expanduser()
        if not path.is_file():
            raise UserError(f"prior {text!r} is neither a shipped prior ({', '.join(SHIPPED)}) nor an "
                            "existing file: give a name or the path of a .safetensors prior")
    return read_prior_file(path).to(device)
