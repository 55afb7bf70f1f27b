"""Held-out sample images shipped inside the package (no network, no dataset preparation).

``samples/<name>.npz`` hold ``image`` (stored values), ``scale`` (physical value = image ·
scale), ``spacing`` (mm per axis), ``modality`` and ``source``; ``samples/<name>.dcm`` are DICOM
files.  None of them is in any training set: the CT slices are other patients than the head-ct
training patient, the MRI slices come from the MNI152 template, not from Colin27.  Sources and
licences: ``samples/LICENSES.md``.  :func:`build_samples` regenerates the .npz files from the
pip packages ``pydicom-data`` and ``nilearn`` with the evaluation processing of
:mod:`scorerecon.data.datasets`.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import UserError
from .io import Image, read_image

#: CT samples: name -> pydicom-data file (HU, resampled to 256², stored as int16).
CT_SAMPLES = {"ct-head-0": "J2K_pixelrep_mismatch.dcm", "ct-head-1": "693_UNCI.dcm",
              "ct-abdomen-0": "explicit_VR-UN.dcm"}
#: MRI samples: name -> (plane, index) of the 1 mm MNI152 template (fitted to 256², uint16).
MRI_SAMPLES = {"mri-brain-0": ("axial", 90), "mri-brain-1": ("coronal", 120), "mri-brain-2": ("sagittal", 100)}
#: DICOM samples: name -> pydicom test file (copied as is).
DICOM_SAMPLES = {"ct-spine-dicom": "CT_small.dcm"}


def samples_dir() -> Path:
    """The folder of bundled samples inside the installed package."""
    return Path(str(resources.files("scorerecon") / "data" / "samples"))


def _files() -> dict[str, Path]:
    return {p.name.split(".")[0]: p for p in sorted(samples_dir().iterdir())
            if p.suffix in (".npz", ".dcm")}


def list_samples() -> list[str]:
    """Names of the bundled samples."""
    return sorted(_files())


def sample_path(name: str) -> Path:
    """File of the bundled sample ``name``."""
    files = _files()
    if name not in files:
        raise UserError(f"unknown sample {name!r}: choose one of {', '.join(sorted(files))}")
    return files[name]


def load_sample(name: str) -> Image:
    """The bundled sample ``name`` as an :class:`Image` (CT in HU, MRI magnitude peaking at 1)."""
    image = read_image(sample_path(name))
    image.meta["sample"] = name
    return image


# --------------------------------------------------------------------------- rebuilding
def build_samples(folder: str | Path | None = None) -> list[Path]:
    """Regenerate the bundled sample files into ``folder`` (default: the package's samples)."""
    from .datasets import fit_slice, mni152_volume, resample_ct, template_planes, testdata_file
    folder = Path(folder) if folder is not None else samples_dir()
    written = []
    for name, file in CT_SAMPLES.items():
        source = read_image(testdata_file(file))
        hu, spacing = resample_ct(source.array, source.spacing)
        written.append(_save(folder / f"{name}.npz", np.rint(hu).astype(np.int16), 1.0, spacing,
                             "ct", f"pydicom test file {file}"))
    volume, spacing3 = mni152_volume()
    planes = {(plane, index): (image, pixel) for plane, index, image, pixel, _ in template_planes(volume, spacing3)}
    for name, key in MRI_SAMPLES.items():
        fitted, spacing = fit_slice(*planes[key])
        stored = np.rint(65535.0 * fitted / fitted.max()).astype(np.uint16)
        written.append(_save(folder / f"{name}.npz", stored, 1.0 / 65535.0, spacing, "mr",
                             f"nilearn MNI152 2009a T1 template, {key[0]} slice {key[1]}"))
    for name, file in DICOM_SAMPLES.items():
        with atomic_path(folder / f"{name}.dcm", suffix=".dcm") as tmp:
            shutil.copyfile(testdata_file(file), tmp)
        written.append(folder / f"{name}.dcm")
    return written


def _save(path: Path, stored: np.ndarray, scale: float, spacing, modality: str, source: str) -> Path:
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, image=stored, scale=np.float64(scale), spacing=np.asarray(spacing),
                            modality=np.str_(modality), source=np.str_(source))
    return path
