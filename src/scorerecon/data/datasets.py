"""Training, validation and evaluation sets built from packaged public sources.

``prepare_dataset(name)`` writes, atomically, a folder with

    train.npy   (N, 256, 256) float32 in the unit domain — the prior's training images
    val.npy     slices held out for tuning and choices: for head-ct and brain-mri, every 10th
                kept slice of the *training* source (neighbours of a val slice are in train, and
                for brain-mri a third to two thirds of a val slice's voxels lie in training slices
                of the other planes, benchmarks/results/validation_overlap.md: val is optimistic);
                for chest-ct and clinical-brain-mri, another patient
    eval.npy    slices of other patients / another template — evaluation only, never training
    meta.json   sources, licences, window, spacing, slice provenance and counts

head-ct.  Training source: one head CT (ProMED CT 0051, 108 axial slices of 256², 0.957 mm,
1.5 mm apart, int16 HU) inside ``Cranium.inv3`` of the Debian package ``invesalius-examples``
(GPL-2).  Rows are flipped so that the anterior is at the top, as in DICOM.  Slices with at least
5 % soft tissue or bone (u > 0.25, i.e. HU > -250) are kept and mapped to the unit window
u = (HU + 1000) / 3000 **clipped to [0, 1]** (the prior never sees metal above 2000 HU).
Evaluation: the CT slices of other patients among pydicom's test files (PyPI ``pydicom`` and
``pydicom-data``, MIT) listed in :data:`CT_EVAL_FILES` (all four decode; two are JPEG 2000, which
pydicom decodes with Pillow's OpenJPEG; ``CT_small.dcm`` is a 128² crop, upsampled 2×).
Padding below -1024 HU (outside the field of view) is set to air, then each slice is resized to
256² over the same field of view with anti-aliasing (``skimage.transform.resize``, linear) and
its spacing scaled accordingly.

brain-mri.  Training source: the Colin27 T1 templates ``ch2.nii.gz`` (1 mm, with skull) and
``ch2better.nii.gz`` (0.5 mm, skull-stripped) of the Debian package ``mricron-data``.
Axial, coronal and sagittal slices every 2 mm are *fitted* to 256²: scaled isotropically so the
longer physical side spans 256 pixels (anti-aliased), then zero-padded symmetrically; slices
whose foreground (> 10 % of the volume maximum) covers less than 10 % of the 256² grid are
dropped.  Every slice is divided by its own maximum (``magnitude_scale``) so it peaks at 1.
Evaluation: the MNI152 2009 T1 template shipped in PyPI ``nilearn``, slices every 10 mm, same
processing.  Slices are in the radiological orientation of :mod:`scorerecon.data.io` (patient's
right on the left).  Until 2026-12-04 the NIfTI reader returned the mirror image, so a brain-mri
prepared before then has mirrored train and val slices; its eval slices are unchanged (the
MNI152 template is left–right symmetric), and the priors, trained with left–right flips, hold.

chest-ct.  Two more CT patients, so that a CT prior can be trained on more than one patient and
chosen on a patient it never saw: the chest CT volumes ``lung2_image.nrrd`` (61 axial slices of
512², 0.627 mm, 5 mm apart) and ``lung1_image.nrrd`` (48 slices of 512², 0.570 mm) that the
pyradiomics 3.1.0 source archive (PyPI, BSD-3-clause) ships as its own test cases (the archive
does not name their clinical source).  Train: lung2.  Val: **lung1, another patient** (unlike
head-ct and brain-mri, whose val slices come from the training subject).  Eval: the same pydicom
slices as head-ct.  Slices are resized to 256² over the same field of view (:func:`resample_ct`),
filtered and mapped to the unit window as head-ct.  Train a prior on both CT sets with
``[data] dataset = ["head-ct", "chest-ct"]``.

clinical-brain-mri.  Two clinical brain MR patients, so that an MRI prior can be checked, and
chosen, on real scans of subjects it never saw instead of on templates: the contrast-enhanced T1
volumes ``brain1_image.nrrd`` (25 axial slices of 256², 0.78 mm, 6.5 mm apart) and
``brain2_image.nrrd`` (23 slices) of the same pyradiomics 3.1.0 source archive as chest-ct.
Train: brain1.  Val: **brain2, another patient**.  Eval: the MNI152 slices of brain-mri.  Axial
slices only (the slices are 6.5 mm thick), fitted and filtered as brain-mri.  Train a prior on
templates and patients with ``[data] dataset = ["brain-mri", "clinical-brain-mri"]``.

Debian packages come from ``apt-get download`` or from ``--source`` (a .deb or an unpacked
folder); a .deb is an ``ar`` archive whose ``data.tar.*`` member is unpacked with the standard
library (no ``dpkg-deb`` needed).  The PyPI source archive is downloaded from its pinned address
and checked against its pinned SHA-256, or given with ``--source`` (the .tar.gz or its unpacked
folder); pip cannot fetch it without building it.
"""

