"""CT measurement simulation: sparse view, limited angle, Poisson noise, and metal.

Physics.  A slice in HU has linear attenuation μ = μ_water (1 + HU/1000) (``data/intensity.py``;
HU below -1000 are clipped to air).  Without metal the post-log sinogram is the exact line
integral p = ∫ μ dl (mm × 1/mm), computed with the CT operator as p = c · T u, with u the unit-window
image and c = ``ct_line_integral_scale(pixel_size)``.

Noise (``flux`` = incident photons per detector bin, I₀).  Counts N ~ Poisson(I₀ e^{-p}) + e,
with electronic noise e ~ N(0, σ_e²), σ_e = √10 counts (the order of magnitude measured by
Zeng et al., "A simple low-dose x-ray CT simulation from high-dose scan", IEEE TNS 62(5), 2015);
N is floored at 1 count before the log, p̂ = -log(N / I₀).

Metal (``metal="auto"``, a mask file, or a boolean array).  ``auto`` places two elliptical metal
objects (dental-filling / small-implant-like: semi-axes 2.5–4.5 mm, random orientation) centred
on tissue (HU > -500) inside the body eroded by 15 % of its radius, at least 20 mm apart when the body allows, drawn
with ``seed``.  The projection is then polychromatic:

* spectrum: a 120 kVp tungsten-anode spectrum (≈ 2.5 mm Al filtration) in 10 keV bins from
  25 to 115 keV (relative photon counts in :data:`SPECTRUM`; mean energy ≈ 66 keV);
* materials: each non-metal pixel is split into water-equivalent soft tissue and cortical bone,
  with bone volume fraction f = clip((HU - 100) / (1500 - 100), 0, 1), such that its attenuation at
  the reference energy E_ref = 70 keV is exactly μ_water (1 + HU/1000); the metal pixels are
  iron (ρ = 7.87 g/cm³, dental amalgam / steel stand-in) or titanium (ρ = 4.51 g/cm³);
* mass attenuation μ/ρ(E) (cm²/g) of water, ICRU-44 cortical bone, titanium and iron from the
  NIST XCOM / X-Ray Mass Attenuation Coefficient tables (Hubbell & Seltzer, NISTIR 5632),
  interpolated log–log between the tabulated energies (:data:`MASS_ATTENUATION`);
* I / I₀ = Σ_E s_E exp(-Σ_k L_k r_k(E)), with L_k the line integral of material k's attenuation at
  E_ref and r_k(E) = (μ/ρ)_k(E) / (μ/ρ)_k(E_ref): beam hardening;
* Poisson + electronic noise at ``flux`` (default :data:`DEFAULT_METAL_FLUX` = 10⁵ so that rays
  through metal are photon-starved);
* the scanner's water pre-correction (Kachelrieß et al., "Empirical cupping correction", Med.
  Phys. 33(5), 2006): the post-log value is mapped through the inverse of the water
  polychromatic curve, so water and soft tissue come out right and the remaining artefacts are
  those of bone and metal (dark streaks between metal objects, bright streaks around them).

The monochromatic image at E_ref of the metal is ρ (μ/ρ)(E_ref); its HU value is stored in
``attrs["metal_hu"]`` so that reconstructions can put the metal back.

HDF5 layout of a simulated CT measurement (generic layout in ``data/measurement.py``)::

    /measurement           float32 (V, D): post-log line integrals (dimensionless, μ in 1/mm
                           times lengths in mm) on the FULL view grid, 0 where Λ = 0
    /mask                  uint8 (V, D): Λ = kept views ∧ limited-angle range ∧ ¬metal trace
    /geometry/             CTGeometry.to_dict(): kind, image_shape, angles (rad, all views),
                           n_detectors, detector_spacing (mm), pixel_size (mm), and for fan beam
                           source_origin, source_detector (mm), detector_shape
    /truth                 float32 (H, W): the slice in HU, WITHOUT metal
    /extras/metal_mask     uint8 (H, W), metal only
    /extras/metal_trace_data  float32 (V, D), metal only: what the scanner measured inside the
                           metal trace of the acquired views (Λ excludes it), 0 elsewhere; the
                           uncorrected FBP uses measurement + metal_trace_data
    attrs                  units, seed, flux (absent = noise-free), mu_water_per_mm,
                           electronic_noise_std, views, full_views, geometry_kind, detector,
                           limited_angle, metal ("none" | "auto" | "mask"), and with metal:
                           metal_material, metal_hu, spectrum_kvp, reference_energy_kev
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from ..checks import finite_number, seed_number, whole_number
from ..data.intensity import HU_LOW, MU_WATER_PER_MM, ct_line_integral_scale
from ..data.measurement import Measurement
from ..errors import UserError

ELECTRONIC_NOISE_STD = float(np.sqrt(10.0))  # counts
DEFAULT_METAL_FLUX = 1e5                      # photons per bin when metal is simulated without --flux
MAX_FLUX = 1e15  # photons: post-log noise 1/√flux below float32's precision (numpy's Poisson fails past ~1e19)
REFERENCE_ENERGY_KEV = 70.0
BONE_HU = (100.0, 1500.0)                     # bone fraction 0 at the first, 1 at the second

# 120 kVp W-anode spectrum, ~2.5 mm Al: bin centre (keV) -> relative photon count (K lines in 55-75).
SPECTRUM = {25: 0.02, 35: 0.30, 45: 0.75, 55: 0.95, 65: 1.00, 75: 0.80, 85: 0.62, 95: 0.45,
            105: 0.28, 115: 0.10}
SPECTRUM_KVP = 120

# NIST mass attenuation coefficients μ/ρ with coherent scattering (cm²/g), Hubbell & Seltzer,
# NISTIR 5632 (https://physics.nist.gov/PhysRefData/XrayMassCoef/).
NIST_ENERGIES_KEV = (20.0, 30.0, 40.0, 50.0, 60.0, 80.0, 100.0, 150.0)
MASS_ATTENUATION = {
    "water": (0.8096, 0.3756, 0.2683, 0.2269, 0.2059, 0.1837, 0.1707, 0.1505),
    "bone": (4.001, 1.331, 0.6655, 0.4242, 0.3148, 0.2229, 0.1855, 0.1480),   # ICRU-44 cortical
    "titanium": (15.85, 4.972, 2.214, 1.213, 0.7661, 0.4052, 0.2721, 0.1649),
    "iron": (25.68, 8.176, 3.629, 1.958, 1.205, 0.5952, 0.3717, 0.1964),
}
METAL_DENSITY = {"iron": 7.874, "titanium": 4.506}  # g/cm³

AUTO_METAL_SEMI_AXES_MM = (2.5, 4.5)
AUTO_METAL_MIN_DISTANCE_MM = 20.0


# ---------------------------------------------------------------------------- physics
def mass_attenuation(material: str, energies_kev) -> np.ndarray:
    """μ/ρ (cm²/g) of ``material`` at ``energies_kev``, log–log interpolated in the NIST table."""
    table = np.log(np.asarray(MASS_ATTENUATION[material]))
    return np.exp(np.interp(np.log(np.asarray(energies_kev, float)), np.log(NIST_ENERGIES_KEV), table))


def _spectrum() -> tuple[np.ndarray, np.ndarray]:
    energies = np.array(sorted(SPECTRUM), float)
    weights = np.array([SPECTRUM[e] for e in sorted(SPECTRUM)], float)
    return energies, weights / weights.sum()


def _relative_attenuation(material: str, energies: np.ndarray) -> np.ndarray:
    """r(E) = (μ/ρ)(E) / (μ/ρ)(E_ref): the energy dependence of a material's attenuation."""
    return mass_attenuation(material, energies) / mass_attenuation(material, [REFERENCE_ENERGY_KEV])[0]


