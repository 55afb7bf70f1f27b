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
  pattern`` reads it (so exact zeros inside acquired lines, e.g. a zero-padded read-out, make the
  mask two-dimensional).  Sensitivity maps are estimated by ESPIRiT on first use, as for fastMRI
  files without maps.
* images: BART (X, Y) is our (H, W) and (X, Y, SLICES) along PHS2 our (slices, H, W).  A cfl file
  has no spacing and no orientation: images are read as stored, with spacing None, and written
  without them.  Images we write are real (imaginary part 0) and read back as they were, signs
  included (HU); complex images are read as magnitude (as every reader does).
* writing ``NAME.cfl`` replaces ``NAME.hdr`` too, as BART does (whatever that file was).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, check_output_file
from ..errors import UserError

AXIS_NAMES = ("READ", "PHS1", "PHS2", "COIL", "MAPS", "TE", "COEFF", "COEFF2", "ITER", "CSHIFT", "TIME",
              "TIME2", "LEVEL", "SLICE", "AVG", "BATCH")
READ, PHS1, PHS2, COIL = range(4)


def cfl_pair(path: str | os.PathLike) -> tuple[Path, Path]:
    """The (``.hdr``, ``.cfl``) paths of ``NAME.cfl`` (its suffix's case kept) or of the bare
    ``NAME`` (BART's own way)."""
    path = Path(path)
    if path.suffix.lower() == ".cfl":
        return path.with_suffix(".hdr"), path
    return path.parent / f"{path.name}.hdr", path.parent / f"{path.name}.cfl"


def read_cfl(path: str | os.PathLike) -> np.ndarray:
    """The complex64 array of a BART file pair, with all its axes (trailing ones dropped)."""
    header, data_path = cfl_pair(path)
    for needed in (header, data_path):
        if not needed.is_file():
            problem = "is a folder" if needed.is_dir() else "does not exist"
            raise UserError(f"{needed} {problem}: a BART array is a pair of files, NAME.hdr and NAME.cfl")
    dims = _header_dims(header)
    expected = int(np.prod(dims)) * 8
    found = data_path.stat().st_size
    if found != expected:
        raise UserError(f"{data_path.name} holds {found} bytes but its header's dimensions {dims} need "
                        f"{expected} (complex64): the pair is truncated or mismatched, write it again")
    while len(dims) > 1 and dims[-1] == 1:
        dims.pop()
    return np.fromfile(_readable(data_path), dtype="<c8").reshape(dims, order="F")


def _readable(path: Path) -> Path:
    """``path`` once it can be opened for reading; a UserError naming the reason otherwise."""
    try:
        with open(path, "rb"):
            return path
    except OSError as err:
        raise UserError(f"cannot read {path} ({err.strerror}): check its permissions") from None


def _header_dims(header: Path) -> list[int]:
    """The sizes on the line after ``# Dimensions``; a UserError when there is no such line."""
    text = _readable(header).read_text(errors="replace")
    lines = [line.strip() for line in text.splitlines()]
    try:
        dims = [int(size) for size in lines[lines.index("# Dimensions") + 1].split()]
    except (ValueError, IndexError):
        raise UserError(f"{header} is not a BART header (no '# Dimensions' line followed by the "
                        "sizes): pass the .hdr/.cfl pair written by BART or scorerecon") from None
    if not dims or min(dims) < 1:
        raise UserError(f"{header} gives dimensions {dims}: every size must be a positive integer")
    return dims


def check_cfl_output(path: str | os.PathLike) -> None:
    """Both files of the pair ``path`` names can be written (before any long work)."""
    for target in cfl_pair(path):
        check_output_file(target)