from __future__ import annotations

import hashlib
import http.client
import io as _io
import json
import os
import plistlib
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..atomic import atomic_directory
from ..errors import UserError
from .intensity import HU_HIGH, HU_LOW, hu_to_unit, magnitude_scale

#: what unpacking a damaged (truncated, corrupted) archive raises beside tarfile's own errors
#: (gzip's BadGzipFile and bz2's data errors are OSErrors; :func:`_unpack_error` tells a full disk apart)
_DAMAGED_ARCHIVE = (tarfile.TarError, EOFError, zlib.error, OSError, ValueError)


def _unpack_error(err: Exception, what: str, fix: str) -> UserError:
    """The one line for an error while unpacking ``what``: a failure to write (a full disk, no
    permission) names the file and that cause; anything else is a damaged archive, with ``fix``."""
    import errno
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT):
        return UserError(f"cannot write {err.filename or 'a file'} while unpacking {what} ({err.strerror}): "
                         "free space there or fix its permissions")
    return UserError(f"cannot unpack {what} ({type(err).__name__}: {err}): {fix}")

SIZE = 256
VAL_EVERY = 10
CT_TISSUE_UNIT = 0.25          # u > 0.25  <=>  HU > -250
CT_MIN_TISSUE_FRACTION = 0.05
MRI_FOREGROUND = 0.10
MRI_MIN_FOREGROUND_FRACTION = 0.10
MRI_TRAIN_STEP_MM = 2.0
MRI_EVAL_STEP_MM = 10.0
AIR_HU = -1024.0
Spacing2 = tuple[float, float]
DATASET_FILES = ("train.npy", "val.npy", "eval.npy", "meta.json")

#: pydicom-data CT files of patients other than the training one: (file, body part).
CT_EVAL_FILES = (("693_UNCI.dcm", "head"), ("J2K_pixelrep_mismatch.dcm", "head"),
                 ("explicit_VR-UN.dcm", "abdomen"), ("CT_small.dcm", "spine"))
HEAD_CT_PACKAGE = "invesalius-examples"
BRAIN_MRI_PACKAGE = "mricron-data"
MRI_TEMPLATES = ("ch2.nii.gz", "ch2better.nii.gz")
#: (file in pyradiomics' data/ folder, split): the two chest CT patients of chest-ct.
CHEST_CT_FILES = (("lung2_image.nrrd", "train"), ("lung1_image.nrrd", "val"))
#: the same for the two brain MR patients of clinical-brain-mri
CLINICAL_BRAIN_MRI_FILES = (("brain1_image.nrrd", "train"), ("brain2_image.nrrd", "val"))
LICENCES = {HEAD_CT_PACKAGE: "GPL-2 (debian/copyright of invesalius-examples)",
            "pyradiomics": "BSD-3-clause (LICENSE.txt of the pyradiomics source archive)",
            BRAIN_MRI_PACKAGE: "BSD-3-clause (debian/copyright of mricron-data)",
            "pydicom-data": "MIT", "nilearn": "BSD-3-clause package; the MNI ICBM152 2009 template "
                            "is © McConnell Brain Imaging Centre, redistributable with its copyright notice"}