def metal_hu(material: str) -> float:
    """HU of the metal at the reference energy: 1000 (ρ (μ/ρ)(E_ref) / μ_water - 1)."""
    mu = METAL_DENSITY[material] * mass_attenuation(material, [REFERENCE_ENERGY_KEV])[0] / 10.0  # 1/mm
    return 1000.0 * (mu / MU_WATER_PER_MM - 1.0)


def polychromatic_transmission(line_integrals: dict[str, np.ndarray]) -> np.ndarray:
    """I/I₀ = Σ_E s_E exp(-Σ_k L_k r_k(E)) for material line integrals L_k at E_ref."""
    energies, weights = _spectrum()
    exponent = sum(np.multiply.outer(_relative_attenuation(m, energies), line)
                   for m, line in line_integrals.items())
    return np.tensordot(weights, np.exp(-exponent), axes=1)


def water_curve() -> tuple[np.ndarray, np.ndarray]:
    """The water curve tabulated for its inversion: monochromatic line integrals t on [0, 60]
    and their polychromatic post-log values -log Σ_E s_E exp(-t r_w(E))."""
    thickness = np.linspace(0.0, 60.0, 6001)
    return thickness, -np.log(polychromatic_transmission({"water": thickness}))


def water_precorrection(post_log: np.ndarray) -> np.ndarray:
    """Map polychromatic post-log values of water to the monochromatic line integral at E_ref.

    The water curve t ↦ -log Σ_E s_E exp(-t r_w(E)) is increasing; it is tabulated on a fine grid
    and inverted by linear interpolation (Kachelrieß et al. 2006, 'empirical cupping correction'
    with a known spectrum).  Below 0 (noisy air rays that counted more than I₀) it continues along
    the curve's slope at 0, so that noise around 0 stays centred there.
    """
    thickness, poly = water_curve()
    slope_at_zero = (thickness[1] - thickness[0]) / (poly[1] - poly[0])
    corrected = np.where(post_log < 0, post_log * slope_at_zero, np.interp(post_log, poly, thickness))
    return corrected.astype(np.float32)


