"""The Berkeley Advanced Reconstruction Toolbox (BART) as an optional reference, via its CLI.

BART (Uecker et al., Debian package ``bart``) reads and writes ``.cfl`` / ``.hdr`` pairs: the
header lists the dimensions, the ``.cfl`` file holds complex64 samples in column-major
(Fortran) order.  Its MRI dimension order is (X, Y, Z, COIL, MAPS, ...); our k-space
(coils, H, W) therefore becomes (H, W, 1, coils).  BART is never required: :func:`available`
tells whether the executable is on the PATH, and callers skip cleanly without it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np


def available() -> bool:
    """True when the ``bart`` executable is on the PATH."""
    return shutil.which("bart") is not None


def write_cfl(stem: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as ``stem.hdr`` + ``stem.cfl`` (complex64, column-major)."""
    array = np.asarray(array, dtype=np.complex64)
    dims = list(array.shape) + [1] * max(0, 16 - array.ndim)
    Path(f"{stem}.hdr").write_text("# Dimensions\n" + " ".join(str(d) for d in dims) + "\n")
    np.asfortranarray(array).ravel(order="F").tofile(f"{stem}.cfl")


def read_cfl(stem: str | os.PathLike) -> np.ndarray:
    """Read ``stem.cfl`` with the dimensions of ``stem.hdr`` (trailing singleton axes dropped)."""
    lines = Path(f"{stem}.hdr").read_text().splitlines()
    dims = [int(d) for d in lines[1].split()]
    while len(dims) > 1 and dims[-1] == 1:
        dims.pop()
    data = np.fromfile(f"{stem}.cfl", dtype=np.complex64)
    return data.reshape(dims, order="F")


def kspace_to_bart(kspace: np.ndarray) -> np.ndarray:
    """(coils, H, W) → BART's (H, W, 1, coils)."""
    return np.moveaxis(np.asarray(kspace), 0, -1)[:, :, None, :]


def maps_from_bart(maps: np.ndarray, coils: int) -> np.ndarray:
    """BART (H, W[, 1, coils]) sensitivities → (coils, H, W)."""
    maps = np.asarray(maps).reshape(maps.shape[0], maps.shape[1], coils)
    return np.moveaxis(maps, -1, 0)


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
        return read_cfl(Path(folder) / output)
