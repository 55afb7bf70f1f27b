"""DICOM reading and writing.

Reading.  Stored pixel values ``SV`` become physical values (HU for CT) by the Modality LUT,
DICOM PS3.3 C.11.1:  ``value = RescaleSlope · SV + RescaleIntercept``.  A single-frame file or
series uses pydicom's ``apply_modality_lut``; a multi-frame (Enhanced CT/MR) file takes slope and
intercept per frame from the Pixel Value Transformation functional group (PS3.3 C.7.6.16.2.9):
per-frame group first, then the shared group, then the top-level attributes; its frames are
sorted along the slice normal by the Plane Position / Plane Orientation groups when present.

A series folder is sorted along the slice normal n = r × c (r, c: the row and column direction
cosines of ImageOrientationPatient) by the projection n · ImagePositionPatient, or by
InstanceNumber when positions are missing (PS3.3 C.7.6.2.1.1).  Arrays are (slices, rows,
columns); spacing is (slice, row, column) in mm, PixelSpacing being (row, column) spacing.

Orientation.  Arrays are then brought to the layout of :mod:`scorerecon.data.io` (each axis along
+z, +y, +x of LPS) by :mod:`scorerecon.data.orientation`: the slice axis runs along the normal n,
the rows along the column cosine (ImageOrientationPatient[3:6]), the columns along the row cosine
(ImageOrientationPatient[0:3]).  An axial series stored with ImageOrientationPatient 1,0,0,0,1,0
is read as stored; a sagittal or coronal series becomes the axial volume that NIfTI and NRRD
readers give for the same scan; a single slice only has its in-plane axes flipped where they
point along −x or −y.  Without positions (slices ordered by InstanceNumber) only the in-plane
flips apply.  A writer with a reference applies the inverse, so the reference's geometry fits.

Writing.  One file per slice, Explicit VR Little Endian, new Series and SOP Instance UIDs.  CT
is stored as signed int16 with RescaleSlope 1 and RescaleIntercept -1024 (HU rounded to the
nearest integer; where values pass the int16 range, metal above 31743 HU, the smallest slope
that holds them); other modalities as uint16 with a slope and
intercept that map the data range onto 0..65535.  With a reference (a DICOM file or series of
single-frame images) every slice starts as a copy of the matching reference slice — patient,
study, frame of reference, equipment and geometry — with pixel data, private tags and instance
identifiers replaced; without one, a minimal Secondary Capture series (PS3.3 A.8.1) is written.
"""

from __future__ import annotations

import datetime
import re
import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut
from pydicom.uid import (ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                         SecondaryCaptureImageStorage, generate_uid)

from ..errors import UserError
from .orientation import closest_lps, flip_in_plane, from_closest_lps

CT_INTERCEPT = -1024.0
_MODALITIES = {"CT": "ct", "MR": "mr"}
_DECODER_HINT = ("install a decoder: pip install pylibjpeg pylibjpeg-openjpeg pylibjpeg-libjpeg "
                 "(or python-gdcm)")


# ------------------------------------------------------------------------------ reading
#: what pydicom raises for a file that is not (readable) DICOM
_UNREADABLE = (InvalidDicomError, EOFError, OSError, ValueError)


def read_dataset(path: Path, pixels: bool = True,
                 fix: str = "pass a DICOM image, a series folder, NIfTI, NRRD, .npy or .png") -> Dataset:
    """Read one DICOM file; a non-DICOM or image-less file raises :class:`UserError` (``fix``
    says what to pass instead)."""
    try:
        ds = _dcmread(path, pixels)
    except _UNREADABLE as err:
        raise UserError(f"{path} is not a readable DICOM file ({type(err).__name__}): {fix}") from None
    if pixels and "PixelData" not in ds:
        raise UserError(f"{path} is a DICOM file without pixel data ({ds.get('SOPClassUID', 'no SOP class')}): "
                        "pass a DICOM image")
    return ds


_ENCODINGS = {(True, True): ImplicitVRLittleEndian, (False, True): ExplicitVRLittleEndian,
              (False, False): ExplicitVRBigEndian}