def photon_counts(transmission: np.ndarray, flux: float, rng: np.random.Generator) -> np.ndarray:
    """Detected counts: Poisson(I₀ · transmission) + N(0, σ_e²), floored at 1 count."""
    counts = rng.poisson(flux * transmission).astype(np.float64)
    counts += rng.normal(0.0, ELECTRONIC_NOISE_STD, size=counts.shape)
    return np.maximum(counts, 1.0)


def _noisy_post_log(transmission: np.ndarray, flux: float | None, rng: np.random.Generator) -> np.ndarray:
    if flux is None:
        return -np.log(np.maximum(transmission, np.finfo(np.float64).tiny))
    return -np.log(photon_counts(transmission, flux, rng) / flux)


# ----------------------------------------------------------------------------- metal
def body_mask(image_hu: np.ndarray) -> np.ndarray:
    """The body: HU > -500, largest connected component, holes filled."""
    labels, count = ndimage.label(image_hu > -500)
    if count == 0:
        return np.zeros(image_hu.shape, bool)
    largest = 1 + int(np.argmax(ndimage.sum(np.ones_like(labels), labels, range(1, count + 1))))
    return ndimage.binary_fill_holes(labels == largest)


def auto_metal_mask(image_hu: np.ndarray, pixel_size: float, seed: int) -> np.ndarray:
    """Two seeded elliptical metal objects inside the body (see the module docstring)."""
    rng = np.random.default_rng(seed)
    body = body_mask(image_hu)
    if body.sum() < 50:
        raise UserError("the image has no body (HU > -500) to place metal in: pass a CT slice in HU "
                        "or a metal mask file")
    radius = np.sqrt(body.sum() / np.pi)
    inner = ndimage.binary_erosion(body, iterations=max(1, int(0.15 * radius)))
    tissue = image_hu > -500
    candidates = np.argwhere((inner if (inner & tissue).any() else body) & tissue)
    first = candidates[rng.integers(len(candidates))]
    distance = np.hypot(*(candidates - first).T) * pixel_size
    far = candidates[distance >= min(AUTO_METAL_MIN_DISTANCE_MM, 0.8 * distance.max())]
    second = far[rng.integers(len(far))]
    rows, cols = np.indices(image_hu.shape)
    mask = np.zeros(image_hu.shape, bool)
    for centre in (first, second):
        a, b = rng.uniform(*AUTO_METAL_SEMI_AXES_MM, size=2) / pixel_size
        a, b = max(a, 1.0), max(b, 1.0)
        phi = rng.uniform(0, np.pi)
        dy, dx = rows - centre[0], cols - centre[1]
        along = dx * np.cos(phi) + dy * np.sin(phi)
        across = -dx * np.sin(phi) + dy * np.cos(phi)
        mask |= (along / a) ** 2 + (across / b) ** 2 <= 1.0
    return mask


def _metal_from_option(metal, image_hu: np.ndarray, pixel_size: float, seed: int) -> tuple[np.ndarray, str]:
    """(boolean metal mask, source) from ``metal``: "auto", a mask file path, or an array."""
    if isinstance(metal, str) and metal == "auto":
        return auto_metal_mask(image_hu, pixel_size, seed), "auto"
    if isinstance(metal, (str, os.PathLike)):
        from ..data.io import read_slice
        metal = read_slice(metal).array
    mask = np.asarray(metal) != 0
    if mask.shape != image_hu.shape:
        raise UserError(f"metal mask of shape {mask.shape} does not match the image {image_hu.shape}: "
                        "give a mask of the image's size")
    if not mask.any():
        raise UserError("the metal mask is empty: mark the metal pixels with nonzero values")
    if mask.all():
        raise UserError("the metal mask covers the whole image: mark only the metal pixels")
    return mask, "mask"


