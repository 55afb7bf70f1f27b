"""BART's ``.cfl`` / ``.hdr`` files: arrays, images and k-space measurements.

The Berkeley Advanced Reconstruction Toolbox (Uecker et al.) stores an array as a pair of files
beside each other: ``NAME.hdr``, text whose first line is ``# Dimensions`` and whose second line
lists the size of each axis (16 of them, trailing ones 1), and ``NAME.cfl``, the samples as
complex64 (interleaved little-endian float32 real and imaginary parts) in column-major (Fortran)
order.  Further ``# Command`` / ``# Files`` sections of the header are BART's bookkeeping and are
ignored.  Users name a pair by ``NAME.cfl`` (not ``.hdr``, which is also the header of an Analyze
pair); BART names it by ``NAME``, and :func:`read_cfl` / :func:`write_cfl` take both.

BART's axes are (READ, PHS1, PHS2, COIL, MAPS, TE, COEFF, COEFF2, ITER, CSHIFT, TIME, TIME2,
LEVEL, SLICE, AVG, BATCH).  Ours are:

* k-space (a measurement): BART (READ, PHS1, 1, COIL) is our (coils, H, W) with H the read-out and
  W the phase encoding, the fastMRI orientation; the k-space centre at index N/2 in both
  (BART's centred FFT, ``bart fft -u``, is our ``fft2c`` on even sizes).  Samples that are exactly
  zero in every coil were not measured: the mask is where any coil is non-zero, as ``bart
  pattern`` reads it.  Sensitivity maps are estimated by ESPIRiT on first use, as for fastMRI
  files without maps.
* images: BART (X, Y) is our (H, W) and (X, Y, SLICES) along PHS2 our (slices, H, W).  A cfl file
  has no spacing and no orientation: images are read as stored, with spacing None, and written
  without them; complex images are read as magnitude (as every reader does).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_path, check_output_file
from ..errors import UserError
from .measurement import Measurement

BART_AXES = 16
READ, PHS1, PHS2, COIL = range(4)


def cfl_pair(path: str | os.PathLike) -> tuple[Path, Path]:
    """The (``.hdr``, ``.cfl``) paths of ``NAME.cfl`` or of the bare ``NAME`` (BART's own way)."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix.lower() == ".cfl" else path
    return stem.parent / f"{stem.name}.hdr", stem.parent / f"{stem.name}.cfl"


def read_cfl(path: str | os.PathLike) -> np.ndarray:
    """The complex64 array of a BART file pair, with all its axes (trailing ones dropped)."""
    header, data_path = cfl_pair(path)
    for needed in (header, data_path):
        if not needed.is_file():
            raise UserError(f"{needed} does not exist: a BART array is a pair of files, NAME.hdr and NAME.cfl")
    dims = _header_dims(header)
    expected = int(np.prod(dims)) * 8
    found = data_path.stat().st_size
    if found != expected:
        raise UserError(f"{data_path.name} holds {found} bytes but its header's dimensions {dims} need "
                        f"{expected} (complex64): the pair is truncated or mismatched, write it again")
    while len(dims) > 1 and dims[-1] == 1:
        dims.pop()
    return np.fromfile(data_path, dtype="<c8").reshape(dims, order="F")


def _header_dims(header: Path) -> list[int]:
    """The sizes on the line after ``# Dimensions``; a UserError when there is no such line."""
    lines = [line.strip() for line in header.read_text(errors="replace").splitlines()]
    try:
        sizes = lines[lines.index("# Dimensions") + 1].split()
        dims = [int(size) for size in sizes]
    except (ValueError, IndexError):
        raise UserError(f"{header} is not a BART header (no '# Dimensions' line followed by the "
                        "sizes): pass the .hdr/.cfl pair written by BART or scorerecon") from None
    if not dims or min(dims) < 1:
        raise UserError(f"{header} gives dimensions {dims}: every size must be a positive integer")
    return dims


def write_cfl(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as a BART pair, each file atomically (the ``.cfl`` first, then the header)."""
    array = np.asarray(array, dtype=np.complex64)
    if array.ndim > BART_AXES:
        raise UserError(f"a BART array has at most {BART_AXES} axes, this one {array.ndim}")
    header, data_path = cfl_pair(path)
    check_output_file(header)
    dims = list(array.shape) + [1] * (BART_AXES - array.ndim)
    with atomic_path(data_path, suffix=".cfl") as tmp:
        np.asfortranarray(array).ravel(order="F").astype("<c8").tofile(tmp)
    with atomic_path(header, suffix=".hdr") as tmp:
        tmp.write_text("# Dimensions\n" + " ".join(str(d) for d in dims) + "\n")


def image_from_cfl(array: np.ndarray, path: Path) -> np.ndarray:
    """BART (X, Y) or (X, Y, SLICES) as our (H, W) or (slices, H, W)."""
    if array.ndim > 3:
        raise UserError(f"{path.name} has BART dimensions {list(array.shape)}: an image has only READ, "
                        "PHS1 and PHS2 (slices); pick one coil or map first (bart slice)")
    return np.moveaxis(array, 2, 0) if array.ndim == 3 else array.reshape(array.shape[0], -1)


def image_to_cfl(volume: np.ndarray) -> np.ndarray:
    """Our (H, W) or (slices, H, W) as BART (X, Y) or (X, Y, SLICES): the inverse of
    :func:`image_from_cfl`."""
    return np.moveaxis(volume, 0, 2) if volume.ndim == 3 else volume


def kspace_from_bart(kspace: np.ndarray) -> np.ndarray:
    """BART (READ, PHS1[, 1[, COIL]]) k-space as our (coils, H, W)."""
    kspace = kspace.reshape(*kspace.shape[:2], 1, -1)
    return np.ascontiguousarray(np.moveaxis(kspace[:, :, 0, :], -1, 0))


def kspace_to_bart(kspace: np.ndarray) -> np.ndarray:
    """Our (coils, H, W) k-space as BART's (READ, PHS1, 1, COIL)."""
    return np.moveaxis(np.asarray(kspace), 0, -1)[:, :, None, :]


def read_cfl_measurement(path: str | os.PathLike) -> Measurement:
    """2-D k-space in a BART pair, (READ, PHS1, 1, COIL), as an MRI ``Measurement`` (module
    docstring); no ground truth, ``intensity_scale`` the peak of the zero-filled RSS image."""
    from ..operators.coils import rss
    from ..operators.mri import ifft2c
    header, _ = cfl_pair(path)
    array = read_cfl(path)
    if array.ndim < 2 or any(size > 1 for axis, size in enumerate(array.shape) if axis not in (READ, PHS1, COIL)):
        raise UserError(f"{header.stem} has BART dimensions {list(array.shape)}: scorerecon reconstructs "
                        "2-D k-space (READ, PHS1, 1, COIL); take one slice first, e.g. 'bart slice 2 0 IN OUT'")
    kspace = kspace_from_bart(array)
    if not np.all(np.isfinite(kspace)):
        raise UserError(f"{header.stem} contains NaN or Inf values: clean the k-space first")
    mask = (np.abs(kspace) > 0).any(axis=0).astype(np.uint8)
    shape = list(kspace.shape[1:])
    peak = float(rss(ifft2c(torch.from_numpy(kspace)), dim=0).max())
    attrs = {"source": "bart", "source_file": header.stem, "intensity_scale": peak if peak > 0 else 1.0}
    geometry = {"image_shape": shape, "output_shape": shape, "coils": int(kspace.shape[0])}
    return Measurement(modality="mri", data=kspace, mask=mask, geometry=geometry, attrs=attrs).validate()