def _dcmread(path: Path, pixels: bool) -> Dataset:
    """pydicom's read; a file without the DICM preamble or file meta (older and exported files)
    is read as a bare data set when it holds an image (Rows and Columns), its transfer syntax
    taken from the encoding it was read in."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except InvalidDicomError:
        with warnings.catch_warnings():  # pydicom's guesses at a file that is not DICOM at all
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=not pixels, force=True)
    if "Rows" not in ds or "Columns" not in ds:
        raise InvalidDicomError("neither a DICOM file nor a bare DICOM image data set")
    if "TransferSyntaxUID" not in ds.file_meta and ds.original_encoding in _ENCODINGS:
        ds.file_meta.TransferSyntaxUID = _ENCODINGS[ds.original_encoding]
    return ds


def modality_of(ds: Dataset) -> str | None:
    """'ct', 'mr' or None from the Modality attribute."""
    return _MODALITIES.get(str(ds.get("Modality", "")).upper())


def _stored_pixels(ds: Dataset, path: Path) -> np.ndarray:
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise UserError(f"{path} is a colour DICOM image: pass a greyscale (CT or MR) image")
    try:
        return ds.pixel_array
    except (RuntimeError, NotImplementedError, ValueError, AttributeError) as err:
        syntax = ds.file_meta.get("TransferSyntaxUID")
        if syntax is not None and syntax.is_compressed:
            raise UserError(f"cannot decode the {syntax.name} pixel data of {path}: {_DECODER_HINT}") from None
        raise UserError(f"the pixel data of {path} are damaged ({type(err).__name__}): "
                        "pass an intact DICOM image") from None


def _group_item(ds: Dataset, frame: int, keyword: str) -> Dataset | None:
    """First item of functional group ``keyword`` for ``frame``: per-frame group, else shared."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        seq = ds.get(groups)
        if seq is not None and len(seq) > index and keyword in seq[index]:
            return seq[index][keyword][0]
    return None


def _frame_positions(ds: Dataset, frames: int) -> list[float] | None:
    """n · ImagePositionPatient per frame (Plane Position / Plane Orientation groups), or None."""
    positions = []
    for k in range(frames):
        position = _group_item(ds, k, "PlanePositionSequence")
        orientation = _group_item(ds, k, "PlaneOrientationSequence")
        if position is None or orientation is None:
            return None
        cosines = np.asarray(orientation.ImageOrientationPatient, dtype=float)
        positions.append(float(np.dot(np.cross(cosines[:3], cosines[3:]),
                                      np.asarray(position.ImagePositionPatient, dtype=float))))
    return positions


