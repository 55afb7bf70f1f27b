"""PSNR and SSIM with scikit-image's conventions on images in [0, 1] (data range 1), and how well
a standard-deviation map predicts the error.

Both accept an optional boolean mask (e.g. the body): PSNR is computed from the mean squared
error inside the mask, SSIM averages scikit-image's full SSIM map inside the mask.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ..errors import UserError


def _check(recon: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    recon = np.asarray(recon, dtype=np.float64).squeeze()
    truth = np.asarray(truth, dtype=np.float64).squeeze()
    if recon.shape != truth.shape:
        raise UserError(f"reconstruction shape {recon.shape} differs from reference shape {truth.shape}: "
                        "compare images of the same size")
    if not (np.all(np.isfinite(recon)) and np.all(np.isfinite(truth))):
        raise UserError("an image contains NaN or Inf: metrics need finite values")
    return recon, truth


def _pixel_mask(mask, shape: tuple[int, ...], what: str = "mask") -> np.ndarray:
    """``mask`` as booleans (non-zero: True) of the images' ``shape``, size-1 axes dropped as the
    images' are; any other shape (a transposed mask, one of another image) is a UserError."""
    mask = np.asarray(mask).squeeze() != 0
    if mask.shape != shape:
        raise UserError(f"the {what} has shape {mask.shape}, the images {shape}: pass a mask of the images' size")
    return mask


def psnr(recon, truth, mask=None) -> float:
    """Peak signal-to-noise ratio in dB with data range 1 (inf for identical images)."""
    recon, truth = _check(recon, truth)
    if mask is None:
        with np.errstate(divide="ignore"):  # identical images: inf, without a warning
            return float(peak_signal_noise_ratio(truth, recon, data_range=1.0))
    mask = _pixel_mask(mask, truth.shape)
    mse = float(np.mean((recon[mask] - truth[mask]) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))


SSIM_WINDOW = 7  # scikit-image's default window side


def ssim(recon, truth, mask=None) -> float:
    """Structural similarity (scikit-image defaults: 7×7 window) with data range 1.  A volume
    (slices, H, W) is compared slice by slice and the slices' SSIMs averaged, as fastMRI does;
    with a mask, the per-pixel SSIM maps are averaged inside it (scikit-image's unmasked mean
    leaves out a 3-pixel border, so an all-true mask differs slightly)."""
    recon, truth = _check(recon, truth)
    if truth.ndim < 2 or min(truth.shape[-2:]) < SSIM_WINDOW:
        raise UserError(f"images of shape {truth.shape} are too small for SSIM's {SSIM_WINDOW}×{SSIM_WINDOW} "
                        f"window: compare slices of at least {SSIM_WINDOW}×{SSIM_WINDOW} pixels")
    slices = [structural_similarity(t, r, data_range=1.0, full=True)
              for t, r in zip(truth.reshape(-1, *truth.shape[-2:]), recon.reshape(-1, *recon.shape[-2:]))]
    if mask is None:
        return float(np.mean([value for value, _ in slices]))
    return float(np.stack([smap for _, smap in slices]).reshape(truth.shape)[_pixel_mask(mask, truth.shape)].mean())


