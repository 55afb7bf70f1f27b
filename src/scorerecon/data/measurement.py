"""The measurement file: HDF5 holding everything ``reconstruct`` needs.

Layout (``format = "scorerecon-measurement"``, ``version = 1``)::

    /                      attrs: format, version, modality ("ct" | "mri"), units, and
                           simulation settings (seed, flux, ...) when simulated
    /measurement           the data on the FULL measurement grid, zeros where not measured
                           (i.e. P^{-1}(Λ) y):  CT: float32 (views, detectors) post-log
                           sinogram, physical line integrals;  MRI: complex64 (coils, H, W)
    /mask                  uint8, same shape as /measurement or broadcastable to it (Λ)
    /geometry/             attrs: scalars and strings; datasets: arrays (e.g. CT angles)
    /truth                 optional ground truth image in native units (HU for CT)
    /extras/NAME           optional arrays (metal_mask, sensitivity_maps, ...)

fastMRI files (a top-level ``kspace`` dataset) are recognised and read by
:mod:`scorerecon.data.fastmri` instead; Siemens twix (``.dat``) by :mod:`scorerecon.data.twix`
and BART k-space (``.cfl``) by :mod:`scorerecon.data.cfl`.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..atomic import atomic_path, check_output_file
from ..errors import UserError

FORMAT = "scorerecon-measurement"
VERSION = 1


@dataclass
class Measurement:
    """A measurement with its mask, geometry and (when simulated) ground truth."""

    modality: str
    data: np.ndarray
    mask: np.ndarray
    geometry: dict[str, Any]
    truth: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> "Measurement":
        """Check what every solver relies on; raise :class:`UserError` otherwise."""
        if self.modality not in ("ct", "mri"):
            raise UserError(f"unknown modality {self.modality!r}: expected 'ct' or 'mri'")
        for name in ("data", "mask", "truth"):
            _check_numeric(name, getattr(self, name))
        if self.truth is not None and np.iscomplexobj(self.truth):
            raise UserError("the ground truth must be a real image (HU for CT, a magnitude for MRI), got complex "
                            "values: store its magnitude or real part")
        if not np.all(np.isfinite(self.data)):
            raise UserError("the measurement contains NaN or Inf values: clean or re-simulate the data")
        self.mask = _binary_mask(self.mask)
        if self.modality == "ct" and np.ndim(self.mask) > 2:
            raise UserError(f"a CT mask is (views, detectors) or (views,), got shape {np.shape(self.mask)}: "
                            "store one mask for the sinogram")
        if self.modality == "ct" and np.ndim(self.mask) == 1 and len(self.mask) == np.shape(self.data)[0]:
            # a (V,) mask marks views, as CTOperator reads it, also where there are as many detectors
            # (broadcasting would read it along the detectors); a (D,) mask marks detectors
            self.mask = self.mask[:, None]
        try:
            np.broadcast_shapes(self.mask.shape, self.data.shape)
        except ValueError:
            raise UserError(
                f"mask shape {self.mask.shape} does not match measurement shape {self.data.shape}: "
                "use a mask of the measurement's shape") from None
        kept = np.count_nonzero(self.mask)
        if kept == 0:
            raise UserError("the mask keeps no measurement (all zeros): nothing to reconstruct from")
        if np.iscomplexobj(self.data) != (self.modality == "mri"):
            expected = "complex k-space" if self.modality == "mri" else "a real sinogram (post-log line integrals)"
            raise UserError(f"{self.modality.upper()} data must be {expected}, got {np.asarray(self.data).dtype} "
                            "values: store those")
        if self.modality == "mri":
            if np.ndim(self.data) != 3:
                raise UserError(f"MRI k-space must be (coils, H, W), got shape {np.shape(self.data)}: "
                                "store single-coil data with a coil axis of 1")
            if np.ndim(self.mask) <= 2 and np.shape(self.mask) != np.shape(self.data)[-2:]:
                # a (W,) column mask, as fastMRI stores it, or (1, W): the (H, W) the solvers take
                self.mask = np.ascontiguousarray(np.broadcast_to(self.mask, np.shape(self.data)[-2:]))
        return self


def _check_numeric(name: str, array) -> None:
    """Numbers (or booleans) only: text or objects in a file's array would compare or cast silently."""
    if array is None:
        return
    dtype = np.asarray(array).dtype
    if not (np.issubdtype(dtype, np.number) or dtype == bool):
        raise UserError(f"the measurement's {name} holds {dtype} values, not numbers: re-create the file")