def _multiframe(ds: Dataset, stored: np.ndarray, name: str) -> tuple[np.ndarray, tuple[float, ...] | None]:
    """Enhanced multi-frame: per-frame rescale, frames sorted along the normal, spacing."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    stored = stored.reshape(frames, *stored.shape[-2:])
    values = np.empty(stored.shape, dtype=np.float32)
    for k in range(frames):
        item = _group_item(ds, k, "PixelValueTransformationSequence")
        item = ds if item is None else item
        values[k] = stored[k] * float(item.get("RescaleSlope", 1.0)) + float(item.get("RescaleIntercept", 0.0))
    positions = _frame_positions(ds, frames)
    step = None
    if positions is not None:
        _check_distinct_positions(positions, name)
        values = values[np.argsort(positions, kind="stable")]
        step = _even_step(positions, name) if frames > 1 else None
    measures = _group_item(ds, 0, "PixelMeasuresSequence")
    spacing = None
    if measures is not None and "PixelSpacing" in measures:
        step = step or measures.get("SpacingBetweenSlices", measures.get("SliceThickness"))
        row, col = (float(v) for v in measures.PixelSpacing)
        spacing = (float(step), row, col) if step else None
    orientation = _group_item(ds, 0, "PlaneOrientationSequence")
    cosines = orientation.get("ImageOrientationPatient") if orientation is not None else None
    return to_io_layout(values, spacing, cosines, along_normal=positions is not None, name=name)


def _is_enhanced(ds: Dataset) -> bool:
    """An enhanced multi-frame image: geometry and rescale in functional groups."""
    return "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds


def _is_multiframe(ds: Dataset) -> bool:
    return _is_enhanced(ds) or int(ds.get("NumberOfFrames", 1) or 1) > 1


def _stored_values(ds: Dataset, path: Path) -> tuple[np.ndarray, tuple[float, ...] | None]:
    """Physical pixel values (float32; (H, W) or (frames, H, W)) of a classic (not enhanced)
    image, in the stored order of rows and columns, and its spacing in mm."""
    stored = _stored_pixels(ds, path)
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        stored = stored.reshape(-1, *stored.shape[-2:])
    values = apply_modality_lut(stored, ds).astype(np.float32)
    spacing = tuple(float(v) for v in ds.PixelSpacing) if "PixelSpacing" in ds else None
    if spacing is not None and values.ndim == 3:
        step = ds.get("SpacingBetweenSlices", ds.get("SliceThickness"))
        spacing = (float(step), *spacing) if step else None
    return values, spacing


def pixel_values(ds: Dataset, path: Path) -> tuple[np.ndarray, tuple[float, ...] | None]:
    """Physical pixel values (float32; (H, W) or (frames, H, W)) and spacing in mm, in the
    layout of :mod:`scorerecon.data.io`."""
    if _is_enhanced(ds):
        return _multiframe(ds, _stored_pixels(ds, path), str(path))
    values, spacing = _stored_values(ds, path)
    return to_io_layout(values, spacing, ds.get("ImageOrientationPatient"), along_normal=False, name=str(path))


def axis_directions(cosines) -> np.ndarray:
    """Unit LPS directions of the (slice, row, column) array axes of an image with
    ImageOrientationPatient ``cosines``: the normal n = r × c, then the column cosine c (down the
    rows), then the row cosine r (along a row)."""
    cosines = np.asarray(cosines, dtype=float)
    return np.stack([np.cross(cosines[:3], cosines[3:]), cosines[3:], cosines[:3]])


def to_io_layout(values: np.ndarray, spacing, cosines, along_normal: bool, name: str
                 ) -> tuple[np.ndarray, tuple[float, ...] | None]:
    """``values`` as stored (rows, columns; slices sorted along +n where ``along_normal``) in the
    layout of :mod:`scorerecon.data.io`, spacing permuted alike ("Orientation" above)."""
    if cosines is None or len(cosines) != 6:
        return values, spacing
    directions = axis_directions(cosines)
    if not _reorients_volume(values, along_normal):
        return np.ascontiguousarray(flip_in_plane(values, directions[1:])), spacing
    return closest_lps(values, directions, spacing, name)


def _reorients_volume(values: np.ndarray, along_normal: bool) -> bool:
    """Whether a stored array is a volume to flip and permute in 3-D (several slices sorted along
    the normal) rather than slices whose in-plane axes alone are flipped."""
    return along_normal and values.ndim == 3 and values.shape[0] > 1


def _slice_position(ds: Dataset) -> float | None:
    if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
        return None
    cosines = np.asarray(ds.ImageOrientationPatient, dtype=float)
    normal = np.cross(cosines[:3], cosines[3:])
    return float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=float)))


def _dicom_files(folder: Path) -> list[tuple[Path, Dataset]]:
    found = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        try:
            ds = _dcmread(path, pixels=False)
        except _UNREADABLE:
            continue
        if "Rows" in ds and "Columns" in ds:
            found.append((path, ds))
    return found


def _one_series(folder: Path, found: list[tuple[Path, Dataset]]) -> list[tuple[Path, Dataset]]:
    series: dict[str, list] = {}
    for path, ds in found:
        series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((path, ds))
    if len(series) > 1:
        listing = "; ".join(f"{uid or '(none)'} ({len(items)} files, {items[0][1].get('SeriesDescription', '')!s})"
                            for uid, items in series.items())
        raise UserError(f"{folder} holds {len(series)} DICOM series: {listing} — "
                        "put one series per folder (or pass one file)")
    return next(iter(series.values()))


def sort_series(folder: Path) -> list[Path]:
    """Files of the single image series in ``folder``, sorted along the slice normal."""
    found = _dicom_files(folder)
    if not found:
        raise UserError(f"{folder} contains no DICOM image: pass a folder of DICOM slices")
    items = _one_series(folder, found)
    shapes = {(int(ds.Rows), int(ds.Columns)) for _, ds in items}
    if len(shapes) > 1:
        raise UserError(f"the slices in {folder} have different sizes {sorted(shapes)}: pass one series")
    positions = [_slice_position(ds) for _, ds in items]
    if all(p is not None for p in positions):
        first = np.asarray(items[0][1].ImageOrientationPatient, dtype=float)
        others = sum(not np.allclose(np.asarray(ds.ImageOrientationPatient, dtype=float), first, atol=1e-3)
                     for _, ds in items)
        if others:
            raise UserError(f"{others} of the {len(items)} slices in {folder} lie in another orientation than the "
                            "first (a localizer in the series?): put the slices of one orientation in a folder "
                            "of their own")
        _check_distinct_positions(positions, str(folder))
        order = np.argsort(positions, kind="stable")
    else:
        order = np.argsort([int(ds.get("InstanceNumber", 0) or 0) for _, ds in items], kind="stable")
    return [items[i][0] for i in order]


def _check_distinct_positions(positions: list[float], name: str) -> None:
    """Refuse a stack with two slices at one position along the normal (several echoes, phases
    or time points in one series), which would interleave them into one volume."""
    distinct = len(np.unique(np.round(positions, 3)))
    if distinct < len(positions):
        raise UserError(f"{name} holds {len(positions)} slices at only {distinct} positions (several echoes, "
                        "phases or time points?): split them into one series per echo or phase")


def _even_step(positions: list[float], name: str) -> float:
    """The distance between neighbouring slices (mm) of a stack at ``positions`` along the normal,
    refusing a stack whose slices are not evenly spaced (a missing slice), which no single voxel
    spacing describes."""
    gaps = np.diff(np.sort(positions))
    widest, narrowest = int(np.argmax(gaps)), float(gaps.min())
    # positions are often stored to 0.01 mm (0.625 mm slices: gaps of 0.62 and 0.63), and a missing
    # slice doubles a gap: a tenth of the typical gap tells them apart
    if gaps[widest] - narrowest > max(0.1 * float(np.median(gaps)), 0.05):
        raise UserError(f"{name}: the slices are not evenly spaced ({gaps[widest]:.4g} mm between slices "
                        f"{widest + 1} and {widest + 2} along the normal, {narrowest:.4g} mm elsewhere; a slice "
                        "missing?): pass the complete series, or one slice's file")
    return float(np.median(gaps))


def read_series(folder: Path) -> tuple[np.ndarray, tuple[float, ...] | None, Dataset, list[Path] | None]:
    """Volume (slices, rows, cols) of the series in ``folder``, spacing, first dataset, and the
    file of each slice of the volume (None when the volume's slices are not the files' slices:
    a sagittal or coronal series turned axial)."""
    files = sort_series(folder)
    datasets = [read_dataset(path) for path in files]
    if any(_is_multiframe(ds) for ds in datasets):
        raise UserError(f"{folder} mixes multi-frame files into a series: pass the multi-frame file itself")
    stacked = np.stack([_stored_values(ds, path)[0] for ds, path in zip(datasets, files)])  # oriented once
    along_normal = all(_slice_position(ds) is not None for ds in datasets)
    cosines = datasets[0].get("ImageOrientationPatient")
    volume, spacing = to_io_layout(stacked, _series_spacing(datasets, str(folder)), cosines, along_normal, str(folder))
    # the file index, one value per slice, moved alike: still along axis 0 where slices stay slices
    moved = to_io_layout(np.arange(len(files), dtype=np.int32)[:, None, None], None, cosines, along_normal,
                         str(folder))[0]
    aligned = moved.shape[0] == len(files)
    return volume, spacing, datasets[0], [files[k] for k in moved[:, 0, 0]] if aligned else None


def _series_spacing(datasets: list[Dataset], name: str) -> tuple[float, ...] | None:
    first = datasets[0]
    positions = [_slice_position(ds) for ds in datasets]
    step = None
    if len(datasets) > 1 and all(p is not None for p in positions):
        step = _even_step(positions, name)
    if "PixelSpacing" not in first:
        return None
    row, col = (float(v) for v in first.PixelSpacing)
    if step is None:
        step = first.get("SpacingBetweenSlices", first.get("SliceThickness"))
    if step is None or float(step) <= 0:
        return None
    return (float(step), row, col)


# ------------------------------------------------------------------------------ writing
_INSTANCE_TAGS = ("SOPInstanceUID", "SeriesInstanceUID", "InstanceNumber", "SeriesNumber",
                  "SeriesDescription", "ImageType", "DerivationDescription", "ContentDate", "ContentTime",
                  "LargestImagePixelValue", "SmallestImagePixelValue", "PixelPaddingValue",
                  "PixelPaddingRangeLimit", "WindowCenter", "WindowWidth", "ModalityLUTSequence",
                  "VOILUTSequence", "RescaleType", "PixelData", "IconImageSequence")


def _encode(values: np.ndarray, modality: str | None) -> tuple[np.ndarray, float, float]:
    """Stored values, slope and intercept for ``values`` (HU for CT)."""
    if modality == "ct":
        # 1 HU a step, unless that overflows int16 (metal beyond 31743 HU): then the smallest slope that holds it
        info = np.iinfo(np.int16)
        slope = max(1.0, (float(values.max()) - CT_INTERCEPT) / info.max,
                    (CT_INTERCEPT - float(values.min())) / -info.min)
        stored = np.clip(np.rint((values - CT_INTERCEPT) / slope), info.min, info.max).astype(np.int16)
        return stored, slope, CT_INTERCEPT
    low, high = float(values.min()), float(values.max())
    slope = (high - low) / 65535.0 if high > low else 1.0
    return np.rint((values - low) / slope).astype(np.uint16), slope, low


def _set_pixels(ds: Dataset, stored: np.ndarray, slope: float, intercept: float) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    ds.RescaleSlope = f"{slope:.10g}"[:16]
    ds.RescaleIntercept = f"{intercept:.10g}"[:16]
    ds.RescaleType = "HU" if ds.get("Modality") == "CT" else "US"
    ds.PixelData = stored.tobytes()


def _geometry(ds: Dataset, spacing: tuple[float, float] | None, z: float) -> None:
    if spacing is not None:
        ds.PixelSpacing = [f"{v:.10g}"[:16] for v in spacing]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0, 0, f"{z:.10g}"[:16]]
    ds.SliceLocation = f"{z:.10g}"[:16]


def _minimal_dataset(modality: str | None, study: dict[str, str]) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.Modality = {"ct": "CT", "mr": "MR"}.get(modality or "", "OT")
    ds.ConversionType = "WSD"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Anonymous^", "scorerecon", "", ""
    ds.Laterality, ds.PatientOrientation = "", ""
    ds.StudyInstanceUID = study["study"]
    ds.FrameOfReferenceUID = study["frame"]
    ds.StudyDate, ds.StudyTime = study["date"], study["time"]
    ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
    ds.PositionReferenceIndicator = ""
    return ds


def _reference_datasets(reference: Path) -> list[Dataset]:
    """The reference's datasets (without pixels), sorted along the slice normal."""
    if reference.is_dir():
        datasets = [read_dataset(path, pixels=False) for path in sort_series(reference)]
    elif reference.is_file():
        datasets = [read_dataset(reference, pixels=False, fix="a --reference is a DICOM file or series folder")]
    else:
        raise UserError(f"reference {reference} does not exist: pass a DICOM file or series folder")
    if int(datasets[0].get("NumberOfFrames", 1) or 1) > 1:
        raise UserError(f"reference {reference} is a multi-frame DICOM: pass a series of single-frame slices")
    return datasets


