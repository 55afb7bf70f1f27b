"""The Berkeley Advanced Reconstruction Toolbox (BART) as an optional reference, via its CLI.

BART (Uecker et al., Debian package ``bart``) reads and writes ``.cfl`` / ``.hdr`` pairs
(:mod:`scorerecon.data.cfl`, which also maps our k-space and coil maps (coils, H, W) to its
(H, W, 1, coils) and back).  BART is never required: :func:`available` tells whether the
executable is on the PATH, and callers skip cleanly without it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..data.cfl import kspace_from_bart, kspace_to_bart, read_cfl, write_cfl
from ..errors import UserError

__all__ = ["available", "kspace_from_bart", "kspace_to_bart", "run"]


def available() -> bool:
    """True when the ``bart`` executable is on the PATH."""
    return shutil.which("bart") is not None


def run(command: list[str], inputs: dict[str, np.ndarray], output: str) -> np.ndarray:
    """Run ``bart COMMAND`` in a temporary folder with ``inputs`` written as cfl files.

    ``command`` names files by the keys of ``inputs`` and by ``output``; returns the output array.
    Raises ``RuntimeError`` with BART's message when it fails.
    """
    with tempfile.TemporaryDirectory(prefix="scorerecon-bart-") as folder:
        for name, array in inputs.items():
            write_cfl(Path(folder) / name, array)
        done = subprocess.run(["bart", *command], cwd=folder, capture_output=True, text=True, check=False,
                              env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
        if done.returncode != 0:
            raise RuntimeError(f"bart {command[0]} failed: {done.stderr.strip() or done.stdout.strip()}")
        try:
            return read_cfl(Path(folder) / output)
        except UserError as err:  # BART's own output: not the user's mistake
            raise RuntimeError(f"bart {command[0]} wrote an unreadable {output}: {err}") from None
