"""Siemens raw data (twix ``.dat``, VB and VD/VE) through twixtools, as an MRI ``Measurement``.

twixtools (Ehses et al., MIT licence) maps the last measurement of the file; we ask it to remove
the 2× read-out oversampling, to zero-fill lines that were not acquired and to average the
``Ave`` and ``Seg`` counters.  Its array is indexed (…, Lin, Cha, Col); ours is (coils, H, W)
with H = read-out (Col) and W = phase encoding (Lin), the fastMRI orientation, so k-space is
transposed to (Cha, Col, Lin).  The k-space centre sits at index N/2 as in our centred FFT.

2-D multi-slice files give one slice (the middle one unless asked); other loop counters (echo,
repetition, set, phase) take their first index.  3-D acquisitions (``Par`` > 1) are refused.
The mask marks the acquired lines, the field of view comes from the protocol (``sSliceArray``),
there is no ground truth, and ``intensity_scale`` is the peak of the zero-filled
root-sum-of-squares image.  A gzipped file (``.dat.gz``) is decompressed to a temporary file.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import shutil
import struct
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import UserError
from .measurement import Measurement, raw_kspace_measurement

KEPT_DIMS = ("Lin", "Cha", "Col")
#: what twixtools raises on a file that is not twix, or is cut short
_UNREADABLE = (LookupError, ValueError, OSError, EOFError, struct.error)


def read_twix(path: str | os.PathLike, slice_index: int | None = None) -> Measurement:
    """One 2-D slice of a Siemens twix file as an MRI ``Measurement`` (coils, read-out, phase)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"twix file {path} does not exist: check the path")
    if path.name.lower().endswith(".gz"):
        with tempfile.TemporaryDirectory(prefix="scorerecon-twix-") as folder:
            plain = Path(folder) / path.name[:-3]
            try:
                with gzip.open(path, "rb") as src, open(plain, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
                raise UserError(f"{path.name} cannot be decompressed ({type(err).__name__}: {err}): "
                                "pass the whole .dat.gz, or the .dat") from None
            return _read_plain(plain, slice_index, path.name)
    return _read_plain(path, slice_index, path.name)


def _read_plain(path: Path, slice_index: int | None, name: str) -> Measurement:
    scan, header = _map_last_scan(path)
    kspace, selected = _select_slice(scan, slice_index)
    kspace = np.ascontiguousarray(np.transpose(kspace, (1, 2, 0))).astype(np.complex64)
    lines = np.abs(kspace).sum(axis=(0, 1)) > 0
    mask = np.broadcast_to(lines[None, :], kspace.shape[1:]).astype(np.uint8)
    attrs = {"source": "twix", "source_file": name,
             "protocol": str(header.get("MeasYaps", {}).get("tProtocolName", "")), **selected}
    return raw_kspace_measurement(kspace, mask, attrs, _pixel_size(header, kspace.shape[1:]))


def _map_last_scan(path: Path):
    """twixtools' image mapper of the file's last measurement, configured as described above."""
    import twixtools

    printed = io.StringIO()  # twixtools prints its parse warnings on stdout
    try:
        with contextlib.redirect_stdout(printed):
            scans = twixtools.map_twix(str(path), verbose=False)
    except _UNREADABLE as err:
        raise UserError(f"{path.name} is not a readable Siemens twix file ({type(err).__name__}): "
                        "pass a .dat raw-data file") from None
    sys.stderr.write(printed.getvalue())  # a file that parses keeps its warnings, on stderr
    scan = scans[-1] if isinstance(scans, list) else scans
    if "image" not in scan:
        raise UserError(f"{path.name} holds no imaging data (no 'image' scans): pass an imaging raw-data file")
    image = scan["image"]
    image.flags["remove_os"] = True
    image.flags["zf_missing_lines"] = True
    return image, scan["hdr"]


def _select_slice(image, slice_index: int | None) -> tuple[np.ndarray, dict]:
    """(Lin, Cha, Col) k-space of one slice, and the indices chosen for the other counters."""
    dims = list(image.dims)
    sizes = dict(zip(dims, image.shape))
    if sizes.get("Par", 1) > 1:
        raise UserError(f"3-D twix acquisitions ({sizes['Par']} partitions) are not supported: "
                        "reconstruct a 2-D multi-slice scan")
    index: list = []
    selected = {}
    for dim in dims:
        if dim in KEPT_DIMS:
            index.append(slice(None))
        elif dim == "Sli":
            chosen = sizes[dim] // 2 if slice_index is None else int(slice_index)
            if not 0 <= chosen < sizes[dim]:
                raise UserError(f"slice {chosen} is outside the file's {sizes[dim]} slices: "
                                f"use 0..{sizes[dim] - 1}")
            index.append(chosen)
            selected["file_slice"] = chosen
        else:
            index.append(0)
            if sizes[dim] > 1:
                selected[f"twix_{dim}"] = 0
    try:  # twixtools reads the data only here: a file cut short parses but fails now
        data = np.asarray(image[tuple(index)])
    except _UNREADABLE as err:
        raise UserError(f"the k-space of this twix file cannot be read ({type(err).__name__}: {err}); the file "
                        "is probably truncated: copy the whole .dat again") from None
    order = [d for d in dims if d in KEPT_DIMS]
    return np.transpose(data, [order.index(d) for d in KEPT_DIMS]), selected


def _pixel_size(header: dict, shape) -> dict:
    """{"pixel_size": [read-out, phase] mm} from the first slice's field of view, when present."""
    try:
        first = header["MeasYaps"]["sSliceArray"]["asSlice"][0]
        fov = (float(first["dReadoutFOV"]), float(first["dPhaseFOV"]))
    except (KeyError, IndexError, TypeError, ValueError):
        return {}
    return {"pixel_size": [fov[0] / shape[0], fov[1] / shape[1]]}