def _reference_layout(volume: np.ndarray, spacing, refs: list[Dataset], reference: Path
                      ) -> tuple[np.ndarray, tuple[float, ...] | None]:
    """``volume`` and its spacing moved from the io layout into the reference's stored layout (the
    inverse of :func:`to_io_layout` for the reference's orientation), one slice per reference slice
    (a single reference slice serves a 2-D image)."""
    cosines = refs[0].get("ImageOrientationPatient")
    along_normal = len(refs) > 1 and all(_slice_position(ds) is not None for ds in refs)
    if cosines is not None and len(cosines) == 6:
        directions = axis_directions(cosines)
        if _reorients_volume(volume, along_normal):
            volume, spacing = from_closest_lps(volume, directions, spacing, str(reference))
        else:
            volume = flip_in_plane(volume, directions[1:])
    _check_reference_count(refs, volume.shape[0], reference)
    return np.ascontiguousarray(volume), spacing


def _check_reference_count(refs: list[Dataset], slices: int, reference: Path) -> None:
    if len(refs) != slices:
        raise UserError(f"reference {reference} has {len(refs)} slices but the image has {slices} "
                        "in the reference's orientation: pass a reference with one slice per image slice "
                        "(a single file for a 2-D image)")


def check_slice_reference(reference: Path) -> None:
    """Check, before any work, that ``reference`` can serve a 2-D image (one single-frame slice)."""
    _check_reference_count(_reference_datasets(reference), 1, reference)


