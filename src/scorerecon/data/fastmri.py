"""fastMRI HDF5 files (Zbontar et al. 2018, arXiv:1811.08839): read them as they come, write them.

Layout of a fastMRI file, read unchanged::

    kspace                 complex64, (slices, H, W) single-coil or (slices, coils, H, W) multi-coil;
                           H = read-out (often 2x oversampled, e.g. 640), W = phase encoding
    mask                   optional (W,) column mask (test / challenge files); absent = fully sampled
    ismrmrd_header         ISMRMRD XML: encodedSpace / reconSpace matrix and field of view, limits
    reconstruction_esc     single-coil reference magnitude (slices, h, w), e.g. 320 x 320
    reconstruction_rss     multi-coil root-sum-of-squares reference (slices, h, w)
    attrs                  acquisition, max (of the reference), norm, patient_id

Simulated files (``scorerecon simulate mri``) are fastMRI files with one slice, a ``mask`` of
shape (W,) for column patterns or (H, W) for 2-D ones, the noise-free ground truth as the
reference, and a group ``/scorerecon`` holding what fastMRI lacks: ``sensitivity_maps``
(coils, H, W) and attributes (``intensity_scale``, the simulation settings).

:func:`read_fastmri` returns one slice (the middle one unless asked) as a ``Measurement``:
k-space (coils, H, W) with zeros where Λ = 0, mask (H, W) (the file's mask, else the non-zero
samples), truth = the reference reconstruction when present (``reconstruction_esc`` first for a
single-coil file, which may hold the multi-coil RSS image too; ``reconstruction_rss`` first for
a multi-coil one; else None: metrics unavailable),
``geometry["output_shape"]`` = the reference (or reconSpace) matrix, to which reconstructions of
read-out oversampled data are centre-cropped, and ``attrs["intensity_scale"]`` = the file's ``max``
(the reference peak), which maps the unit-domain magnitude back to the file's units.
Multi-coil files without maps get ESPIRiT maps when a solver first needs them.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from ..atomic import atomic_path
from ..errors import UserError
from ..operators.coils import check_maps, rss
from ..operators.mri import center_crop, ifft2c
from .measurement import Measurement, check_measurement_output, damaged_file, h5_entry

ISMRMRD_NS = "http://www.ismrm.org/ISMRMRD"
EXTRAS_GROUP = "scorerecon"
NOMINAL_LARMOR_HZ = 127_728_000  # 3 T proton frequency: a required ISMRMRD field for simulated files


# -------------------------------------------------------------------------- ISMRMRD XML
def ismrmrd_header(encoded_shape, recon_shape, encoded_fov_mm, recon_fov_mm, coils: int) -> bytes:
    """A minimal valid ISMRMRD header for a 2-D Cartesian acquisition (x = read-out, y = phase)."""
    ET.register_namespace("", ISMRMRD_NS)
    root = ET.Element(f"{{{ISMRMRD_NS}}}ismrmrdHeader")

    def sub(parent, tag, text=None):
        node = ET.SubElement(parent, f"{{{ISMRMRD_NS}}}{tag}")
        if text is not None:
            node.text = str(text)
        return node

    sub(sub(root, "acquisitionSystemInformation"), "receiverChannels", int(coils))
    sub(sub(root, "experimentalConditions"), "H1resonanceFrequency_Hz", NOMINAL_LARMOR_HZ)
    encoding = sub(root, "encoding")
    for name, shape, fov in (("encodedSpace", encoded_shape, encoded_fov_mm),
                             ("reconSpace", recon_shape, recon_fov_mm)):
        space = sub(encoding, name)
        matrix, field = sub(space, "matrixSize"), sub(space, "fieldOfView_mm")
        for axis, size, mm in zip("xyz", (*shape, 1), (*fov, 1.0)):
            sub(matrix, axis, int(size))
            sub(field, axis, f"{float(mm):.6g}")
    limits = sub(encoding, "encodingLimits")
    width = int(encoded_shape[1])
    for tag, top in (("kspace_encoding_step_1", width - 1), ("kspace_encoding_step_2", 0), ("slice", 0)):
        node = sub(limits, tag)
        for key, value in (("minimum", 0), ("maximum", top), ("center", (top + 1) // 2)):
            sub(node, key, value)
    sub(encoding, "trajectory", "cartesian")
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def parse_ismrmrd_header(xml: bytes | str) -> dict[str, Any]:
    """encoded / recon matrix (x, y) and field of view (mm) of the first encoding; {} if absent."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        raise UserError("the ismrmrd_header is not valid XML: repair or drop it from the file") from None
    ns = {"m": ISMRMRD_NS}
    out: dict[str, Any] = {}
    for name, key in (("encodedSpace", "encoded"), ("reconSpace", "recon")):
        matrix = root.find(f"m:encoding/m:{name}/m:matrixSize", ns)
        fov = root.find(f"m:encoding/m:{name}/m:fieldOfView_mm", ns)
        if matrix is not None:
            out[f"{key}_shape"] = [int(v) for v in _header_numbers(matrix, f"{name}/matrixSize", ns)]
        if fov is not None:
            out[f"{key}_fov_mm"] = _header_numbers(fov, f"{name}/fieldOfView_mm", ns)
    return out


