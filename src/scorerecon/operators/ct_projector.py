"""Sparse CT system matrices: Joseph's ray-driven projector and a pixel-driven FBP back-projector.

Everything here is in *pixel units* on an image of shape (H, W) whose pixel (i, j) has its centre at

    x = j - (W - 1) / 2,      y = (H - 1) / 2 - i        (y points up, the rotation axis is the centre).

A ray is a point ``o`` and a unit direction ``d``.  Joseph's method (P. M. Joseph, "An improved
algorithm for reprojecting rays through pixel images", IEEE TMI 1(3), 1982) samples the ray once
per column when |d_x| >= |d_y| (once per row otherwise), interpolates linearly between the two
nearest pixel centres of that column and weights each sample by the step length 1 / |d_x|:

    (A f)_ray = (1 / |d_x|) Σ_j [ (1 - w) f(i0, j) + w f(i0 + 1, j) ],   r = row coordinate of
    the ray at column j,  i0 = floor(r),  w = r - i0,

with pixels outside the image taken as zero.  Parallel and fan beam (flat or curved detector)
differ only in how the rays are generated, so one builder serves all three.

The FBP back-projector is the pixel-driven one of Kak & Slaney, *Principles of Computerized
Tomographic Imaging* (1988), ch. 3: for every pixel and view it interpolates the filtered
projection linearly at the detector coordinate of the ray through the pixel, times a per-pixel
weight (Δθ/2 for parallel beam, Δβ/2 · U^-2 or Δβ/2 · L^-2 for fan beam).

Matrices are built with vectorised NumPy in chunks of rays (no Python loop over rays), converted
to torch CSR with int32 indices (torch's int32 CSR @ dense is several times faster on CPU than
int64), cached in-process (LRU) and on disk (``$SCORERECON_CACHE`` or the user cache folder).
"""

from __future__ import annotations

import functools
import hashlib
import os
import warnings
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import scipy.sparse as sp
import torch

from ..atomic import atomic_path

BUILDER_VERSION = 1
_CHUNK_SAMPLES = 1 << 21  # ray samples per chunk (bounds the temporary memory to ~100 MB)


# ------------------------------------------------------------------------------ rays
class Rays(NamedTuple):
    """Rays in pixel units: origins (R, 2) and unit directions (R, 2), as (x, y) with y up."""

    origin: np.ndarray
    direction: np.ndarray