@dataclass(frozen=True)
class PackageSource:
    """Where a dataset's raw files come from: a Debian package (``url`` empty) or a PyPI source
    archive at a pinned ``url`` with its ``sha256``."""

    package: str
    url: str = ""
    sha256: str = ""

    def root(self, given: str | os.PathLike | None, work: Path) -> Path:
        """Folder holding the unpacked package: ``given`` itself if a folder, else unpacked."""
        if self.url:
            return sdist_root(self, given, work)
        return debian_root(self.package, given, work)


HEAD_CT_SOURCE = PackageSource(HEAD_CT_PACKAGE)
BRAIN_MRI_SOURCE = PackageSource(BRAIN_MRI_PACKAGE)
PYRADIOMICS_SOURCE = PackageSource(
    "pyradiomics", "https://files.pythonhosted.org/packages/03/c1/20fc2c50ab1e3304da36d866042a1905a2b05a1431ece"
                   "35448ab6b4578f2/pyradiomics-3.1.0.tar.gz",
    "24722c962a6bbd09bc39c1c67dbffe92435f9692a421fabaae8a6b4511eb48e4")


@dataclass
class Slice:
    """One processed 256² slice and where it came from."""

    image: np.ndarray
    source: str
    spacing: tuple[float, float]


# ------------------------------------------------------------------------------ folders
def data_root() -> Path:
    """Folder of prepared datasets: $SCORERECON_DATA, else the user cache dir /datasets."""
    env = os.environ.get("SCORERECON_DATA")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir
    return Path(user_cache_dir("scorerecon")) / "datasets"


def load_split(name: str, split: str, root: str | os.PathLike | None = None) -> np.ndarray:
    """The (N, 256, 256) float32 array of ``split`` ('train', 'val', 'eval') of a prepared dataset."""
    _check_name(name)
    if split not in ("train", "val", "eval"):
        raise UserError(f"unknown split {split!r}: use 'train', 'val' or 'eval'")
    path = (Path(root) if root is not None else data_root() / name) / f"{split}.npy"
    if not path.is_file():
        raise UserError(f"{path} does not exist: run 'scorerecon data prepare {name}' first")
    try:
        images = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise UserError(f"{path} is not a readable array ({err}): {prepare_again(name)}") from None
    if images.ndim != 3:
        raise UserError(f"{path} has shape {images.shape}, not (slices, H, W): {prepare_again(name)}")
    return images


def load_meta(name: str, root: str | os.PathLike | None = None) -> dict:
    """The ``meta.json`` of a prepared dataset (sources, licences, window, spacing, provenance)."""
    _check_name(name)
    path = (Path(root) if root is not None else data_root() / name) / "meta.json"
    if not path.is_file():
        raise UserError(f"{path} does not exist: run 'scorerecon data prepare {name}' first")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{path} is not valid JSON ({err}): {prepare_again(name)}") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path} is not a JSON object: {prepare_again(name)}")
    return meta


def prepare_again(name: str) -> str:
    """The fix for a prepared dataset whose files are broken."""
    return f"prepare the dataset again with 'scorerecon data prepare {name}'"


def _check_name(name: str) -> None:
    if name not in _BUILDERS:
        raise UserError(f"unknown dataset {name!r}: choose one of {', '.join(_BUILDERS)}")


def prepare_dataset(name: str, out: str | os.PathLike | None = None,
                    source: str | os.PathLike | None = None) -> Path:
    """Build dataset ``name`` into ``out`` and return the folder; ``source`` is the package file
    or its unpacked folder, fetched when None."""
    _check_name(name)
    folder = _output_folder(Path(out) if out is not None else data_root() / name)
    package, builder = _BUILDERS[name]
    with tempfile.TemporaryDirectory(prefix="scorerecon-source-") as work:
        root = package.root(source, Path(work))
        splits, meta = builder(root)
        with atomic_directory(folder) as tmp:
            _write_splits(tmp, name, splits, meta)
    return folder