def _header_numbers(element: ET.Element, where: str, ns: dict[str, str]) -> list[float]:
    """The x and y of an ismrmrd_header element; a UserError naming it when one is missing."""
    try:
        return [float(element.findtext(f"m:{a}", namespaces=ns)) for a in "xy"]
    except (TypeError, ValueError):
        raise UserError(f"the ismrmrd_header's encoding/{where} lacks a numeric x or y: "
                        "repair or drop the header") from None


# ------------------------------------------------------------------------------ writing
def write_fastmri(path: str | os.PathLike, kspace: np.ndarray, mask: np.ndarray, reference: np.ndarray | None,
                  header: bytes, attrs: dict[str, Any], extras: dict[str, np.ndarray] | None = None,
                  extra_attrs: dict[str, Any] | None = None) -> None:
    """Write one slice in fastMRI layout, atomically.

    ``kspace`` (coils, H, W): one coil is written single-coil (1, H, W) with ``reconstruction_esc``,
    several multi-coil (1, coils, H, W) with ``reconstruction_rss``.  ``mask`` (H, W) is stored as
    (W,) when it keeps whole columns.  ``extras`` / ``extra_attrs`` go to the ``/scorerecon`` group.
    """
    check_measurement_output(path)
    kspace = np.asarray(kspace, dtype=np.complex64)
    single = kspace.shape[0] == 1
    with atomic_path(path, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("kspace", data=kspace[None, 0] if single else kspace[None], compression="gzip",
                         compression_opts=4)
        f.create_dataset("mask", data=_stored_mask(mask))
        f.create_dataset("ismrmrd_header", data=np.bytes_(header))
        if reference is not None:
            name = "reconstruction_esc" if single else "reconstruction_rss"
            f.create_dataset(name, data=np.asarray(reference, np.float32)[None], compression="gzip")
        f.attrs.update(attrs)
        group = f.create_group(EXTRAS_GROUP)
        group.attrs.update(extra_attrs or {})
        for name, array in (extras or {}).items():
            group.create_dataset(name, data=array, compression="gzip", compression_opts=4)


def _stored_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask, dtype=np.uint8)
    return mask[0] if np.all(mask == mask[:1]) else mask


# ------------------------------------------------------------------------------ reading
def read_fastmri(path: str | os.PathLike, slice_index: int | None = None) -> Measurement:
    """One slice of a fastMRI (or simulated fastMRI-layout) file as an MRI ``Measurement``."""
    path = Path(path)
    with h5py.File(path, "r") as f, damaged_file(path):
        if "kspace" not in f:
            raise UserError(f"{path} has no 'kspace' dataset: it is not a fastMRI raw-data file")
        kspace, index = _read_slice(h5_entry(f, "kspace", h5py.Dataset, path), path, slice_index)
        mask = _read_mask(f, kspace, path)
        header = (parse_ismrmrd_header(h5_entry(f, "ismrmrd_header", h5py.Dataset, path)[()])
                  if "ismrmrd_header" in f else {})
        reference = _read_reference(f, index, kspace.shape[0], path)
        file_attrs = {k: _plain(v) for k, v in f.attrs.items()}
        group = h5_entry(f, EXTRAS_GROUP, h5py.Group, path) if EXTRAS_GROUP in f else None
        extras = {k: h5_entry(group, k, h5py.Dataset, path)[()] for k in group} if group is not None else {}
        extra_attrs = {k: _plain(v) for k, v in group.attrs.items()} if group is not None else {}
    if "sensitivity_maps" in extras:
        extras["sensitivity_maps"] = check_maps(extras["sensitivity_maps"], kspace.shape)
    kspace = (kspace * (mask != 0)).astype(np.complex64)
    output_shape = _output_shape(kspace.shape[-2:], reference, header)
    truth = None if reference is None else center_crop(reference, output_shape).astype(np.float32)
    geometry = {"image_shape": list(kspace.shape[-2:]), "output_shape": output_shape,
                "coils": int(kspace.shape[0])}
    geometry.update(_pixel_size(header, output_shape))
    attrs = {"source": "simulated" if group is not None else "fastmri", "file_slice": index,
             **file_attrs, **extra_attrs}
    attrs["intensity_scale"] = _intensity_scale(attrs, truth, kspace, output_shape, path)
    return Measurement(modality="mri", data=kspace, mask=mask, geometry=geometry, truth=truth,
                       extras=extras, attrs=attrs).validate()


