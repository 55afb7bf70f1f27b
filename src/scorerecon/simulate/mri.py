"""Under-sampled single- and multi-coil k-space from a real magnitude image.

The forward model (REFERENCE.md, section 1; Chung & Ye 2022 for the synthetic phase and coils):

    s  = max |m|                              intensity scale (native units → unit domain)
    u  = (m / s) · e^{iφ}                     φ a smooth random phase (φ = 0 with ``real``)
    y_c = s · Λ ⊙ ( F(S_c u) + n_c ),         n_c ~ CN(0, σ²): Re, Im ~ N(0, σ²/2)

with F the centred orthonormal FFT, S_c birdcage sensitivities normalised to Σ_c |S_c|² = 1 (so
the root-sum-of-squares of the coil images is exactly |u|), S = 1 for a single coil, and σ the
``noise`` level relative to the image peak.  The ground truth is the magnitude m in the input's
units; the measurement file is a fastMRI file (see :mod:`scorerecon.data.fastmri`), or BART's
k-space pair (``.cfl``), which keeps the k-space only (no truth, maps or pixel size).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from ..checks import finite_number, seed_number, whole_number
from ..data.cfl import check_cfl_output, kspace_to_bart, write_cfl
from ..data.fastmri import ismrmrd_header, write_fastmri
from ..data.measurement import Measurement
from ..errors import UserError
from ..operators.coils import birdcage_maps, synthetic_phase
from ..operators.masks import effective_acceleration, make_mask, measured_center_fraction
from ..operators.mri import fft2c

FASTMRI_ATTRS = ("acquisition", "max", "norm", "patient_id")


def simulate_mri(image: np.ndarray, *, mask: str = "equispaced", acceleration: float = 4.0,
                 center_fraction: float = 0.08, coils: int = 1, noise: float = 0.0, real: bool = False,
                 seed: int = 0, pixel_size=(1.0, 1.0)) -> Measurement:
    """Simulate an MRI ``Measurement`` (k-space in the image's units) from a magnitude image (H, W).

    ``seed`` fixes the mask, the phase and the noise (three independent streams).  Negative
    values (interpolation undershoot) are clipped to 0 before the magnitude is used.
    """
    magnitude = _magnitude(image)
    noise, coils = finite_number("noise", noise, minimum=0), whole_number("coils", coils, minimum=1)
    seed = seed_number(seed)
    pixel_size = _pixel_pair(pixel_size)
    mask_seed, phase_seed, noise_seed = np.random.SeedSequence(seed).spawn(3)
    shape = magnitude.shape
    lam = make_mask(mask, shape, acceleration, center_fraction, seed=mask_seed)
    scale = float(magnitude.max())
    phase = np.zeros(shape, np.float32) if real else synthetic_phase(shape, seed=phase_seed)
    unit = (magnitude / scale) * np.exp(1j * phase)
    maps = birdcage_maps(coils, shape) if coils > 1 else np.ones((1, *shape), np.complex64)
    kspace = fft2c(torch.from_numpy((maps * unit).astype(np.complex64))).numpy()
    kspace = scale * lam * (kspace + _complex_noise(kspace.shape, noise, noise_seed))
    attrs = {
        "source": "simulated", "file_slice": 0,
        "acquisition": "simulated", "max": scale, "norm": float(np.linalg.norm(magnitude)),
        "patient_id": hashlib.sha256(magnitude.tobytes()).hexdigest()[:32],
        "intensity_scale": scale, "mask_pattern": mask, "acceleration": float(acceleration),
        "effective_acceleration": effective_acceleration(lam), "center_fraction": float(center_fraction),
        "measured_center_fraction": measured_center_fraction(lam), "coils": int(coils),
        "noise": float(noise), "real": bool(real), "seed": int(seed),
    }
    geometry = {"image_shape": list(shape), "output_shape": list(shape), "coils": int(coils),
                "pixel_size": [float(p) for p in pixel_size]}
    extras = {"sensitivity_maps": maps} if coils > 1 else {}
    return Measurement(modality="mri", data=kspace.astype(np.complex64), mask=lam, geometry=geometry,
                       truth=magnitude, extras=extras, attrs=attrs).validate()


def _pixel_pair(pixel_size) -> tuple[float, float]:
    """(mm per row, mm per column) from one number or a pair, each positive and finite."""
    sizes = np.atleast_1d(np.asarray(pixel_size, dtype=object)).tolist()
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2 or not all(finite_number("pixel_size", p) > 0 for p in sizes):
        raise UserError(f"pixel_size must be one positive number or a (row, column) pair in mm, got {pixel_size!r}")
    return float(sizes[0]), float(sizes[1])


def _magnitude(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2:
        raise UserError(f"MRI simulation needs a 2-D image, got shape {image.shape}: pick a slice with --slice")
    if np.iscomplexobj(image) or not np.all(np.isfinite(image)):
        raise UserError("the image must be real and finite: pass a magnitude image without NaN/Inf")
    magnitude = np.clip(image, 0, None).astype(np.float32)
    if magnitude.max() <= 0:
        raise UserError("the image has no positive intensity: pass a magnitude image")
    return magnitude


def _complex_noise(shape, sigma: float, seed) -> np.ndarray:
    """Circular complex Gaussian noise with E|n|² = σ²."""
    if sigma == 0:
        return np.zeros(shape, np.complex64)
    rng = np.random.default_rng(seed)
    return (sigma / np.sqrt(2) * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))).astype(np.complex64)


def write_simulated_mri(path: str | os.PathLike, meas: Measurement) -> None:
    """Write a simulated ``Measurement`` as a fastMRI file (extras in the ``/scorerecon`` group)."""
    shape = meas.geometry["image_shape"]
    fov = [p * n for p, n in zip(meas.geometry["pixel_size"], shape)]
    header = ismrmrd_header(shape, meas.geometry["output_shape"], fov, fov, meas.data.shape[0])
    skip = FASTMRI_ATTRS + ("source", "file_slice")
    write_fastmri(path, meas.data, meas.mask, meas.truth, header,
                  attrs={k: meas.attrs[k] for k in FASTMRI_ATTRS},
                  extras=meas.extras,
                  extra_attrs={k: v for k, v in meas.attrs.items() if k not in skip})


def simulate_mri_file(image_path: str | os.PathLike, output: str | os.PathLike, *, mask: str = "equispaced",
                      acceleration: float = 4.0, center_fraction: float = 0.08, coils: int = 1,
                      noise: float = 0.0, real: bool = False, seed: int = 0,
                      slice_index: int | None = None) -> Measurement:
    """``scorerecon simulate mri``: read a magnitude slice, simulate, write a fastMRI-layout file
    (``.h5``) or the k-space alone as BART's pair (``.cfl``, :mod:`scorerecon.data.cfl`)."""
    from ..data.io import read_slice, refuse_other_modality
    from ..data.measurement import check_measurement_output
    writers = {".h5": (check_measurement_output, write_simulated_mri),
               ".cfl": (check_cfl_output, lambda path, meas: write_cfl(path, kspace_to_bart(meas.data)))}
    if Path(output).suffix.lower() not in writers:
        raise UserError(f"{output}: an MRI measurement is written as .h5 (fastMRI layout) or .cfl "
                        "(BART's k-space pair): give it one of these extensions")
    check_output, write = writers[Path(output).suffix.lower()]
    check_output(output)
    image = read_slice(image_path, slice_index)
    refuse_other_modality(image, "mri", image_path)
    spacing = tuple(image.spacing[-2:]) if image.spacing is not None else (1.0, 1.0)
    meas = simulate_mri(image.array, mask=mask, acceleration=acceleration, center_fraction=center_fraction,
                        coils=coils, noise=noise, real=real, seed=seed, pixel_size=spacing)
    meas.attrs["source_image"] = os.path.basename(str(image_path))
    write(output, meas)
    return meas