def _output_folder(folder: Path) -> Path:
    """``folder`` after checking that replacing it cannot destroy anything but an older dataset."""
    if folder.is_dir() and any(p.name not in DATASET_FILES for p in folder.iterdir()):
        raise UserError(f"{folder} exists and holds other files: pass --out with a new or dataset folder")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create {folder.parent} ({err.strerror}): pass --out with a writable folder") from None
    return folder


def _write_splits(folder: Path, name: str, splits: dict[str, list[Slice]], meta: dict) -> None:
    empty = [split for split, slices in splits.items() if not slices]
    if empty:
        raise UserError(f"no slice of the {name} source is left for {' and '.join(empty)} (all filtered out): "
                        "pass the source the dataset is built from (--source)")
    for split, slices in splits.items():
        np.save(folder / f"{split}.npy", np.stack([s.image for s in slices]).astype(np.float32))
    meta = {"dataset": name, "size": [SIZE, SIZE], **meta,
            "counts": {split: len(slices) for split, slices in splits.items()},
            "slices": {split: [{"source": s.source, "spacing_mm": list(s.spacing)} for s in slices]
                       for split, slices in splits.items()}}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")


# ------------------------------------------------------------------------ Debian packages
def _manual_hint(package: str) -> str:
    return (f"download {package}_*_all.deb by hand from a Debian mirror "
            f"(https://packages.debian.org/stable/all/{package}/download) and pass --source PATH")


def debian_root(package: str, deb: str | os.PathLike | None, work: Path) -> Path:
    """Folder holding the unpacked package: ``deb`` itself if a folder, else the unpacked .deb."""
    if deb is None:
        deb = _apt_download(package, work)
    deb = Path(deb)
    if deb.is_dir():
        return deb
    if not deb.is_file():
        raise UserError(f"--source {deb} does not exist: pass the {package} .deb file or its unpacked folder")
    return unpack_deb(deb, work / "root")


def _apt_download(package: str, work: Path) -> Path:
    if shutil.which("apt-get") is None:
        raise UserError(f"apt-get is not available to fetch {package}: {_manual_hint(package)}")
    try:
        proc = subprocess.run(["apt-get", "download", package], cwd=work, capture_output=True,
                              text=True, timeout=900)
    except subprocess.TimeoutExpired:
        raise UserError(f"'apt-get download {package}' timed out: {_manual_hint(package)}") from None
    debs = sorted(work.glob(f"{package}_*.deb"))
    if proc.returncode != 0 or not debs:
        reason = (proc.stderr.strip().splitlines() or ["no .deb written"])[-1]
        raise UserError(f"'apt-get download {package}' failed ({reason}): {_manual_hint(package)}")
    return debs[0]


def _ar_members(blob: bytes) -> Iterator[tuple[str, bytes]]:
    """Members of a Unix ``ar`` archive: the 8-byte magic, then 60-byte headers (name 16, size at 48)."""
    if not blob.startswith(b"!<arch>\n"):
        raise UserError("the --source file is not a Debian package (no ar header): pass a .deb file")
    pos = 8
    while pos + 60 <= len(blob):
        header = blob[pos:pos + 60]
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            raise UserError(f"the ar header of member {name!r} is damaged: download the .deb again") from None
        yield name, blob[pos + 60:pos + 60 + size]
        pos += 60 + size + (size % 2)


def unpack_deb(deb: Path, dest: Path) -> Path:
    """Extract the ``data.tar.{gz,xz,bz2}`` member of ``deb`` into ``dest`` (like ``dpkg-deb -x``)."""
    for name, content in _ar_members(deb.read_bytes()):
        if name.startswith("data.tar"):
            try:
                with tarfile.open(fileobj=_io.BytesIO(content), mode="r:*") as tar:
                    tar.extractall(dest, filter="data")
            except _DAMAGED_ARCHIVE as err:
                raise _unpack_error(err, f"{name} of {deb}",
                                    f"unpack it with 'dpkg-deb -x {deb} DIR' and pass --source DIR") from None
            return dest
    raise UserError(f"{deb} has no data.tar member: pass a Debian binary package")