def _plain(value):
    if isinstance(value, bytes):
        return value.decode()
    return value.item() if isinstance(value, np.generic) else (
        value.tolist() if isinstance(value, np.ndarray) else value)


def _read_slice(dataset: h5py.Dataset, path: Path, slice_index: int | None) -> tuple[np.ndarray, int]:
    """(coils, H, W) k-space of one slice: 3-D data are single-coil, 4-D multi-coil (fastMRI)."""
    if dataset.ndim not in (3, 4) or not np.issubdtype(dataset.dtype, np.complexfloating):
        raise UserError(f"{path}: 'kspace' must be complex (slices, [coils,] H, W), got {dataset.dtype} "
                        f"{dataset.shape}: use a fastMRI file")
    slices = dataset.shape[0]
    if slices == 0:
        raise UserError(f"{path} holds no slices ('kspace' has shape {dataset.shape}): use another file")
    index = slices // 2 if slice_index is None else int(slice_index)
    if not 0 <= index < slices:
        raise UserError(f"slice {index} is outside the file's {slices} slices: use 0..{slices - 1}")
    data = dataset[index]
    return (data[None] if dataset.ndim == 3 else data), index


def _read_mask(f: h5py.File, kspace: np.ndarray, path: Path) -> np.ndarray:
    """(H, W) uint8: the file's (W,) or (H, W) mask, else the samples that are not exactly zero."""
    grid = tuple(kspace.shape[-2:])
    if "mask" not in f:
        return (np.abs(kspace).sum(axis=0) > 0).astype(np.uint8)
    mask = np.asarray(h5_entry(f, "mask", h5py.Dataset, path)[()])
    if mask.ndim == 1 and mask.shape[0] == grid[1]:
        mask = np.broadcast_to(mask[None, :], grid)
    if mask.shape != grid:
        raise UserError(f"{path}: mask shape {mask.shape} does not match the k-space grid {grid} "
                        f"(expected ({grid[1]},) or {grid}): fix or drop the mask")
    return (mask != 0).astype(np.uint8)


def _read_reference(f: h5py.File, index: int, coils: int, path: Path) -> np.ndarray | None:
    """The slice's reference image: fastMRI's single-coil files hold both, and the ESC image is
    the one of their (emulated single-coil) k-space, the RSS one that of the multi-coil data."""
    names = ("reconstruction_esc", "reconstruction_rss")
    for name in names if coils == 1 else names[::-1]:
        if name not in f:
            continue
        dataset = h5_entry(f, name, h5py.Dataset, path)
        if not np.issubdtype(dataset.dtype, np.number) or np.issubdtype(dataset.dtype, np.complexfloating):
            raise UserError(f"{path}: '{name}' holds {dataset.dtype} values, not a real image: fix or drop it")
        if dataset.ndim == 3 and index < dataset.shape[0]:
            return np.asarray(dataset[index], dtype=np.float32)
    return None


def _output_shape(grid, reference: np.ndarray | None, header: dict[str, Any]) -> list[int]:
    """Reference size, else the header's reconSpace matrix, each clipped to the k-space grid."""
    shape = reference.shape if reference is not None else header.get("recon_shape", grid)
    return [int(min(s, g)) for s, g in zip(shape, grid)]


def _pixel_size(header: dict[str, Any], output_shape) -> dict[str, Any]:
    """{"pixel_size": [mm per row, mm per column]} from the reconSpace field of view, when given."""
    fov, matrix = header.get("recon_fov_mm"), header.get("recon_shape")
    if not fov or not matrix or min(matrix) < 1 or min(fov) <= 0:
        return {}
    return {"pixel_size": [float(fov[0]) / matrix[0], float(fov[1]) / matrix[1]]}


def _intensity_scale(attrs: dict[str, Any], truth: np.ndarray | None, kspace: np.ndarray, output_shape,
                     path: Path) -> float:
    """Reference peak: the simulation's scale, else the file's ``max``, the reference's, or the
    zero-filled root-sum-of-squares peak (files without a reference)."""
    for name in ("intensity_scale", "max"):
        value = attrs.get(name)
        if value is not None and not isinstance(value, (int, float)):
            raise UserError(f"{path}: the attribute {name} = {value!r} is not a number: fix or drop it")
    for value in (attrs.get("intensity_scale"), attrs.get("max"),
                  None if truth is None else float(truth.max())):
        if value is not None and np.isfinite(value) and float(value) > 0:
            return float(value)
    image = rss(ifft2c(torch.from_numpy(kspace)), dim=0)
    peak = float(center_crop(image, output_shape).max())
    return peak if np.isfinite(peak) and peak > 0 else 1.0