def _material_line_integrals(image_hu: np.ndarray, metal: np.ndarray, material: str,
                             project) -> dict[str, np.ndarray]:
    """Line integrals at E_ref (dimensionless) of the water, bone and metal attenuation maps."""
    mu = MU_WATER_PER_MM * (1.0 + image_hu / 1000.0) * (~metal)
    bone = np.clip((image_hu - BONE_HU[0]) / (BONE_HU[1] - BONE_HU[0]), 0.0, 1.0)
    mu_metal = METAL_DENSITY[material] * mass_attenuation(material, [REFERENCE_ENERGY_KEV])[0] / 10.0
    maps = {"water": mu * (1.0 - bone), "bone": mu * bone, material: mu_metal * metal}
    sinograms = project(np.stack(list(maps.values())))
    return dict(zip(maps, sinograms))


# ------------------------------------------------------------------------- validation
def _check_image(image_hu) -> np.ndarray:
    image = np.asarray(image_hu, dtype=np.float64)
    if image.ndim != 2:
        raise UserError(f"the CT image has shape {image.shape}: pass one 2-D slice (choose it with --slice)")
    if min(image.shape) < 8:
        raise UserError(f"the CT image {image.shape} is too small: pass a slice of at least 8×8 pixels")
    if not np.all(np.isfinite(image)):
        raise UserError("the CT image contains NaN or Inf values: clean the image first")
    return np.maximum(image, HU_LOW)


def _check_options(views, full_views, geometry, detector, limited_angle, flux) -> tuple[int | None, int]:
    """UserError for a setting out of range; returns (views, full_views) as ints."""
    full_views = whole_number("full_views", full_views, minimum=1)
    views = None if views is None else whole_number("views", views, minimum=1)
    for name, value in (("limited_angle", limited_angle), ("flux", flux)):
        if value is not None:
            finite_number(name, value)
    if geometry not in ("parallel", "fan"):
        raise UserError(f"unknown CT geometry {geometry!r}: use 'parallel' or 'fan'")
    if detector not in ("flat", "curved"):
        raise UserError(f"unknown detector shape {detector!r}: use 'flat' or 'curved'")
    if detector == "curved" and geometry == "parallel":
        raise UserError("a curved detector is a fan-beam detector: add --geometry fan, or drop --detector")
    if views is not None and not 1 <= views <= full_views:
        raise UserError(f"--views {views} is outside 1..{full_views} (the full view set): "
                        "choose fewer views or raise --full-views")
    scan = 180.0 if geometry == "parallel" else 360.0
    if limited_angle is not None and not 0 < limited_angle < scan:
        raise UserError(f"--limited-angle {limited_angle:g} must lie in (0, {scan:g}) degrees for "
                        f"{geometry}-beam scans")
    if flux is not None and not flux > 0:
        raise UserError(f"--flux must be a positive number of photons, got {flux}")
    if flux is not None and flux > MAX_FLUX:
        raise UserError(f"--flux {flux:g} is beyond {MAX_FLUX:g} photons, where the noise is below float32's "
                        "precision: leave --flux out for a noise-free scan")
    return views, full_views


def _make_geometry(shape, kind: str, detector: str, full_views: int, pixel_size: float):
    from ..operators.ct import CTGeometry
    if kind == "parallel":
        return CTGeometry.parallel(shape, n_views=full_views, pixel_size=pixel_size)
    return CTGeometry.fan(shape, n_views=full_views, pixel_size=pixel_size, detector_shape=detector)