def _binary_mask(mask) -> np.ndarray:
    """Λ as 0/1: the solvers multiply by the mask, so a mask stored as 0/255 (or with weights)
    would scale the data it keeps; nonzero entries mark what was measured."""
    mask = np.asarray(mask)
    if mask.dtype == bool or np.isin(mask, (0, 1)).all():
        return mask
    return (mask != 0).astype(np.uint8)


def raw_kspace_measurement(kspace: np.ndarray, mask: np.ndarray, attrs: dict[str, Any],
                           geometry: dict[str, Any] | None = None) -> Measurement:
    """Acquired k-space (coils, H, W) without a ground truth (twix, BART) as a validated MRI
    ``Measurement``: the output grid is the k-space's, and ``intensity_scale`` the peak of the
    zero-filled root-sum-of-squares image (1 when that is 0)."""
    import torch

    from ..operators.coils import rss
    from ..operators.mri import ifft2c
    shape = list(kspace.shape[1:])
    peak = float(rss(ifft2c(torch.from_numpy(kspace)), dim=0).max())
    geometry = {"image_shape": shape, "output_shape": shape, "coils": int(kspace.shape[0]), **(geometry or {})}
    attrs = {**attrs, "intensity_scale": peak if peak > 0 else 1.0}
    return Measurement(modality="mri", data=kspace, mask=mask, geometry=geometry, attrs=attrs).validate()


def _write_dict(group: h5py.Group, values: dict[str, Any]) -> None:
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, np.ndarray) or (isinstance(value, (list, tuple)) and len(value) > 8):
            group.create_dataset(key, data=np.asarray(value))
        else:
            group.attrs[key] = value


def _write_attrs(group: h5py.Group, values: dict[str, Any]) -> None:
    """Every value as an HDF5 attribute of ``group``: numbers, text, arrays and lists of them
    (lists of text as variable-length strings); anything else is a UserError naming it."""
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
            value = np.array(value, dtype=h5py.string_dtype())
        try:
            group.attrs[key] = value
        except (TypeError, ValueError, RuntimeError) as err:
            raise UserError(f"measurement attribute {key!r} ({type(value).__name__}) cannot be stored in HDF5 "
                            f"({err}): keep attributes to numbers, text and arrays or lists of them") from None


def _read_attrs(group: h5py.Group) -> dict[str, Any]:
    """Attributes as Python scalars, strings and lists."""
    return {key: value.item() if isinstance(value, np.generic) else (
                value.tolist() if isinstance(value, np.ndarray) else value)
            for key, value in group.attrs.items()}


def _read_dict(group: h5py.Group) -> dict[str, Any]:
    """Attributes plus the group's datasets (arrays) -- the inverse of ``_write_dict``."""
    out = _read_attrs(group)
    out.update({key: ds[()] for key, ds in group.items() if isinstance(ds, h5py.Dataset)})
    return out


def check_measurement_output(path: str | os.PathLike) -> Path:
    """``path`` as a Path once a measurement can be written there: a .h5 file (what ``tune
    --cases`` and the readers look for) in a writable folder.  Callers check before simulating."""
    if Path(path).suffix.lower() != ".h5":
        raise UserError(f"{path}: a measurement file is HDF5: give it the extension .h5")
    return check_output_file(path)