# --------------------------------------------------------------- PyPI source archives
def sdist_root(source: PackageSource, given: str | os.PathLike | None, work: Path) -> Path:
    """Folder holding the unpacked source archive: ``given`` if a folder, else the checked archive
    (``given`` or downloaded from the pinned address) unpacked."""
    archive = Path(given) if given is not None else _download(source, work / Path(source.url).name)
    if archive.is_dir():
        return archive
    if not archive.is_file():
        raise UserError(f"--source {archive} does not exist: pass {Path(source.url).name} or its unpacked folder")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != source.sha256:
        raise UserError(f"{archive} is not {Path(source.url).name} (SHA-256 {digest[:12]}…, expected "
                        f"{source.sha256[:12]}…): download {source.url} and pass it with --source")
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            tar.extractall(work / "root", filter="data")
    except _DAMAGED_ARCHIVE as err:
        raise _unpack_error(err, str(archive), f"download {source.url} again") from None
    return work / "root"


def _download(source: PackageSource, dest: Path) -> Path:
    try:
        with urllib.request.urlopen(source.url, timeout=300) as response, open(dest, "wb") as out:
            shutil.copyfileobj(response, out)
    except (OSError, http.client.HTTPException) as err:
        raise UserError(f"cannot download {source.url} ({err}): download it by hand (e.g. curl -LO) "
                        "and pass it with --source FILE") from None
    return dest


def find_file(root: Path, name: str, package: str) -> Path:
    """The file called ``name`` anywhere below ``root``."""
    found = sorted(root.rglob(name))
    if not found:
        raise UserError(f"{name} not found in {root}: pass the {package} package or its unpacked folder with --source")
    return found[0]