# ----------------------------------------------------------------------------- public
def simulate_ct(image_hu, *, pixel_size: float = 1.0, views: int | None = None, full_views: int = 180,
                geometry: str = "parallel", detector: str = "flat", limited_angle: float | None = None,
                metal=None, flux: float | None = None, seed: int = 0,
                metal_material: str = "iron") -> Measurement:
    """Simulate a CT measurement of a 2-D slice in HU (see the module docstring for the physics).

    ``views`` evenly spaced views of ``full_views`` over [0, π) (parallel: round(linspace(0,
    full_views-1, views)), Song et al.'s protocol) or [0, 2π) (fan: spread around the circle,
    :func:`~scorerecon.operators.ct.view_mask`); ``limited_angle`` keeps the views in
    [0, limited_angle) degrees; ``metal`` is None, "auto", a mask file path or a boolean array;
    ``flux`` (photons per bin) adds Poisson + electronic noise.  Returns a validated
    :class:`Measurement` with the physical post-log sinogram on the full grid.
    """
    from ..operators.ct import CTOperator, combine_masks, limited_angle_mask, metal_trace_mask, view_mask
    image = _check_image(image_hu)
    pixel_size, seed = finite_number("pixel_size", pixel_size), seed_number(seed)
    views, full_views = _check_options(views, full_views, geometry, detector, limited_angle, flux)  # pixel size: the geometry's
    if metal_material not in METAL_DENSITY:
        raise UserError(f"unknown metal {metal_material!r}: use one of {', '.join(METAL_DENSITY)}")
    geom = _make_geometry(image.shape, geometry, detector, full_views, pixel_size)
    op = CTOperator(geom)
    scale = ct_line_integral_scale(pixel_size)

    def project(attenuation_maps: np.ndarray) -> np.ndarray:
        """Line integrals (dimensionless) of (K, H, W) attenuation maps in 1/mm."""
        unit = torch.from_numpy((attenuation_maps / (3.0 * MU_WATER_PER_MM)).astype(np.float32))
        return op.transform(unit[:, None]).squeeze(1).double().numpy() * scale

    rng = np.random.default_rng(seed)
    acquired = [view_mask(full_views, k=views or full_views, full_circle=geometry == "fan")]
    if limited_angle is not None:
        acquired.append(limited_angle_mask(geom, limited_angle))
    attrs: dict[str, Any] = dict(units="post-log line integral", seed=int(seed), mu_water_per_mm=MU_WATER_PER_MM,
                                 views=int(views or full_views), full_views=int(full_views),
                                 geometry_kind=geometry, detector=detector, limited_angle=limited_angle,
                                 metal="none", electronic_noise_std=ELECTRONIC_NOISE_STD)
    extras: dict[str, np.ndarray] = {}
    if metal is None:
        acquired_mask = combine_masks(geom, *acquired)
        sinogram = project(MU_WATER_PER_MM * (1.0 + image / 1000.0)[None])[0]
        if flux is not None:
            sinogram = _noisy_post_log(np.exp(-sinogram), flux, rng)
        mask = acquired_mask
    else:
        metal_mask, source = _metal_from_option(metal, image, pixel_size, seed)
        flux = DEFAULT_METAL_FLUX if flux is None else flux
        transmission = polychromatic_transmission(_material_line_integrals(image, metal_mask, metal_material, project))
        sinogram = water_precorrection(_noisy_post_log(transmission, flux, rng))
        acquired_mask = combine_masks(geom, *acquired)
        mask = combine_masks(geom, acquired_mask, metal_trace_mask(geom, metal_mask))
        extras = {"metal_mask": metal_mask.astype(np.uint8),
                  "metal_trace_data": (sinogram * acquired_mask * (1 - mask)).astype(np.float32)}
        attrs.update(metal=source, metal_material=metal_material, metal_hu=float(metal_hu(metal_material)),
                     spectrum_kvp=SPECTRUM_KVP, reference_energy_kev=REFERENCE_ENERGY_KEV)
    attrs["flux"] = flux
    attrs["acquired_views"] = int(acquired_mask.any(axis=1).sum())  # ``views`` is the request: a limited angle keeps fewer
    data = (sinogram * mask).astype(np.float32)
    return Measurement("ct", data, mask.astype(np.uint8), geom.to_dict(), truth=image.astype(np.float32),
                       extras=extras, attrs=attrs).validate()


def simulate_ct_file(image_path, output, *, views: int | None = None, full_views: int = 180,
                     geometry: str = "parallel", detector: str = "flat", limited_angle: float | None = None,
                     metal=None, flux: float | None = None, seed: int = 0,
                     slice_index: int | None = None) -> Measurement:
    """Read a slice (HU) from ``image_path``, simulate it and write the measurement to ``output``.

    The pixel size comes from the image's spacing (1 mm when the format has none, e.g. .npy).
    The output is written atomically: a failure leaves no file behind.
    """
    from ..data.io import read_slice, refuse_other_modality
    from ..data.measurement import check_measurement_output, write_measurement
    check_measurement_output(output)
    image = read_slice(image_path, slice_index)
    refuse_other_modality(image, "ct", image_path)
    if image.spacing and not np.isclose(image.spacing[-2], image.spacing[-1], rtol=1e-3):
        raise UserError(f"{image_path} has pixels of {image.spacing[-2]:g} x {image.spacing[-1]:g} mm: the CT "
                        "simulation needs square pixels; resample the image first")
    pixel_size = float(image.spacing[-1]) if image.spacing else 1.0
    meas = simulate_ct(image.array, pixel_size=pixel_size, views=views, full_views=full_views,
                       geometry=geometry, detector=detector, limited_angle=limited_angle, metal=metal,
                       flux=flux, seed=seed)
    write_measurement(output, meas)
    return meas