def pixel_centres(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """x of each column and y of each row, in pixel units about the image centre."""
    h, w = shape
    return np.arange(w) - (w - 1) / 2.0, (h - 1) / 2.0 - np.arange(h)


def _joseph_chunk(origin, direction, shape):
    """COO triplets of Joseph's method for rays that march along columns (|d_x| >= |d_y|).

    Rays marching along rows are handled by the caller by swapping the roles of x and y.
    Returns (ray index, pixel row, pixel column, weight).
    """
    h, w = shape
    xs, _ = pixel_centres(shape)
    t = (xs[None, :] - origin[:, :1]) / direction[:, :1]          # (R, W) ray parameter at columns
    row = (h - 1) / 2.0 - (origin[:, 1:] + t * direction[:, 1:])  # fractional row coordinate
    i0 = np.floor(row)
    frac = row - i0
    step = 1.0 / np.abs(direction[:, 0])
    ray = np.broadcast_to(np.arange(len(origin))[:, None], row.shape)
    col = np.broadcast_to(np.arange(w)[None, :], row.shape)
    triplets = []
    for offset, weight in ((0, 1.0 - frac), (1, frac)):
        rows = i0 + offset
        keep = (rows >= 0) & (rows < h) & (weight > 0)
        triplets.append((ray[keep], rows[keep].astype(np.int64), col[keep], (weight * step[:, None])[keep]))
    return [np.concatenate(parts) for parts in zip(*triplets)]


def _joseph_group(rays: Rays, index: np.ndarray, shape, transpose: bool):
    """Joseph triplets for the rays ``index`` that all march along the same axis."""
    h, w = shape
    origin, direction = rays.origin[index], rays.direction[index]
    if transpose:  # march along rows: reflect (x, y) -> (-y, -x), which transposes the pixel grid
        origin, direction = -origin[:, ::-1], -direction[:, ::-1]
        shape = (w, h)
    per_chunk = max(1, _CHUNK_SAMPLES // max(shape))
    parts = []
    for start in range(0, len(index), per_chunk):
        sl = slice(start, start + per_chunk)
        ray, r, c, v = _joseph_chunk(origin[sl], direction[sl], shape)
        rr, cc = (c, r) if transpose else (r, c)
        parts.append((index[sl][ray], rr * w + cc, v))
    return parts


def joseph_matrix(rays: Rays, shape: tuple[int, int]) -> sp.csr_matrix:
    """The (n_rays, H*W) system matrix of Joseph's method for the given rays."""
    x_major = np.abs(rays.direction[:, 0]) >= np.abs(rays.direction[:, 1])
    parts = (_joseph_group(rays, np.flatnonzero(x_major), shape, transpose=False)
             + _joseph_group(rays, np.flatnonzero(~x_major), shape, transpose=True))
    return _csr_from_parts(parts, (len(rays.origin), shape[0] * shape[1]))


def interpolation_matrix(sample: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
                         n_pixels: int, n_views: int, n_detectors: int) -> sp.csr_matrix:
    """Pixel-driven back-projection: the (n_pixels, n_views * n_detectors) matrix that
    interpolates every view linearly at each pixel's detector coordinate, times a weight.

    ``sample(pixels)`` returns, for those pixel indices, the fractional detector index (P, V) of
    the ray through each pixel in each view and the weight (P, V).  Samples off the detector
    contribute zero (as in scikit-image's ``iradon``).  Entries are generated pixel by pixel in
    increasing column order, so the CSR arrays are assembled directly, without sorting.
    """
    per_chunk = max(1, _CHUNK_SAMPLES // n_views)
    cols, vals, counts = [], [], []
    for start in range(0, n_pixels, per_chunk):
        coordinate, weight = sample(np.arange(start, min(start + per_chunk, n_pixels)))
        k0 = np.floor(coordinate)
        frac = coordinate - k0
        k = k0[..., None] + np.array([0.0, 1.0])                       # (P, V, 2)
        w = np.stack([1.0 - frac, frac], -1) * weight[..., None]
        keep = (k >= 0) & (k < n_detectors) & (w > 0)
        cols.append((np.arange(n_views)[:, None] * n_detectors + k)[keep].astype(np.int32))
        vals.append(w[keep].astype(np.float32))
        counts.append(keep.reshape(len(k), -1).sum(1))
    indptr = np.concatenate([[0], np.cumsum(np.concatenate(counts))]).astype(np.int32)
    return sp.csr_matrix((np.concatenate(vals), np.concatenate(cols), indptr),
                         shape=(n_pixels, n_views * n_detectors))


def _csr_from_parts(parts, shape) -> sp.csr_matrix:
    """Sum COO triplets (rows, cols, values) into a CSR matrix with sorted indices."""
    rows, cols, vals = (np.concatenate(p) for p in zip(*parts)) if parts else (np.zeros(0, int),) * 3
    matrix = sp.csr_matrix((vals.astype(np.float32), (rows, cols)), shape=shape)
    matrix.sort_indices()
    return matrix


# ------------------------------------------------------------------------ torch CSR
def to_scipy_csr(matrix: torch.Tensor) -> sp.csr_matrix:
    """torch CSR (on the CPU) -> scipy CSR sharing the same memory."""
    return sp.csr_matrix((matrix.values().numpy(), matrix.col_indices().numpy(),
                          matrix.crow_indices().numpy()), shape=tuple(matrix.shape))


def torch_csr(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, size) -> torch.Tensor:
    """A torch sparse CSR tensor (torch's "beta" warning silenced; the caller checks invariants)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, val, size=tuple(size), check_invariants=False)


def to_torch_csr(matrix: sp.csr_matrix) -> torch.Tensor:
    """scipy CSR -> torch sparse CSR with int32 indices and float32 values."""
    return torch_csr(torch.from_numpy(matrix.indptr.astype(np.int32)),
                     torch.from_numpy(matrix.indices.astype(np.int32)),
                     torch.from_numpy(matrix.data.astype(np.float32)), matrix.shape)


# --------------------------------------------------------------------------- caching
def cache_dir() -> Path:
    """Folder of the on-disk matrix cache: ``$SCORERECON_CACHE/ct`` or the user cache folder."""
    root = os.environ.get("SCORERECON_CACHE")
    if not root:
        import platformdirs
        root = platformdirs.user_cache_dir("scorerecon")
    return Path(root) / "ct"


def _save(path: Path, matrix: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"crow": matrix.crow_indices(), "col": matrix.col_indices(), "val": matrix.values(),
               "shape": torch.tensor(matrix.shape), "version": torch.tensor(BUILDER_VERSION)}
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)


def _load(path: Path, shape: tuple[int, int]) -> torch.Tensor | None:
    """The cached matrix, or None when the file is missing, stale or corrupted."""
    try:
        p = torch.load(path, weights_only=True)
        ok = (int(p["version"]) == BUILDER_VERSION and tuple(p["shape"].tolist()) == shape
              and p["crow"].dtype == torch.int32 and len(p["crow"]) == shape[0] + 1
              and int(p["crow"][-1]) == len(p["col"]) == len(p["val"])
              and (len(p["col"]) == 0 or 0 <= int(p["col"].min()) <= int(p["col"].max()) < shape[1]))
        if not ok:
            return None
        return torch_csr(p["crow"], p["col"], p["val"].float(), shape)
    except Exception:  # unreadable, truncated or foreign file: rebuild
        return None


def cached_matrix(key: str, name: str, shape: tuple[int, int],
                  build: Callable[[], sp.csr_matrix]) -> torch.Tensor:
    """Load matrix ``name`` of geometry ``key`` from the disk cache, or build and store it."""
    path = cache_dir() / f"{key}-{name}.pt"
    matrix = _load(path, shape) if path.is_file() else None
    if matrix is None:
        matrix = to_torch_csr(build())
        try:
            _save(path, matrix)
        except (OSError, ValueError):  # read-only or missing cache folder: keep it in memory only
            pass
    return matrix


def lru(maxsize: int):
    """An in-process LRU keyed on a geometry's ``cache_key()`` (functools.lru_cache underneath)."""
    def wrap(fn):
        @functools.lru_cache(maxsize=maxsize)
        def by_key(key, geometry):
            return fn(geometry)

        @functools.wraps(fn)
        def call(geometry):
            return by_key(geometry.cache_key(), geometry)
        call.cache_clear = by_key.cache_clear
        return call
    return wrap


def digest(*parts) -> str:
    """A short stable hex hash of strings and arrays."""
    h = hashlib.sha256()
    for part in parts:
        h.update(np.ascontiguousarray(part).tobytes() if isinstance(part, np.ndarray) else repr(part).encode())
        h.update(b"|")
    return h.hexdigest()[:24]