def write_measurement(path: str | os.PathLike, meas: Measurement) -> None:
    """Write ``meas`` to ``path`` (.h5) atomically (temporary file, then rename)."""
    check_measurement_output(path)
    meas.validate()
    with atomic_path(path, suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["version"] = VERSION
            f.attrs["modality"] = meas.modality
            _write_attrs(f, meas.attrs)
            f.create_dataset("measurement", data=meas.data, compression="gzip", compression_opts=4)
            f.create_dataset("mask", data=np.asarray(meas.mask).astype(np.uint8), compression="gzip")  # 0/1 since validate
            _write_dict(f.create_group("geometry"), meas.geometry)
            if meas.truth is not None:
                f.create_dataset("truth", data=meas.truth, compression="gzip", compression_opts=4)
            extras = f.create_group("extras")
            for name, array in meas.extras.items():
                extras.create_dataset(name, data=array, compression="gzip", compression_opts=4)


def read_measurement(path: str | os.PathLike, slice_index: int | None = None) -> Measurement:
    """Read a scorerecon measurement file, a fastMRI file, Siemens twix raw data or BART k-space
    (``.cfl``), and validate it.  ``slice_index`` picks a slice of a fastMRI or twix file (by
    default the middle one); the other formats hold one slice."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder: pass a measurement file (.h5, .dat or .cfl)")
    if not path.is_file():
        raise UserError(f"measurement file {path} does not exist: check the path")
    if path.name.lower().endswith((".dat", ".dat.gz")):
        from .twix import read_twix  # Siemens raw data
        return read_twix(path, slice_index)  # validated by the reader, as fastMRI and BART files are
    if path.suffix.lower() == ".cfl":
        _one_slice_only(path, slice_index)
        from .cfl import read_cfl_measurement  # BART k-space
        return read_cfl_measurement(path)
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise UserError(f"{path} is not an HDF5 file: pass a file written by 'scorerecon simulate', "
                        "a fastMRI .h5 file, Siemens twix .dat or BART k-space .cfl") from None
    with f, damaged_file(path):
        if f.attrs.get("format") != FORMAT:
            if "kspace" in f or "ismrmrd_header" in f:
                from .fastmri import read_fastmri  # fastMRI layout
                return read_fastmri(path, slice_index)
            raise UserError(f"{path} is neither a scorerecon measurement nor a fastMRI file "
                            "(no 'kspace' dataset): simulate one with 'scorerecon simulate'")
        _one_slice_only(path, slice_index)
        version = f.attrs.get("version")
        version = int(version) if isinstance(version, (int, np.integer)) else version
        if not isinstance(version, int) or not 1 <= version <= VERSION:
            raise UserError(f"{path} is a measurement of layout version {version!r}, and this scorerecon "
                            f"reads versions 1 to {VERSION}: upgrade scorerecon or re-create the file")
        for required in ("measurement", "mask", "geometry"):
            if required not in f:
                raise UserError(f"{path} lacks the '{required}' entry: re-create it with 'scorerecon simulate'")
        attrs = _read_attrs(f)
        modality = str(attrs.pop("modality", ""))
        for key in ("format", "version"):
            attrs.pop(key, None)
        extras = h5_entry(f, "extras", h5py.Group, path) if "extras" in f else {}
        meas = Measurement(
            modality=modality,
            data=h5_entry(f, "measurement", h5py.Dataset, path)[()],
            mask=h5_entry(f, "mask", h5py.Dataset, path)[()],
            geometry=_read_dict(h5_entry(f, "geometry", h5py.Group, path)),
            truth=h5_entry(f, "truth", h5py.Dataset, path)[()] if "truth" in f else None,
            extras={k: h5_entry(extras, k, h5py.Dataset, path)[()] for k in extras},
            attrs=attrs,
        )
    return meas.validate()


@contextmanager
def damaged_file(path: Path):
    """Turn HDF5's read failures (a truncated or corrupted file) into one line naming the file."""
    try:
        yield
    except OSError as err:
        raise UserError(f"{path} is damaged ({err}): copy it again or re-create it") from None


def h5_entry(parent: h5py.Group, name: str, kind: type, path: Path):
    """``parent[name]``, refused in one line when it is a group where an array belongs or the
    other way round (the readers would fail deep inside h5py)."""
    entry = parent[name]
    if not isinstance(entry, kind):
        wanted = "an array" if kind is h5py.Dataset else "a group of arrays"
        raise UserError(f"{path}: '{entry.name}' should be {wanted}: re-create the file")
    return entry


def _one_slice_only(path: Path, slice_index: int | None) -> None:
    """A format of one slice takes no slice index but 0 (as a one-slice fastMRI file does)."""
    if slice_index not in (None, 0):
        raise UserError(f"{path} holds one 2-D slice: drop --slice (it picks a slice of a fastMRI or twix file)")