def body_mask(unit_image: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """Pixels brighter than ``threshold`` in the unit window, holes filled (the body / head)."""
    from scipy import ndimage
    return ndimage.binary_fill_holes(np.asarray(unit_image) > threshold)


def image_metrics(recon, truth, mask=None) -> dict[str, float]:
    """PSNR and SSIM of ``recon`` against ``truth`` (both in [0, 1], clipped first)."""
    recon, truth = _check(recon, truth)
    recon, truth = np.clip(recon, 0, 1), np.clip(truth, 0, 1)
    return {"psnr": psnr(recon, truth, mask), "ssim": ssim(recon, truth, mask)}


def to_unit(image: np.ndarray, modality: str, reference: np.ndarray | None = None) -> np.ndarray:
    """Native units -> [0, 1]: CT by the fixed HU window, MRI magnitude by the reference maximum."""
    from ..data.intensity import hu_to_unit, magnitude_scale
    image = np.abs(np.asarray(image)) if np.iscomplexobj(image) else np.asarray(image, dtype=np.float64)
    if modality == "ct":
        return hu_to_unit(image)
    scale_from = image if reference is None else reference
    return image / magnitude_scale(scale_from)


def evaluate_images(recon, truth, modality: str = "ct", body: bool = False,
                    exclude: np.ndarray | None = None) -> dict[str, float]:
    """Metrics of a reconstruction against a reference, both in native units.

    ``body`` restricts them to the body; ``exclude`` (boolean image, e.g. the metal) removes pixels.
    """
    recon, truth = _check(np.abs(recon) if np.iscomplexobj(recon) else recon,
                          np.abs(truth) if np.iscomplexobj(truth) else truth)
    truth_unit = to_unit(truth, modality)
    recon_unit = to_unit(recon, modality, reference=truth)
    mask = body_mask(truth_unit) if body else None
    if exclude is not None:
        keep = ~_pixel_mask(exclude, truth_unit.shape, "mask of pixels to leave out")
        mask = keep if mask is None else mask & keep
    if mask is not None and not mask.any():
        raise UserError("no pixel is left to compare: the reference has no body above the window's 10 % "
                        "(drop the body mask) or the excluded pixels cover the whole image")
    return image_metrics(recon_unit, truth_unit, mask)


#: the fraction of a Gaussian's mass within one standard deviation of its mean
GAUSSIAN_WITHIN_1STD = 0.6827


def error_and_std(image, std, truth, exclude=None) -> tuple[np.ndarray, np.ndarray]:
    """|image − truth| and ``std`` over the pixels kept (all but ``exclude``, e.g. the metal), as
    flat arrays, in the units of the images."""
    image, truth = _check(image, truth)
    std = np.asarray(std, dtype=np.float64).squeeze()
    if std.shape != truth.shape:
        raise UserError(f"std map shape {std.shape} differs from image shape {truth.shape}: "
                        "give the std map of this reconstruction")
    keep = np.ones(truth.shape, bool) if exclude is None else ~_pixel_mask(exclude, truth.shape, "excluded mask")
    if not keep.any():
        raise UserError("every pixel is excluded: no error left to compare with the std map")
    return np.abs(image - truth)[keep], std[keep]


def std_coverage(error: np.ndarray, std: np.ndarray) -> dict[str, float]:
    """How well a std map predicts the error: Pearson r(std, |error|) and the fractions of pixels
    with |error| ≤ k·std for k = 1, 2 (a calibrated Gaussian posterior: 0.683 and 0.954)."""
    varies = std.std() > 0 and error.std() > 0
    r = float(np.corrcoef(std, error)[0, 1]) if varies else float("nan")
    return {"r_std_err": r, "within_1std": float(np.mean(error <= std)),
            "within_2std": float(np.mean(error <= 2 * std))}


def gaussian_std_scale(samples: int, ratio_sq: float = 1.0, coverage: float = GAUSSIAN_WITHIN_1STD) -> float:
    """The factor c for which |error| ≤ c·std holds with probability ``coverage`` when K =
    ``samples`` independent draws N(μ̂, σ_s²) give the std (ddof 0) and the mean, and the truth lies
    N(0, σ_t²) from μ̂, ``ratio_sq`` = ρ² = σ_t²/σ_s² (1: a sampler of the true posterior).

    The error of the mean has variance σ_t² + σ_s²/K and s² = σ_s² χ²_{K−1}/K, so
    P(|error| ≤ c·s) = P(|T| ≤ c √((K−1)/(ρ²K + 1))), T Student's t with K − 1 degrees of freedom:
    c = t_q √((ρ²K + 1)/(K − 1)), t_q its quantile at (1 + coverage)/2 (ρ = 1: 3.18, 1.55, 1.22
    at K = 2, 4, 8)."""
    from scipy.stats import t as student_t
    if samples < 2:
        raise UserError(f"a std map needs at least 2 posterior samples, got K = {samples}")
    quantile = student_t.ppf((1 + coverage) / 2, samples - 1)
    return float(quantile * np.sqrt((ratio_sq * samples + 1) / (samples - 1)))


def std_scale_at_samples(scale: float, fitted_samples: int, samples: int,
                         coverage: float = GAUSSIAN_WITHIN_1STD) -> float:
    """A std map's factor ``scale``, calibrated for ``coverage`` at K = ``fitted_samples``
    posterior samples, carried to K = ``samples`` under the Gaussian model of
    :func:`gaussian_std_scale`: the ρ² for which that model needs ``scale`` at the fitted K (at
    least 0), and the factor the same ρ² needs at ``samples``.  The spread of K samples changes with
    K without any miscalibration, which is why a scale fitted at one K is not 1 at another."""
    base = gaussian_std_scale(fitted_samples, 0.0, coverage)  # ρ = 0: c = t_q / √(K − 1)
    if samples == fitted_samples:
        return float(scale)
    ratio_sq = max(((scale / base) ** 2 - 1) / fitted_samples, 0.0)
    return gaussian_std_scale(samples, ratio_sq, coverage)


def std_scale_for_coverage(error: np.ndarray, std: np.ndarray, coverage: float = GAUSSIAN_WITHIN_1STD) -> float:
    """The factor c for which |error| ≤ c·std holds on the fraction ``coverage`` of the pixels:
    the empirical ``coverage`` quantile of |error| / std, as conformal calibration of a scalar
    scale does (Angelopoulos & Bates 2021, "A gentle introduction to conformal prediction",
    section 2.3) but without its finite-sample correction, and over pixels, which are not
    exchangeable: a fitted scale, not a coverage guarantee.  A pixel with std 0 counts as covered
    only where its error is 0 too."""
    if not 0 < coverage < 1:
        raise UserError(f"coverage must lie between 0 and 1, got {coverage}")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(error == 0, 0.0, error / std)  # error > 0 with std 0: inf
    scale = float(np.quantile(ratio, coverage, method="inverted_cdf"))
    if not np.isfinite(scale):
        raise UserError(f"the std map is 0 on {np.mean(np.isinf(ratio)):.0%} of the pixels, where the error is "
                        "not: draw more posterior samples (K) before calibrating its scale")
    if scale == 0:
        raise UserError(f"the error is 0 on at least {coverage:.0%} of the pixels: "
                        "there is no scale to calibrate on these images")
    return scale
