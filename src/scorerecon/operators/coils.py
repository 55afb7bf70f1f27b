"""Receive coils: simulated sensitivities, ESPIRiT estimation, and coil combination.

* :func:`birdcage_maps` — C coils evenly spaced on a ring of relative radius r around the field
  of view, S_c(p) ∝ e^{iφ_c(p)} / ‖p − p_c‖ (sigpy.mri.birdcage_maps), normalised so that
  Σ_c |S_c|² = 1 at every pixel, the normalisation ESPIRiT maps also have.
* :func:`synthetic_phase` — a smooth random image phase (a random quadratic polynomial over the
  field of view plus a global offset) to turn a real magnitude image into a complex one.
* :func:`espirit_maps` — ESPIRiT (Uecker et al., MRM 71:990, 2014): calibration matrix of the
  fully sampled centre, its signal subspace, and per pixel the eigenvector of eigenvalue ≈ 1;
  computed in torch on a rectangular calibration region (:func:`espirit_torch`: a 1-D pattern's
  ACS columns over many read-out rows, which sigpy's square region cannot use), or by sigpy
  (``sigpy.mri.app.EspiritCalib``) or BART (``bart ecalib``) for comparison.
* :func:`rss` and :func:`sense_combine` — root-sum-of-squares √(Σ_c |x_c|²) and the least-squares
  (SENSE, Roemer et al. 1990) combination Σ_c S_c^* x_c / Σ_c |S_c|².  With normalised maps and
  coil images x_c = S_c x, both return |x| (rss) and x (sense) exactly.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError
from . import bart
from .masks import calibration_region, centre_slice

ESPIRIT_KERNEL = 6          # k-space kernel width (sigpy and BART default) ...
ESPIRIT_MIN_KERNEL = 3      # ... reduced to half the calibration side, but not below this
ESPIRIT_THRESHOLD = 0.02    # singular-value threshold of the signal subspace (sigpy default)
ESPIRIT_CROP = 0.95         # eigenvalue below which a map is set to zero (outside the object)
ESPIRIT_MAX_CALIB = 32      # calibration block side at most


def birdcage_maps(coils: int, shape, radius: float = 1.5) -> np.ndarray:
    """(coils, H, W) complex64 birdcage sensitivities with Σ_c |S_c|² = 1 everywhere."""
    import sigpy.mri

    if coils < 1:
        raise UserError(f"the number of coils must be at least 1, got {coils}")
    return sigpy.mri.birdcage_maps((int(coils), *map(int, shape)), r=radius).astype(np.complex64)


def synthetic_phase(shape, seed=0, amplitude: float = np.pi / 2) -> np.ndarray:
    """Smooth random phase (radians, float32 (H, W)): offset + quadratic with peak deviation ``amplitude``.

    φ(u, v) = φ_0 + a · q(u, v) / max|q|,  q = Σ_{i+j≤2, (i,j)≠(0,0)} c_ij u^i v^j,
    u, v ∈ [-1, 1] over the field of view, c_ij ~ N(0, 1), φ_0 ~ U(-π, π).
    """
    rng = np.random.default_rng(seed)
    v, u = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    terms = [u, v, u * u, u * v, v * v]
    q = sum(c * t for c, t in zip(rng.standard_normal(len(terms)), terms))
    peak = np.abs(q).max()
    offset = rng.uniform(-np.pi, np.pi)
    return (offset + (amplitude * q / peak if peak > 0 else 0.0)).astype(np.float32)


def rss(coil_images: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Root-sum-of-squares coil combination √(Σ_c |x_c|²) over ``dim`` (kept)."""
    return torch.sqrt((coil_images.abs() ** 2).sum(dim=dim, keepdim=True))


