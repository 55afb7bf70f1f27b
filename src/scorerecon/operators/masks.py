"""Cartesian k-space sampling masks Λ, seeded and reproducible.

Every mask is a uint8 (H, W) array; H is the read-out axis and W the phase-encoding axis, so the
1-D patterns keep whole columns (fastMRI convention).  ``acceleration`` R is the ratio of grid
points to kept points, and ``center_fraction`` F the fully sampled auto-calibration (ACS) region:
round(F W) centre columns for 1-D patterns, a centred round(F H) × round(F W) block for 2-D ones.
The non-ACS budget is chosen so that the *total* kept fraction is 1/R (fastMRI's
``EquispacedMaskFractionFunc`` convention); the acceleration actually achieved is always measured
from the mask (:func:`effective_acceleration`), never assumed.

Patterns (:data:`PATTERNS`):

* ``equispaced`` — ACS plus every ``a``-th column with a random offset, a = R (N − n_acs) /
  (N − n_acs R) (fastMRI ``EquispacedMaskFractionFunc``, Zbontar et al. 2018).
* ``random`` — ACS plus columns drawn uniformly without replacement (fastMRI ``RandomMaskFunc``
  with the expected count made exact).
* ``gaussian1d`` / ``gaussian2d`` — columns / points drawn without replacement with a centred
  Gaussian density of standard deviation ``√(1.5/128)`` × size (Chung & Ye 2022, score-MRI code).
* ``uniform2d`` — points drawn uniformly without replacement.
* ``poisson`` — variable-density Poisson disc (Lustig et al. 2007; sigpy.mri.poisson), which
  tunes its radius until the acceleration is within 0.1 of R (R = 1 or R ≥ 2); the ACS block
  is then ensured.
* ``radial`` — equally spaced spokes through the k-space centre rasterised on the Cartesian grid
  (nearest neighbour, half-pixel steps), the number of spokes the one closest to R; an R that
  one spoke and the ACS block do not reach within 10 % is refused.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import UserError

GAUSSIAN_STD_FRACTION = float(np.sqrt(1.5 / 128))  # Chung & Ye's cov_factor, as std / size


def _rng(seed) -> np.random.Generator:
    """``seed``: an int, a ``np.random.SeedSequence`` or a ``np.random.Generator``."""
    return np.random.default_rng(seed)


def _check(shape, acceleration: float, center_fraction: float, points: int) -> None:
    """Refuse impossible accelerations and centre fractions (one line, UserError)."""
    if not (len(shape) == 2 and min(shape) >= 1):
        raise UserError(f"mask shape must be (H, W) with positive sizes, got {tuple(shape)}")
    if not np.isfinite(acceleration) or acceleration < 1:
        raise UserError(f"acceleration {acceleration} is below 1: use --acceleration >= 1 (1 = fully sampled)")
    if acceleration > points:
        raise UserError(f"acceleration {acceleration} exceeds the {points} samplable k-space lines/points: "
                        f"use --acceleration <= {points}")
    if not 0 <= center_fraction < 1:
        raise UserError(f"centre fraction {center_fraction} must lie in [0, 1): e.g. --center-fraction 0.08")


def _budget(total: int, acs: int, acceleration: float) -> int:
    """Samples outside the ACS so that the whole mask keeps round(total / R) samples."""
    wanted = max(1, round(total / acceleration))
    if acs > wanted:
        raise UserError(f"the centre fraction alone keeps {acs} of {total} samples, more than the {wanted} = N/R "
                        f"that R = {acceleration:g} keeps: "
                        "lower --center-fraction or --acceleration")
    return wanted - acs


def centre_slice(size: int, count: int) -> slice:
    """The ``count`` indices centred on index size // 2 (the k-space centre of the centred FFT)."""
    start = (size - count + 1) // 2
    return slice(start, start + count)


def _acs_count(size: int, center_fraction: float) -> int:
    return round(size * center_fraction)