def _from_reference(ref: Dataset, shape: tuple[int, int], spacing: tuple[float, float] | None) -> Dataset:
    """Copy of ``ref`` without pixels, private tags and instance identity; geometry rescaled to ``shape``."""
    ds = Dataset({elem.tag: elem for elem in ref if not elem.tag.is_private})
    for keyword in _INSTANCE_TAGS:
        if keyword in ds:
            delattr(ds, keyword)
    if spacing is None and "PixelSpacing" in ref:
        ref_spacing = np.asarray(ref.PixelSpacing, dtype=float)
        spacing = tuple(ref_spacing * np.array([int(ref.Rows), int(ref.Columns)]) / np.array(shape))
        if "ImagePositionPatient" in ref and "ImageOrientationPatient" in ref:
            cosines = np.asarray(ref.ImageOrientationPatient, dtype=float)
            shift = 0.5 * (np.asarray(spacing) - ref_spacing)  # centre of the first pixel moves inwards
            ipp = np.asarray(ref.ImagePositionPatient, dtype=float) + shift[1] * cosines[:3] + shift[0] * cosines[3:]
            ds.ImagePositionPatient = [f"{v:.10g}"[:16] for v in ipp]
    if spacing is not None:
        ds.PixelSpacing = [f"{v:.10g}"[:16] for v in spacing]
    return ds