def sense_combine(coil_images: torch.Tensor, maps: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Least-squares combination Σ_c S_c^* x_c / Σ_c |S_c|² over ``dim`` (0 where no coil sees).

    ``maps`` broadcast against ``coil_images``; (C, H, W) maps get a leading batch axis.
    """
    if maps.dim() == coil_images.dim() - 1:
        maps = maps.unsqueeze(0)
    weight = (maps.abs() ** 2).sum(dim=dim, keepdim=True)
    seen = weight > 0
    combined = (maps.conj() * coil_images).sum(dim=dim, keepdim=True)
    return torch.where(seen, combined / torch.where(seen, weight, torch.ones_like(weight)),
                       torch.zeros_like(combined))


# ----------------------------------------------------------------------------- ESPIRiT
def espirit_maps(kspace: np.ndarray, calib_shape: tuple[int, int] | None = None, backend: str = "torch",
                 threshold: float = ESPIRIT_THRESHOLD, kernel_width: int = ESPIRIT_KERNEL,
                 crop: float = ESPIRIT_CROP) -> np.ndarray:
    """ESPIRiT sensitivities (coils, H, W) complex64 from k-space (coils, H, W).

    ``calib_shape``: (rows, columns) of the fully sampled centre used for calibration (default:
    the largest centred rectangle the sampling pattern holds, each side at most
    :data:`ESPIRIT_MAX_CALIB`: outer k-space adds noise, not sensitivity information).  The kernel
    width never exceeds half the shorter calibration side: a k × k kernel on a c × c block gives
    (c − k + 1)² patches, and with k > c/2 they are too few to span the signal subspace, so the
    eigenvalues of good maps fall below ``crop`` (10 × 10 block, 8 coils: map agreement 0.31 with
    k = 6, 0.999 with k = 5).
    ``backend``: "torch" (:func:`espirit_torch`, rectangular regions), "sigpy" (square region of
    the shorter side) or "bart" (``bart ecalib``).
    """
    kspace = np.asarray(kspace)
    if calib_shape is None:
        calib_shape = calibration_region(np.abs(kspace).sum(axis=0) > 0)
    rows, cols = (min(int(c), ESPIRIT_MAX_CALIB) for c in calib_shape)
    if min(rows, cols) < 2 * ESPIRIT_MIN_KERNEL:
        raise UserError(f"the k-space centre holds only a {rows}x{cols} fully sampled block, too small for "
                        f"ESPIRiT (need {2 * ESPIRIT_MIN_KERNEL}x{2 * ESPIRIT_MIN_KERNEL}): use a larger "
                        "--center-fraction or supply sensitivity maps")
    kernel_width = min(kernel_width, min(rows, cols) // 2)
    if backend == "torch":
        return espirit_torch(torch.from_numpy(kspace), (rows, cols), threshold, kernel_width, crop).numpy()
    if backend == "bart":
        return _espirit_bart(kspace, (rows, cols), threshold, kernel_width, crop)
    if backend != "sigpy":
        raise UserError(f"unknown ESPIRiT backend {backend!r}: choose 'torch', 'sigpy' or 'bart'")
    from sigpy.mri.app import EspiritCalib
    app = EspiritCalib(kspace.astype(np.complex64), calib_width=min(rows, cols), thresh=threshold,
                       kernel_width=kernel_width, crop=crop, show_pbar=False)
    return np.asarray(app.run(), dtype=np.complex64)


def espirit_torch(kspace: torch.Tensor, calib_shape: tuple[int, int], threshold: float = ESPIRIT_THRESHOLD,
                  kernel_width: int = ESPIRIT_KERNEL, crop: float = ESPIRIT_CROP,
                  chunk_rows: int = 16) -> torch.Tensor:
    """ESPIRiT (Uecker et al. 2014) on a rectangular calibration region, in torch.

    1. Calibration matrix: every k × k patch (all coils) of the centre block is a row; its right
       singular vectors with σ > ``threshold`` σ_max span the signal subspace (kernels K_n).
    2. Per pixel r the image-space operator G(r) = Σ_n v_n(r) v_n(r)^H, v_n = F^{-1} K_n (zero-padded,
       scaled by N / k² as in sigpy), is assembled from the kernels' cross-correlations
       R_ij(d) = Σ_n Σ_b K_ni(b + d) K_nj(b)^*:  G_ij(r) = k^{-2} Σ_d R_ij(d) e^{2πi d·(r − c)/N}.
    3. The maps are G's top eigenvector where its eigenvalue exceeds ``crop`` (else 0), phase
       referenced to the first coil.  Pixels are processed ``chunk_rows`` image rows at a time.
    """
    coils, height, width = kspace.shape
    k = kernel_width
    block = kspace[:, centre_slice(height, calib_shape[0]), centre_slice(width, calib_shape[1])]
    patches = block.to(torch.complex128).unfold(1, k, 1).unfold(2, k, 1)      # (C, py, px, k, k)
    matrix = patches.permute(1, 2, 0, 3, 4).reshape(-1, coils * k * k)
    _, singular, vh = torch.linalg.svd(matrix, full_matrices=False)
    kernels = vh[singular > threshold * singular.max()].reshape(-1, coils, k, k)
    size = 2 * k - 1
    spectra = torch.fft.fft2(kernels, s=(size, size))
    correlation = torch.fft.ifft2(torch.einsum("niuv,njuv->ijuv", spectra, spectra.conj())) / k ** 2
    phase_y, phase_x = (_shift_phases(n, size, kspace.device) for n in (height, width))
    partial = torch.einsum("ijuv,sv->siju", correlation, phase_x)
    maps = torch.zeros(height, width, coils, dtype=torch.complex64, device=kspace.device)
    for start in range(0, height, chunk_rows):
        gram = torch.einsum("siju,ru->rsij", partial, phase_y[start:start + chunk_rows])
        values, vectors = torch.linalg.eigh(gram)
        top = vectors[..., -1]
        reference = top[..., :1]
        top = top * (reference.conj() / reference.abs().clamp_min(1e-30))
        maps[start:start + chunk_rows] = (top * (values[..., -1:] > crop)).to(torch.complex64)
    return maps.permute(2, 0, 1).contiguous()


def _shift_phases(n: int, size: int, device) -> torch.Tensor:
    """e^{2πi d (r − n//2)/n} for r < n and the lags d of a length-``size`` circular correlation."""
    lags = torch.fft.fftfreq(size, 1.0 / size, dtype=torch.float64, device=device)  # 0, 1, .., -1
    r = torch.arange(n, dtype=torch.float64, device=device) - n // 2
    return torch.exp(2j * np.pi * torch.outer(r, lags) / n)


def _espirit_bart(kspace: np.ndarray, calib_shape: tuple[int, int], threshold: float, kernel_width: int,
                  crop: float) -> np.ndarray:
    if not bart.available():
        raise UserError("the 'bart' executable is not installed: apt-get install bart, or use backend 'torch'")
    region = f"{calib_shape[0]}:{calib_shape[1]}:1"
    # bart's -t thresholds eigenvalues of the calibration Gram, the squared singular values that
    # ``threshold`` bounds: -t 0.02 dropped signal kernels and zeroed maps inside the object
    maps = bart.run(["ecalib", "-m1", "-r", region, "-k", f"{kernel_width}:{kernel_width}:1", "-t", str(threshold ** 2),
                     "-c", str(crop), "kspace", "maps"], {"kspace": bart.kspace_to_bart(kspace)}, "maps")
    return bart.kspace_from_bart(maps).astype(np.complex64)


#: the range the peak of Σ_c |S_c|² of supplied maps must lie in (1 for ESPIRiT's and simulated maps)
MAP_ENERGY_RANGE = (0.5, 2.0)


def check_maps(maps: np.ndarray, kspace_shape) -> np.ndarray:
    """Refuse maps whose coil count or grid differs from the k-space (coils, H, W), and maps not
    normalised to Σ_c |S_c|² = 1 inside the object: the SENSE image of other maps is scaled by
    1/√Σ|S_c|², an intensity the prior (trained on images of peak 1) does not expect."""
    maps = np.asarray(maps)
    if maps.ndim != 3 or maps.shape[0] != kspace_shape[0]:
        coils = maps.shape[0] if maps.ndim == 3 else f"shape {maps.shape}"
        raise UserError(f"the sensitivity maps have {coils} coils but the k-space has {kspace_shape[0]}: "
                        "supply one map per coil, or drop the maps to estimate them by ESPIRiT")
    if tuple(maps.shape[-2:]) != tuple(kspace_shape[-2:]):
        raise UserError(f"the sensitivity maps are {maps.shape[1]}x{maps.shape[2]} but the k-space is "
                        f"{kspace_shape[-2]}x{kspace_shape[-1]}: use maps of the k-space size")
    if not np.all(np.isfinite(maps)):
        raise UserError("the sensitivity maps contain NaN or Inf values: supply finite maps, or drop them to "
                        "estimate them by ESPIRiT")
    peak = float((np.abs(maps) ** 2).sum(axis=0).max())
    if not MAP_ENERGY_RANGE[0] <= peak <= MAP_ENERGY_RANGE[1]:
        raise UserError(f"the sensitivity maps are not normalised (the sum over coils of |S|^2 peaks at {peak:.3g}, "
                        "not 1): divide them by the root-sum-of-squares of the maps inside the object, or drop "
                        "them to estimate them by ESPIRiT")
    return maps.astype(np.complex64)


def measurement_maps(meas) -> np.ndarray:
    """The checked ``extras["sensitivity_maps"]`` of a multi-coil ``Measurement``.

    Estimated by ESPIRiT (from the measured data and its fully sampled centre) when absent, and
    stored back into ``meas.extras`` so that the estimate is made once.
    """
    maps = meas.extras.get("sensitivity_maps")
    if maps is None:
        maps = espirit_maps(np.asarray(meas.data) * (np.asarray(meas.mask) != 0),
                            calib_shape=calibration_region(meas.mask))
        meas.extras["sensitivity_maps"] = maps
    return check_maps(maps, meas.data.shape)