# ------------------------------------------------------------------------ 1-D patterns
def _columns_to_mask(shape, columns: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[:, columns.astype(bool)] = 1
    return mask


def _with_acs(width: int, center_fraction: float, acceleration: float) -> tuple[np.ndarray, int]:
    cols = np.zeros(width, np.uint8)
    acs = _acs_count(width, center_fraction)
    cols[centre_slice(width, acs)] = 1
    return cols, _budget(width, acs, acceleration)


def equispaced_mask(shape, acceleration: float, center_fraction: float = 0.08, seed=0) -> np.ndarray:
    """ACS columns plus equispaced columns (fastMRI ``EquispacedMaskFractionFunc``)."""
    width = shape[1]
    _check(shape, acceleration, center_fraction, width)
    cols, extra = _with_acs(width, center_fraction, acceleration)
    if acceleration == 1:
        cols[:] = 1
    elif extra > 0:
        acs = int(cols.sum())
        spacing = width / extra if acs == 0 else \
            acceleration * (acs - width) / (acs * acceleration - width)
        offset = _rng(seed).integers(0, max(1, round(spacing)))
        if acs:
            cols[np.round(np.arange(offset, width - 1, spacing)).astype(int)] = 1
        else:  # fastMRI's stop before the last column lost a line here (on a few columns, all of them)
            cols[np.floor(offset + np.arange(extra) * spacing).astype(int)] = 1
    return _columns_to_mask(shape, cols)


def _weighted_choice(cols: np.ndarray, extra: int, weights: np.ndarray, seed) -> np.ndarray:
    """Add ``extra`` indices not yet in ``cols``, drawn without replacement ∝ ``weights``."""
    free = np.flatnonzero(cols.ravel() == 0)
    if extra > 0:
        w = weights.ravel()[free]
        chosen = _rng(seed).choice(free, size=extra, replace=False, p=w / w.sum())
        cols.ravel()[chosen] = 1
    return cols


def random_mask(shape, acceleration: float, center_fraction: float = 0.08, seed=0) -> np.ndarray:
    """ACS columns plus columns drawn uniformly without replacement."""
    _check(shape, acceleration, center_fraction, shape[1])
    cols, extra = _with_acs(shape[1], center_fraction, acceleration)
    return _columns_to_mask(shape, _weighted_choice(cols, extra, np.ones(shape[1]), seed))


def _gaussian(size: int) -> np.ndarray:
    offsets = np.arange(size) - size // 2
    return np.exp(-0.5 * (offsets / (GAUSSIAN_STD_FRACTION * size)) ** 2)


def gaussian1d_mask(shape, acceleration: float, center_fraction: float = 0.08, seed=0) -> np.ndarray:
    """ACS columns plus columns drawn with a centred Gaussian density (Chung & Ye 2022)."""
    _check(shape, acceleration, center_fraction, shape[1])
    cols, extra = _with_acs(shape[1], center_fraction, acceleration)
    return _columns_to_mask(shape, _weighted_choice(cols, extra, _gaussian(shape[1]), seed))


# ------------------------------------------------------------------------ 2-D patterns
def _acs_block(shape, center_fraction: float, acceleration: float) -> tuple[np.ndarray, int]:
    mask = np.zeros(shape, np.uint8)
    rows, cols = (_acs_count(s, center_fraction) for s in shape)
    mask[centre_slice(shape[0], rows), centre_slice(shape[1], cols)] = 1
    return mask, _budget(mask.size, int(mask.sum()), acceleration)


def gaussian2d_mask(shape, acceleration: float, center_fraction: float = 0.08, seed=0) -> np.ndarray:
    """ACS block plus points drawn with a centred 2-D Gaussian density (Chung & Ye 2022)."""
    _check(shape, acceleration, center_fraction, shape[0] * shape[1])
    mask, extra = _acs_block(shape, center_fraction, acceleration)
    return _weighted_choice(mask, extra, np.outer(_gaussian(shape[0]), _gaussian(shape[1])), seed)


def uniform2d_mask(shape, acceleration: float, center_fraction: float = 0.08, seed=0) -> np.ndarray:
    """ACS block plus points drawn uniformly without replacement."""
    _check(shape, acceleration, center_fraction, shape[0] * shape[1])
    mask, extra = _acs_block(shape, center_fraction, acceleration)
    return _weighted_choice(mask, extra, np.ones(shape), seed)


POISSON_MIN_ACCELERATION = 2.0


def poisson_mask(shape, acceleration: float, center_fraction: float = 0.08, seed=0) -> np.ndarray:
    """Variable-density Poisson disc (sigpy.mri.poisson's search, :func:`_poisson_search`) with a
    centred ACS block.

    1 (fully sampled) or at least :data:`POISSON_MIN_ACCELERATION`: below about 1.5 (grid
    dependent) sigpy's bisection on the density slope cannot reach the request and halves the
    slope a thousand times before it gives up, minutes on a 320² grid."""
    _check(shape, acceleration, center_fraction, shape[0] * shape[1])
    acs, _ = _acs_block(shape, center_fraction, acceleration)
    if acceleration == 1:
        return np.ones(shape, np.uint8)
    if acceleration < POISSON_MIN_ACCELERATION:
        raise UserError(f"a Poisson-disc mask needs --acceleration {POISSON_MIN_ACCELERATION:g} or more "
                        f"(or 1, fully sampled), not {acceleration}: for lighter undersampling use "
                        "--mask gaussian2d or uniform2d")
    calib = tuple(_acs_count(s, center_fraction) for s in shape)
    mask = _poisson_search(tuple(shape), acceleration, calib, int(_rng(seed).integers(2 ** 31)))
    if mask is None:
        raise UserError(f"no Poisson-disc mask of a {shape[0]}x{shape[1]} grid reaches acceleration "
                        f"{acceleration}: choose another --acceleration or --mask")
    return np.maximum(acs, (mask > 0).astype(np.uint8))


def _poisson_search(shape: tuple[int, int], acceleration: float, calib: tuple[int, int], seed: int,
                    tolerance: float = 0.1, max_attempts: int = 30) -> np.ndarray | None:
    """sigpy.mri.poisson (0.1.27, corners cropped), step for step and so with the same masks:
    Bridson's Poisson disc with radii growing as 1 + slope·|k|, bisecting the slope until the
    acceleration lies within ``tolerance`` of the request.  Unlike sigpy's loop it stops, returning
    None, when the bisection can no longer move: where the interval shrinks to two adjacent floats
    without reaching the request, sigpy computes the same mask forever."""
    from sigpy.mri.samp import _poisson
    ny, nx = shape
    y, x = np.mgrid[:ny, :nx]
    x = np.maximum(abs(x - nx / 2) - calib[-1] / 2, 0)
    y = np.maximum(abs(y - ny / 2) - calib[-2] / 2, 0)
    if not (x.max() > 0 and y.max() > 0):
        return None  # the calibration region covers an axis
    radius = np.sqrt((x / x.max()) ** 2 + (y / y.max()) ** 2)
    low, high = 0.0, float(max(nx, ny))
    state = np.random.get_state()  # _poisson seeds numpy's global generator
    try:
        while low < high:
            slope = (low + high) / 2
            if slope in (low, high):
                return None
            scale = 1 + radius * slope
            mask = _poisson(nx, ny, max_attempts, np.clip(scale * nx / max(nx, ny), 1, None),
                            np.clip(scale * ny / max(nx, ny), 1, None), calib, seed) * (radius < 1)
            reached = nx * ny / np.sum(mask)
            if abs(reached - acceleration) < tolerance:
                return mask
            low, high = (slope, high) if reached < acceleration else (low, slope)
        return None
    finally:
        np.random.set_state(state)


def _spokes(shape, count: int, offset: float) -> np.ndarray:
    """``count`` equally spaced lines through the centre, rotated by ``offset`` radians."""
    height, width = shape
    radius = np.hypot(height, width) / 2
    angles = offset + np.pi * np.arange(count) / count
    t = np.arange(-radius, radius + 0.5, 0.5)
    rows = np.round(height // 2 + np.outer(np.sin(angles), t)).astype(int).ravel()
    cols = np.round(width // 2 + np.outer(np.cos(angles), t)).astype(int).ravel()
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    mask = np.zeros(shape, np.uint8)
    mask[rows[inside], cols[inside]] = 1
    return mask


def radial_mask(shape, acceleration: float, center_fraction: float = 0.08, seed=0) -> np.ndarray:
    """Radial spokes on the Cartesian grid plus the ACS block; spoke count matched to R.

    The spoke count is found by bisection on the measured acceleration (monotone in the count);
    the whole pattern is rotated by a random angle drawn from ``seed``.
    """
    _check(shape, acceleration, center_fraction, shape[0] * shape[1])
    acs, _ = _acs_block(shape, center_fraction, acceleration)
    if acceleration == 1:
        return np.ones(shape, np.uint8)
    offset = _rng(seed).uniform(0, np.pi)

    def build(count: int) -> np.ndarray:
        return np.maximum(acs, _spokes(shape, count, offset))

    low, high = 1, 4 * max(shape)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if effective_acceleration(build(middle)) > acceleration else (low, middle)
    best = min((low, high), key=lambda n: abs(effective_acceleration(build(n)) - acceleration))
    reached = effective_acceleration(build(best))
    if reached < acceleration / 1.1:  # one spoke and the ACS block are the sparsest pattern
        raise UserError(f"radial spokes reach at most {reached:.1f}x on a {shape[0]}x{shape[1]} grid with "
                        f"centre fraction {center_fraction}, not {acceleration}: choose a lower --acceleration")
    return build(best)


# ----------------------------------------------------------------------- dispatch, stats
PATTERNS: dict[str, Callable[..., np.ndarray]] = {
    "equispaced": equispaced_mask,
    "random": random_mask,
    "gaussian1d": gaussian1d_mask,
    "gaussian2d": gaussian2d_mask,
    "uniform2d": uniform2d_mask,
    "poisson": poisson_mask,
    "radial": radial_mask,
}


def make_mask(pattern: str, shape, acceleration: float, center_fraction: float = 0.08, seed=0) -> np.ndarray:
    """The uint8 (H, W) mask of ``pattern`` (one of :data:`PATTERNS`)."""
    if pattern not in PATTERNS:
        raise UserError(f"unknown mask pattern {pattern!r}: choose one of {', '.join(PATTERNS)}")
    return PATTERNS[pattern](tuple(int(s) for s in shape), float(acceleration), float(center_fraction), seed)


def effective_acceleration(mask: np.ndarray) -> float:
    """Grid points per kept point, measured from the mask itself."""
    kept = int(np.count_nonzero(mask))
    return float("inf") if kept == 0 else np.asarray(mask).size / kept


def keeps_whole_lines(mask: np.ndarray) -> bool:
    """True for a 1-D pattern: every phase-encoding column is kept whole or not at all (each
    column constant along the read-out axis H); False for 2-D patterns (Poisson disc, radial, …)."""
    mask = np.asarray(mask) != 0
    return bool((mask == mask[..., :1, :]).all())


def measured_center_fraction(mask: np.ndarray) -> float:
    """Side of the largest fully sampled centred square (in the phase-encoding direction) / W.

    For a 1-D mask this is the fraction of contiguous fully sampled centre columns, capped by H;
    for a 2-D mask the ACS block's width fraction.  It is also the ESPIRiT calibration width / W.
    """
    return calibration_width(mask) / np.asarray(mask).shape[-1]


def calibration_width(mask: np.ndarray) -> int:
    """Side c of the largest centred c × c block that the mask samples fully (the ACS region)."""
    mask = np.asarray(mask) != 0
    height, width = mask.shape[-2:]
    best = 0
    for c in range(1, min(height, width) + 1):
        if not mask[..., centre_slice(height, c), centre_slice(width, c)].all():
            break
        best = c
    return best


def calibration_region(mask: np.ndarray) -> tuple[int, int]:
    """(rows, columns) of the largest centred fully sampled rectangle grown from the ACS square.

    1-D patterns give (H, number of ACS columns): every read-out row is calibration data.
    """
    mask = np.asarray(mask) != 0
    height, width = mask.shape[-2:]
    rows = cols = calibration_width(mask)
    if rows == 0:
        return 0, 0
    while rows < height and mask[..., centre_slice(height, rows + 1), centre_slice(width, cols)].all():
        rows += 1
    while cols < width and mask[..., centre_slice(height, rows), centre_slice(width, cols + 1)].all():
        cols += 1
    return rows, cols