def write_cfl(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as a BART pair; both files are written to temporary names first and renamed
    only when both are complete (the ``.cfl`` first, then the header)."""
    if np.asarray(array).ndim > len(AXIS_NAMES):
        raise UserError(f"a BART array has at most {len(AXIS_NAMES)} axes, this one {np.asarray(array).ndim}")
    with np.errstate(over="ignore", invalid="ignore"):
        array = np.asarray(array, dtype="<c8")
    if not np.isfinite(array).all():
        raise UserError(f"{path}: the array holds values that complex64 cannot store (NaN, Inf or beyond "
                        "3.4e38): scale it or fix the values first")
    header, data_path = cfl_pair(path)
    dims = list(array.shape) + [1] * (len(AXIS_NAMES) - array.ndim)
    with atomic_path(header, suffix=".hdr") as header_tmp, atomic_path(data_path, suffix=".cfl") as data_tmp:
        array.ravel(order="F").tofile(data_tmp)
        header_tmp.write_text("# Dimensions\n" + " ".join(str(d) for d in dims) + "\n")


def _extra_axes(shape: tuple[int, ...], allowed: tuple[int, ...]) -> list[str]:
    """BART's names of the axes of ``shape`` beyond ``allowed`` that hold more than one entry."""
    return [AXIS_NAMES[axis] for axis, size in enumerate(shape) if size > 1 and axis not in allowed]


def _one_entry_advice(extra: list[str]) -> str:
    """How to take one entry of BART axes with BART's own commands."""
    advice = f"take one entry of {', '.join(extra)} first with 'bart slice AXIS INDEX IN OUT'"
    if "PHS2" in extra:
        advice += " (3-D k-space: transform PHS2 to slices first, 'bart fft -u -i 4 IN T')"
    return advice


def image_from_cfl(array: np.ndarray, path: Path) -> np.ndarray:
    """BART (X, Y) or (X, Y, SLICES) as our (H, W) or (slices, H, W); real values stay real
    (signs kept), complex ones are read as magnitude by the image reader."""
    extra = _extra_axes(array.shape, (READ, PHS1, PHS2))
    if extra:
        raise UserError(f"{path.name} has BART dimensions {list(array.shape)}: an image has only READ, "
                        f"PHS1 and PHS2 (slices); {_one_entry_advice(extra)}")
    array = array.real if not np.any(array.imag) else array
    return np.moveaxis(array, 2, 0) if array.ndim == 3 else array.reshape(array.shape[0], -1)


def image_to_cfl(volume: np.ndarray) -> np.ndarray:
    """Our (H, W) or (slices, H, W) as BART (X, Y) or (X, Y, SLICES): the inverse of
    :func:`image_from_cfl`."""
    return np.moveaxis(volume, 0, 2) if volume.ndim == 3 else volume


def kspace_from_bart(array: np.ndarray) -> np.ndarray:
    """BART (READ, PHS1[, 1[, COIL]]) k-space or coil maps as our (coils, H, W)."""
    if array.ndim < 2 or array.ndim > 4 or (array.ndim > 2 and array.shape[2] != 1):
        raise UserError(f"BART dimensions {list(array.shape)} are not (READ, PHS1, 1, COIL)")
    return np.ascontiguousarray(np.moveaxis(array.reshape(*array.shape[:2], -1), -1, 0))


def kspace_to_bart(kspace: np.ndarray) -> np.ndarray:
    """Our (coils, H, W) k-space or coil maps as BART's (READ, PHS1, 1, COIL)."""
    return np.moveaxis(np.asarray(kspace), 0, -1)[:, :, None, :]


def read_cfl_measurement(path: str | os.PathLike):
    """2-D k-space in a BART pair, (READ, PHS1, 1, COIL), as an MRI ``Measurement`` (module
    docstring): no ground truth, no pixel size."""
    from .measurement import raw_kspace_measurement
    path = Path(path)
    array = read_cfl(path)
    if array.ndim < 2:
        raise UserError(f"{path.name} has one BART dimension, {list(array.shape)}: scorerecon reconstructs "
                        "2-D k-space (READ, PHS1, 1, COIL)")
    extra = _extra_axes(array.shape, (READ, PHS1, COIL))
    if extra:
        raise UserError(f"{path.name} has BART dimensions {list(array.shape)}: scorerecon reconstructs "
                        f"2-D k-space (READ, PHS1, 1, COIL); {_one_entry_advice(extra)}")
    kspace = kspace_from_bart(array)
    mask = (np.abs(kspace) > 0).any(axis=0).astype(np.uint8)
    return raw_kspace_measurement(kspace, mask, {"source": "bart", "source_file": path.name})