def write_series(folder: Path, volume: np.ndarray, spacing: tuple[float, ...] | None,
                 reference: Path | None, modality: str | None, description: str = "") -> None:
    """Write ``volume`` (slices, rows, cols, in the layout of :mod:`scorerecon.data.io`) into the
    (empty, temporary) ``folder``; with a reference, in the reference's own layout.  The series
    is described as "scorerecon reconstruction", or "scorerecon " + ``description``."""
    refs = _reference_datasets(reference) if reference is not None else None
    if refs is not None:
        volume, spacing = _reference_layout(volume, spacing, refs, reference)
        if modality is None:
            modality = modality_of(refs[0])
    count, shape = volume.shape[0], volume.shape[1:]
    pixel_spacing = tuple(spacing[-2:]) if spacing is not None else None
    now = datetime.datetime.now()
    study = {"study": generate_uid(), "frame": generate_uid(), "date": now.strftime("%Y%m%d"),
             "time": now.strftime("%H%M%S")}
    series_uid = generate_uid()
    step = float(spacing[0]) if spacing is not None and len(spacing) == 3 else 1.0
    for k in range(count):
        if refs is not None:
            ds = _from_reference(refs[k], shape, pixel_spacing)
        else:
            ds = _minimal_dataset(modality, study)
            _geometry(ds, pixel_spacing, k * step)
        _identify(ds, series_uid, k, now, refs[k] if refs is not None else None,
                  f"{SERIES_PREFIX}{description}" if description else SERIES_DESCRIPTION)
        _set_pixels(ds, *_encode(volume[k], modality))
        _save(ds, folder / f"IM{k + 1:05d}.dcm")


SERIES_PREFIX = "scorerecon "
SERIES_DESCRIPTION = SERIES_PREFIX + "reconstruction"


def is_written_by_scorerecon(path: Path) -> bool:
    """Whether ``path`` is a slice of a series this module wrote (``IM00001.dcm``, … with a
    SeriesDescription starting "scorerecon "): the only files an output folder may hold to be replaced.  A user's own
    series (Horos names its slices ``IM-0001-0001.dcm``) is never one."""
    if re.fullmatch(r"IM\d{5}\.dcm", path.name) is None or not path.is_file():
        return False
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesDescription"])
    except _UNREADABLE:
        return False
    return str(ds.get("SeriesDescription", "")).startswith(SERIES_PREFIX)


def _identify(ds: Dataset, series_uid: str, k: int, now: datetime.datetime, ref: Dataset | None,
              description: str) -> None:
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesNumber = 9001
    ds.InstanceNumber = k + 1
    ds.SeriesDescription = description
    ds.ImageType = ["DERIVED", "SECONDARY"] + list(ref.get("ImageType", [])[2:3] if ref is not None else [])
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    if ref is not None:
        ds.DerivationDescription = "reconstructed by scorerecon"


def _save(ds: Dataset, path: Path) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