# ------------------------------------------------------------------------------ head CT
def read_inv3(path: Path) -> tuple[np.ndarray, tuple[float, float, float], dict]:
    """HU volume (slices, rows, cols; anterior at the top), spacing (z, y, x) mm and main.plist."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            plist = plistlib.loads(tar.extractfile(members["main.plist"]).read())
            matrix = plist["matrix"]
            raw = tar.extractfile(members[matrix["filename"]]).read()
            shape = tuple(int(n) for n in matrix["shape"])
            dtype = np.dtype(matrix["dtype"]).newbyteorder("<")
            sx, sy, sz = (float(v) for v in plist["spacing"])
    except (*_DAMAGED_ARCHIVE, KeyError, TypeError, plistlib.InvalidFileException) as err:
        raise UserError(f"{path} is not an InVesalius project ({type(err).__name__}: {err}): "
                        f"pass the {HEAD_CT_PACKAGE} package with --source") from None
    if len(raw) != int(np.prod(shape)) * dtype.itemsize:
        raise UserError(f"{path}: {matrix['filename']} holds {len(raw)} bytes, not {shape} {dtype}: "
                        "the file is damaged")
    volume = np.frombuffer(raw, dtype=dtype).reshape(shape)[:, ::-1, :].astype(np.float32)
    return volume, (sz, sy, sx), plist


def _unit_ct(hu: np.ndarray) -> np.ndarray:
    return np.clip(hu_to_unit(hu), 0.0, 1.0).astype(np.float32)


def _split_every(slices: list[Slice]) -> tuple[list[Slice], list[Slice]]:
    """(train, val): every VAL_EVERY-th slice, starting in the middle of the first block, is val."""
    val = [s for i, s in enumerate(slices) if i % VAL_EVERY == VAL_EVERY // 2]
    train = [s for i, s in enumerate(slices) if i % VAL_EVERY != VAL_EVERY // 2]
    return train, val


def _build_head_ct(root: Path) -> tuple[dict[str, list[Slice]], dict]:
    inv3 = find_file(root, "Cranium.inv3", HEAD_CT_PACKAGE)
    volume, spacing, plist = read_inv3(inv3)
    if volume.shape[1:] != (SIZE, SIZE):
        raise UserError(f"{inv3} holds {volume.shape[1:]} slices, expected {SIZE}²: use the {HEAD_CT_PACKAGE} package")
    kept = [Slice(_unit_ct(hu), f"Cranium.inv3:axial:{k}", spacing[1:]) for k, hu in enumerate(volume)
            if np.mean(hu_to_unit(hu) > CT_TISSUE_UNIT) >= CT_MIN_TISSUE_FRACTION]
    train, val = _split_every(kept)
    meta = {"modality": "ct", **_ct_units(),
            "training_source": {"package": HEAD_CT_PACKAGE, "file": str(inv3.relative_to(root)),
                                "licence": LICENCES[HEAD_CT_PACKAGE], "name": plist.get("name"),
                                "shape": list(volume.shape), "spacing_mm": list(spacing),
                                "hu_range": [float(volume.min()), float(volume.max())]},
            "evaluation_source": _ct_evaluation_source()}
    return {"train": train, "val": val, "eval": _ct_evaluation()}, meta


# ----------------------------------------------------------------------------- chest CT
def _build_chest_ct(root: Path) -> tuple[dict[str, list[Slice]], dict]:
    splits: dict[str, list[Slice]] = {"train": [], "val": []}
    volumes = _pyradiomics_volumes(root, CHEST_CT_FILES, "a CT")
    for name, split, volume in volumes:
        for k, hu in enumerate(volume.array):
            hu256, spacing = resample_ct(hu, volume.spacing[1:])
            if np.mean(hu_to_unit(hu256) > CT_TISSUE_UNIT) >= CT_MIN_TISSUE_FRACTION:
                splits[split].append(Slice(_unit_ct(hu256), f"pyradiomics:{name}:axial:{k}", spacing))
    meta = {"modality": "ct", **_ct_units(),
            "training_source": _pyradiomics_provenance(root, volumes, "val is a patient not in train", "hu_range"),
            "evaluation_source": _ct_evaluation_source()}
    return {**splits, "eval": _ct_evaluation()}, meta


def _pyradiomics_volumes(root: Path, files: tuple[tuple[str, str], ...], kind: str) -> list[tuple[str, str, Any]]:
    """(file name, split, :class:`~scorerecon.data.io.Image`) of each of ``files`` in the unpacked archive."""
    from .io import read_image
    volumes = []
    for name, split in files:
        path = find_file(root, name, PYRADIOMICS_SOURCE.package)
        volume = read_image(path)
        if volume.array.ndim != 3 or volume.spacing is None:
            raise UserError(f"{path} is not {kind} volume with spacing: pass the pyradiomics 3.1.0 source archive")
        volume.meta["path"] = path
        volumes.append((name, split, volume))
    return volumes


def _pyradiomics_provenance(root: Path, volumes: list, note: str, range_key: str) -> dict:
    """The training source of a dataset built from the pyradiomics archive's test volumes, each
    with its value range under ``range_key``."""
    described = [{"file": str(v.meta["path"].relative_to(root)), "split": split, "shape": list(v.array.shape),
                  "spacing_mm": list(v.spacing), range_key: [float(v.array.min()), float(v.array.max())]}
                 for _, split, v in volumes]
    return {"package": f"PyPI {PYRADIOMICS_SOURCE.package} 3.1.0 source archive", "url": PYRADIOMICS_SOURCE.url,
            "sha256": PYRADIOMICS_SOURCE.sha256, "licence": LICENCES["pyradiomics"], "volumes": described,
            "note": note}


def _ct_units() -> dict:
    return {"unit": f"u = (HU - {HU_LOW:g}) / ({HU_HIGH:g} - {HU_LOW:g}), clipped to [0, 1]",
            "window_hu": [HU_LOW, HU_HIGH]}


def _ct_evaluation() -> list[Slice]:
    """The unit-window evaluation slices shared by the CT datasets (:func:`ct_evaluation_slices`)."""
    return [Slice(_unit_ct(hu), src, sp) for hu, src, sp in ct_evaluation_slices()]


def _ct_evaluation_source() -> dict:
    return {"packages": "pydicom test files and pydicom-data (pydicom.data.get_testdata_file)",
            "licence": LICENCES["pydicom-data"], "files": [f for f, _ in CT_EVAL_FILES]}


def testdata_file(name: str) -> Path:
    """The pydicom test file ``name``, from pydicom or pydicom-data, never downloaded (pydicom's
    default would fetch a missing one from GitHub); a missing one is a UserError naming the fix."""
    from pydicom.data import get_testdata_file
    found = get_testdata_file(name, download=False)
    if found is None:
        raise UserError(f"the evaluation file {name} is missing: pip install pydicom-data")
    return Path(found)


def resample_ct(hu: np.ndarray, spacing: tuple[float, float], size: int = SIZE) -> tuple[np.ndarray, Spacing2]:
    """Padding set to air, then anti-aliased linear resize to ``size``² over the same field of view."""
    from skimage.transform import resize
    hu = np.maximum(np.asarray(hu, dtype=np.float64), AIR_HU)
    out = resize(hu, (size, size), order=1, anti_aliasing=hu.shape[0] > size, preserve_range=True, mode="edge")
    new_spacing = tuple(float(s) * n / size for s, n in zip(spacing, hu.shape))
    return out.astype(np.float32), new_spacing


def ct_evaluation_slices() -> list[tuple[np.ndarray, str, tuple[float, float]]]:
    """(HU 256² image, 'pydicom:file:body part', spacing) for each file of :data:`CT_EVAL_FILES`."""
    from .io import read_image
    out = []
    for name, part in CT_EVAL_FILES:
        image = read_image(testdata_file(name))
        hu, spacing = resample_ct(image.array, image.spacing)
        out.append((hu, f"pydicom:{name}:{part}", spacing))
    return out


# ---------------------------------------------------------------------------- brain MRI
def fit_slice(image: np.ndarray, spacing: Spacing2, size: int = SIZE) -> tuple[np.ndarray, Spacing2]:
    """Scale isotropically so the longer physical side spans ``size`` pixels, zero-pad to ``size``²."""
    from skimage.transform import resize
    extent = np.asarray(image.shape) * np.asarray(spacing, dtype=float)
    pixel = float(extent.max()) / size
    shape = tuple(min(size, max(1, int(round(e / pixel)))) for e in extent)
    scaled = resize(image.astype(np.float64), shape, order=1, anti_aliasing=True, preserve_range=True)
    out = np.zeros((size, size), dtype=np.float32)
    top, left = (size - shape[0]) // 2, (size - shape[1]) // 2
    out[top:top + shape[0], left:left + shape[1]] = np.maximum(scaled, 0.0)
    return out, (pixel, pixel)


def template_planes(volume: np.ndarray,
                    spacing: tuple[float, float, float]) -> Iterator[tuple[str, int, np.ndarray, Spacing2, float]]:
    """(plane, index, slice, in-plane spacing, slice step) with the superior/anterior side up."""
    sz, sy, sx = spacing
    yield from (("axial", k, volume[k], (sy, sx), sz) for k in range(volume.shape[0]))
    yield from (("coronal", j, volume[::-1, j, :], (sz, sx), sy) for j in range(volume.shape[1]))
    yield from (("sagittal", i, volume[::-1, :, i], (sz, sy), sx) for i in range(volume.shape[2]))


def template_slices(volume: np.ndarray, spacing: tuple[float, float, float], step_mm: float,
                    name: str, planes: tuple[str, ...] = ("axial", "coronal", "sagittal")) -> list[Slice]:
    """Fitted, per-slice max-scaled slices every ``step_mm`` in ``planes``, with enough brain."""
    threshold = MRI_FOREGROUND * float(volume.max())
    slices = []
    for plane, index, image, pixel, step in template_planes(volume, spacing):
        stride = max(1, int(round(step_mm / step)))
        if plane not in planes or index % stride or np.mean(image > threshold) == 0:
            continue
        fitted, new_spacing = fit_slice(image, pixel)
        if np.mean(fitted > threshold) < MRI_MIN_FOREGROUND_FRACTION:
            continue
        slices.append(Slice(fitted / magnitude_scale(fitted), f"{name}:{plane}:{index}", new_spacing))
    return slices


def _build_brain_mri(root: Path) -> tuple[dict[str, list[Slice]], dict]:
    from .io import read_image
    train, val, sources = [], [], []
    for template in MRI_TEMPLATES:
        path = find_file(root, template, BRAIN_MRI_PACKAGE)
        image = read_image(path)
        t, v = _split_every(template_slices(image.array, image.spacing, MRI_TRAIN_STEP_MM, template))
        train += t
        val += v
        sources.append({"file": str(path.relative_to(root)), "shape": list(image.array.shape),
                        "spacing_mm": list(image.spacing)})
    meta = _mri_meta({"package": BRAIN_MRI_PACKAGE, "licence": LICENCES[BRAIN_MRI_PACKAGE],
                      "templates": sources, "step_mm": MRI_TRAIN_STEP_MM})
    return {"train": train, "val": val, "eval": mni_evaluation_slices()}, meta


def _mri_meta(training_source: dict) -> dict:
    return {"modality": "mr", "unit": "magnitude divided by the slice maximum (peak 1)",
            "fit": f"isotropic scaling of the longer side to {SIZE} px, zero padding",
            "training_source": training_source,
            "evaluation_source": {"package": "nilearn", "licence": LICENCES["nilearn"],
                                  "template": "MNI ICBM152 2009a T1 (load_mni152_template)",
                                  "step_mm": MRI_EVAL_STEP_MM}}


def _build_clinical_brain_mri(root: Path) -> tuple[dict[str, list[Slice]], dict]:
    splits: dict[str, list[Slice]] = {"train": [], "val": []}
    volumes = _pyradiomics_volumes(root, CLINICAL_BRAIN_MRI_FILES, "an MR")
    for name, split, volume in volumes:
        splits[split] += template_slices(volume.array, volume.spacing, volume.spacing[0], f"pyradiomics:{name}",
                                         planes=("axial",))
    note = "contrast-enhanced T1 of two patients; val is a patient not in train"
    return {**splits, "eval": mni_evaluation_slices()}, _mri_meta(_pyradiomics_provenance(root, volumes, note, "value_range"))


def mni152_volume() -> tuple[np.ndarray, tuple[float, float, float]]:
    """The 1 mm MNI152 T1 template from nilearn as a (slices, rows, cols) volume and spacing."""
    try:
        from nilearn.datasets import load_mni152_template
    except ImportError:
        raise UserError("the MRI evaluation set needs nilearn: pip install nilearn") from None
    from .io import nifti_volume
    return nifti_volume(load_mni152_template(resolution=1), "MNI152 template")


def mni_evaluation_slices(step_mm: float = MRI_EVAL_STEP_MM) -> list[Slice]:
    """Evaluation slices of the MNI152 template (other brain than the training templates)."""
    volume, spacing = mni152_volume()
    return template_slices(volume, spacing, step_mm, "MNI152")


_BUILDERS: dict[str, tuple[PackageSource, Callable[[Path], tuple[dict, dict]]]] = {
    "head-ct": (HEAD_CT_SOURCE, _build_head_ct),
    "brain-mri": (BRAIN_MRI_SOURCE, _build_brain_mri),
    "chest-ct": (PYRADIOMICS_SOURCE, _build_chest_ct),
    "clinical-brain-mri": (PYRADIOMICS_SOURCE, _build_clinical_brain_mri),
}
#: the datasets ``scorerecon data prepare`` builds
DATASET_NAMES = tuple(_BUILDERS)
