"""Intensity conventions.

CT.  Images on disk are Hounsfield units (HU).  The networks, the metrics and the solvers see
the *unit window*

    u = (HU - HU_LOW) / (HU_HIGH - HU_LOW),   HU_LOW = -1000 (air), HU_HIGH = 2000 (dense bone),

which is an affine map of linear attenuation: μ = μ_water (1 + HU/1000) = 3 μ_water u.
Metal (HU > 2000) maps above 1; it is clipped only for display and metrics.

A post-log CT sinogram holds dimensionless line integrals ∫ μ dl with lengths in mm.  The CT
operators work in pixel units on u-images, so one scalar converts between the two:

    sinogram_u = sinogram_physical / (3 μ_water · pixel_size_mm)     (see ``ct_line_integral_scale``)

MRI.  Magnitude images are scaled by one positive real number (never touching the phase) so
that the reference magnitude peaks at 1: ``x / s`` with ``s = magnitude_scale(x)``.
"""

from __future__ import annotations

import numpy as np

HU_LOW = -1000.0
HU_HIGH = 2000.0
MU_WATER_PER_MM = 0.0192  # linear attenuation of water at ~70 keV effective energy, 1/mm


def hu_to_unit(hu):
    """Map HU to the unit window u (affine; no clipping)."""
    return (hu - HU_LOW) / (HU_HIGH - HU_LOW)


def unit_to_hu(u):
    """Inverse of :func:`hu_to_unit`."""
    return u * (HU_HIGH - HU_LOW) + HU_LOW


def ct_line_integral_scale(pixel_size_mm: float, mu_water_per_mm: float = MU_WATER_PER_MM) -> float:
    """Physical line integral (dimensionless) per unit-window line integral (pixel units)."""
    return (HU_HIGH - HU_LOW) / 1000.0 * mu_water_per_mm * pixel_size_mm


def magnitude_scale(image, percentile: float = 100.0) -> float:
    """Positive scalar s such that |image| / s peaks at 1 (phase untouched)."""
    s = float(np.percentile(np.abs(np.asarray(image)), percentile))
    return s if s > 0 else 1.0
