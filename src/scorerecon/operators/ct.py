"""CT: parallel- and fan-beam Radon transforms as A = P(Λ) T, FBP, and the masks Λ.

Units.  The operator works in *pixel units* on unit-window images (``data/intensity.py``): a
projection value is Σ u · (length in pixels).  The geometry is stored in millimetres, as it is in
a measurement file, and divided by ``pixel_size`` where it is used.  :func:`sinogram_to_unit` and
:func:`sinogram_to_physical` convert post-log sinograms with ``ct_line_integral_scale``.

Coordinates (pixel units, y up, origin at the image centre; see ``ct_projector``):

* parallel beam, view angle θ: rays travel along d(θ) = (-sin θ, cos θ); detector bin k sits at
  s_k = (k - (D-1)/2) Δs along u(θ) = (cos θ, sin θ), so (T f)(θ, s) = ∫ f(s u + t d) dt, the
  convention of scikit-image's ``radon`` (which puts the centre at N//2, so the two agree exactly
  for odd N).
* fan beam, source angle β: the source sits at -R_so d(β), the detector's centre at
  (R_sd - R_so) d(β) and its bins along u(β).  Flat detector: bin k at u_k = (k - (D-1)/2) Δs.
  Curved (equi-angular) detector: bin k at fan angle γ_k = u_k / R_sd (arc length Δs measured at
  the source-detector distance).  A full scan covers β in [0, 2π).

T is Joseph's method (an exact sparse matrix, ``ct_projector``); T^H is its exact transpose;
T^{-1} is filtered back-projection (Kak & Slaney 1988, ch. 3): the discrete ramp filter applied in
the frequency domain with zero padding (as scikit-image's ``iradon``) and, for fan beam, the
cosine pre-weighting and distance-weighted back-projection for flat and curved detectors.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch

from ..data.intensity import ct_line_integral_scale
from ..errors import UserError
from . import ct_projector as proj
from .base import MaskedOperator

FILTERS = ("ramp", "shepp-logan", "cosine", "hann")
KINDS = ("parallel", "fan")
DETECTOR_SHAPES = ("flat", "curved")


# ============================================================================= geometry
@dataclass(frozen=True, eq=False)
class CTGeometry:
    """A CT scan geometry over the FULL view set; lengths in mm, angles in radians.

    ``angles`` are the view angles θ (parallel) or source angles β (fan).  Fan-beam fields
    (``source_origin``, ``source_detector``, ``detector_shape``) are ignored for parallel beam.
    """

    kind: str
    image_shape: tuple[int, int]
    angles: np.ndarray
    n_detectors: int
    detector_spacing: float
    pixel_size: float = 1.0
    source_origin: float | None = None
    source_detector: float | None = None
    detector_shape: str = "flat"
    _key: str = field(init=False, repr=False)

    def __post_init__(self):
        angles = np.array(self.angles, dtype=np.float64).reshape(-1)
        angles.setflags(write=False)
        object.__setattr__(self, "angles", angles)
        object.__setattr__(self, "image_shape", tuple(int(n) for n in self.image_shape))
        object.__setattr__(self, "n_detectors", int(self.n_detectors))
        for name in ("detector_spacing", "pixel_size", "source_origin", "source_detector"):
            value = getattr(self, name)
            object.__setattr__(self, name, None if value is None else float(value))
        self._validate()
        object.__setattr__(self, "_key", proj.digest(
            proj.BUILDER_VERSION, self.kind, self.image_shape, self.n_detectors, self.detector_spacing,
            self.pixel_size, self.source_origin, self.source_detector, self.detector_shape, self.angles))

    def _validate(self) -> None:
        if self.kind not in KINDS:
            raise UserError(f"unknown CT geometry kind {self.kind!r}: use 'parallel' or 'fan'")
        if len(self.image_shape) != 2 or min(self.image_shape) < 2:
            raise UserError(f"CT image shape {self.image_shape} is invalid: give (H, W) with H, W >= 2")
        if len(self.angles) < 1 or not np.all(np.isfinite(self.angles)):
            raise UserError("the CT geometry needs at least one finite view angle")
        if self.n_detectors < 1 or not 0 < self.detector_spacing < np.inf or not 0 < self.pixel_size < np.inf:
            raise UserError("CT geometry: n_detectors, detector_spacing and pixel_size must be positive and finite")
        if self.kind == "fan":
            self._validate_fan()
        _check_index_range(self)

    def _validate_fan(self) -> None:
        if self.detector_shape not in DETECTOR_SHAPES:
            raise UserError(f"unknown detector shape {self.detector_shape!r}: use 'flat' or 'curved'")
        if self.source_origin is None or self.source_detector is None:
            raise UserError("a fan-beam geometry needs source_origin and source_detector (mm)")
        radius = 0.5 * float(np.hypot(*self.image_shape)) * self.pixel_size
        if not self.source_origin > radius:
            raise UserError(f"source_origin {self.source_origin:g} mm lies inside the image (radius "
                            f"{radius:g} mm): move the source further out")
        if not self.source_detector > self.source_origin:
            raise UserError("source_detector must exceed source_origin: the detector is behind the object")

    # -- constructors -----------------------------------------------------------------
    @classmethod
    def parallel(cls, image_shape, n_views: int = 180, n_detectors: int | None = None,
                 detector_spacing: float | None = None, pixel_size: float = 1.0,
                 angular_range: float = np.pi) -> "CTGeometry":
        """Parallel beam, ``n_views`` angles evenly over [0, angular_range); by default one bin
        per pixel and enough bins to cover the image diagonal."""
        _check_constructor(image_shape, n_views, pixel_size)
        spacing = pixel_size if detector_spacing is None else detector_spacing
        if n_detectors is None:
            n_detectors = int(np.ceil(np.hypot(*image_shape) * pixel_size / spacing)) + 1
        angles = np.arange(n_views) * (angular_range / n_views)
        return cls("parallel", tuple(image_shape), angles, n_detectors, spacing, pixel_size)

    @classmethod
    def fan(cls, image_shape, n_views: int = 360, n_detectors: int | None = None,
            detector_spacing: float | None = None, pixel_size: float = 1.0,
            source_origin: float | None = None, source_detector: float | None = None,
            detector_shape: str = "flat") -> "CTGeometry":
        """Fan beam over a full 2π scan.  Defaults: source at 2.5× the image's half-diagonal,
        magnification 2, bins one pixel wide at the isocentre, enough bins to cover the image."""
        _check_constructor(image_shape, n_views, pixel_size)
        radius = 0.5 * float(np.hypot(*image_shape)) * pixel_size
        r_so = 2.5 * radius if source_origin is None else source_origin
        r_sd = 2.0 * r_so if source_detector is None else source_detector
        spacing = pixel_size * r_sd / r_so if detector_spacing is None else detector_spacing
        if n_detectors is None:
            half_angle = np.arcsin(min(1.0, (radius + pixel_size) / r_so))
            half = r_sd * (np.tan(half_angle) if detector_shape == "flat" else half_angle)
            n_detectors = 2 * int(np.ceil(half / spacing)) + 1
        angles = np.arange(n_views) * (2 * np.pi / n_views)
        return cls("fan", tuple(image_shape), angles, n_detectors, spacing, pixel_size,
                   r_so, r_sd, detector_shape)

    # -- storage ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """HDF5-storable description (scalars, strings, and the angle array)."""
        d = {"kind": self.kind, "image_shape": list(self.image_shape), "angles": self.angles.copy(),
             "n_detectors": self.n_detectors, "detector_spacing": self.detector_spacing,
             "pixel_size": self.pixel_size}
        if self.kind == "fan":
            d.update(source_origin=self.source_origin, source_detector=self.source_detector,
                     detector_shape=self.detector_shape)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CTGeometry":
        """Inverse of :meth:`to_dict`; a missing or malformed field raises :class:`UserError`."""
        required = ["kind", "image_shape", "angles", "n_detectors", "detector_spacing", "pixel_size"]
        if d.get("kind") == "fan":
            required += ["source_origin", "source_detector", "detector_shape"]
        missing = [k for k in required if k not in d]
        if missing:
            raise UserError(f"the CT geometry lacks {', '.join(missing)}: re-create the measurement "
                            "with 'scorerecon simulate ct'")
        try:
            fan = {k: _as_str(d[k]) if k == "detector_shape" else float(d[k])
                   for k in ("source_origin", "source_detector", "detector_shape") if k in d}
            fields = (_as_str(d["kind"]), tuple(int(n) for n in np.asarray(d["image_shape"]).reshape(-1)),
                      np.asarray(d["angles"], dtype=np.float64), int(d["n_detectors"]),
                      float(d["detector_spacing"]), float(d["pixel_size"]))
        except (TypeError, ValueError) as err:
            raise UserError(f"the CT geometry has a malformed field ({err}): re-create the measurement "
                            "with 'scorerecon simulate ct'") from None
        return cls(*fields, **fan)

    def cache_key(self) -> str:
        """A stable hash of everything that determines the system matrix."""
        return self._key

    def __eq__(self, other) -> bool:
        return isinstance(other, CTGeometry) and other.cache_key() == self.cache_key()

    def __hash__(self) -> int:
        return hash(self._key)

    # -- derived quantities (pixel units) -----------------------------------------------
    @property
    def n_views(self) -> int:
        return len(self.angles)

    @property
    def sinogram_shape(self) -> tuple[int, int]:
        """(views, detectors) of the full sinogram."""
        return self.n_views, self.n_detectors

    def detector_positions(self) -> np.ndarray:
        """u_k = (k - (D-1)/2) Δs in pixel units: along the detector (flat) or its arc (curved)."""
        return (np.arange(self.n_detectors) - (self.n_detectors - 1) / 2.0) * (self.detector_spacing / self.pixel_size)

    def rays(self) -> proj.Rays:
        """One ray per (view, bin), view-major, in pixel units."""
        theta = self.angles[:, None]
        d = np.stack(np.broadcast_arrays(-np.sin(theta), np.cos(theta)), -1)   # (V, 1, 2)
        u = np.stack(np.broadcast_arrays(np.cos(theta), np.sin(theta)), -1)
        pos = self.detector_positions()[None, :, None]                          # (1, D, 1)
        if self.kind == "parallel":
            origin, direction = pos * u, d
        else:
            r_so, r_sd = self.source_origin / self.pixel_size, self.source_detector / self.pixel_size
            origin = np.broadcast_to(-r_so * d, (self.n_views, self.n_detectors, 2))
            if self.detector_shape == "flat":
                direction = r_sd * d + pos * u
                direction = direction / np.linalg.norm(direction, axis=-1, keepdims=True)
            else:
                gamma = pos / r_sd
                direction = np.cos(gamma) * d + np.sin(gamma) * u
        shape = (self.n_views, self.n_detectors, 2)
        return proj.Rays(np.broadcast_to(origin, shape).reshape(-1, 2).copy(),
                         np.broadcast_to(direction, shape).reshape(-1, 2).copy())


def _check_constructor(image_shape, n_views: int, pixel_size: float) -> None:
    """What the constructors compute with before the geometry validates itself."""
    if int(n_views) < 1:
        raise UserError(f"the number of views must be at least 1, got {n_views}")
    if np.ndim(image_shape) != 1 or len(image_shape) != 2:
        raise UserError(f"CT image shape {image_shape} is invalid: give (H, W)")
    if not (np.isfinite(pixel_size) and pixel_size > 0):
        raise UserError(f"the pixel size must be a positive finite number of mm, got {pixel_size}")


def _as_str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


#: the most entries an int32-indexed CSR matrix can address
INT32_ENTRIES = 2 ** 31 - 1


def _check_index_range(geometry: CTGeometry) -> None:
    """Part of a geometry's validation: refuse one whose system matrices (below) outgrow int32
    indices.  Every pixel reaches about two bins in each view (measured: 1.8 V·H·W entries in T,
    2.0 V·H·W in FBP's back-projector), so 2 V·H·W bounds them; past 2^31 the indices would wrap
    silently."""
    h, w = geometry.image_shape
    entries = 2 * geometry.n_views * h * w
    if entries > INT32_ENTRIES or geometry.n_views * geometry.n_detectors > INT32_ENTRIES:
        raise UserError(f"a {h}x{w} image with {geometry.n_views} views needs CT system matrices of about "
                        f"{entries:.2g} entries, more than 32-bit indices address: use fewer views or a smaller image")


# ============================================================================ matrices
@proj.lru(maxsize=4)
def system_matrices(geometry: CTGeometry) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, T^T) as int32 CSR: (V·D, H·W) and (H·W, V·D); cached in memory and on disk."""
    key = geometry.cache_key()
    m, n = geometry.n_views * geometry.n_detectors, geometry.image_shape[0] * geometry.image_shape[1]
    forward = proj.cached_matrix(key, "forward", (m, n),
                                 lambda: proj.joseph_matrix(geometry.rays(), geometry.image_shape))
    adjoint = proj.cached_matrix(key, "adjoint", (n, m), lambda: proj.to_scipy_csr(forward).T.tocsr())
    return forward, adjoint


@proj.lru(maxsize=4)
def backprojection_matrix(geometry: CTGeometry) -> torch.Tensor:
    """The (H·W, V·D) weighted pixel-driven back-projector of FBP (see :func:`_fbp_sampling`)."""
    n = geometry.image_shape[0] * geometry.image_shape[1]
    shape = (n, geometry.n_views * geometry.n_detectors)
    return proj.cached_matrix(geometry.cache_key(), "fbp", shape, lambda: proj.interpolation_matrix(
        lambda pixels: _fbp_sampling(geometry, pixels), n, geometry.n_views, geometry.n_detectors))


def _fbp_sampling(geometry: CTGeometry, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fractional detector index and back-projection weight, (P, V), of the given pixels.

    Parallel: s = x cos θ + y sin θ, weight π/V (Kak & Slaney §3.3: Δθ = π/V over [0, π),
    and the same for a 2π scan, where every line is measured twice).
    Fan, source S = -R_so d(β), a = R_so + p·d (distance to the pixel along the central ray),
    b = p·u: flat detector u = R_sd b / a, weight (π/V) U^-2 with U = a / R_so (§3.4.2);
    curved detector γ = atan2(b, a), weight (π/V) L^-2 with L² = a² + b² (§3.4.1).
    """
    xs, ys = proj.pixel_centres(geometry.image_shape)
    x, y = xs[pixels % len(xs), None], ys[pixels // len(xs), None]
    theta = geometry.angles[None, :]
    cos, sin = np.cos(theta), np.sin(theta)
    across = x * cos + y * sin
    spacing = geometry.detector_spacing / geometry.pixel_size
    centre = (geometry.n_detectors - 1) / 2.0
    scale = np.pi / geometry.n_views
    if geometry.kind == "parallel":
        return across / spacing + centre, np.full_like(across, scale)
    r_so, r_sd = geometry.source_origin / geometry.pixel_size, geometry.source_detector / geometry.pixel_size
    along = r_so + (-x * sin + y * cos)
    if geometry.detector_shape == "flat":
        return r_sd * across / along / spacing + centre, scale * (r_so / along) ** 2
    return np.arctan2(across, along) * r_sd / spacing + centre, scale / (along ** 2 + across ** 2)


def _ramp_kernel(n: np.ndarray) -> np.ndarray:
    """Kak & Slaney's band-limited ramp for unit sampling (§3.3.3): 1/4 at 0, -1/(π n)² odd n."""
    h = np.zeros(n.shape)
    h[n == 0] = 0.25
    odd = n % 2 == 1
    h[odd] = -1.0 / (np.pi * n[odd]) ** 2
    return h


def _check_filter(name: str) -> None:
    if name not in FILTERS:
        raise UserError(f"unknown FBP filter {name!r}: use one of {', '.join(FILTERS)}")


def _window(name: str, size: int) -> np.ndarray:
    """Apodisation of the ramp over the full FFT grid, as scikit-image's ``iradon``."""
    if name == "ramp":
        return np.ones(size)
    if name == "shepp-logan":
        omega = np.pi * np.fft.fftfreq(size)
        return np.concatenate([[1.0], np.sin(omega[1:]) / omega[1:]])
    if name == "cosine":
        return np.fft.fftshift(np.sin(np.linspace(0, np.pi, size, endpoint=False)))
    _check_filter(name)
    return np.fft.fftshift(np.hanning(size))


def padded_size(n_detectors: int) -> int:
    """Zero-padded filter length: max(64, next power of two >= 2 D), as scikit-image."""
    return max(64, int(2 ** np.ceil(np.log2(2 * n_detectors))))


@functools.lru_cache(maxsize=16)
def fbp_filter(geometry: CTGeometry, name: str = "ramp") -> tuple[np.ndarray, np.ndarray]:
    """float32 (pre-weight (D,), frequency response (P//2+1,)) of FBP's filtering step.

    Parallel: Q = (1/Δs) h * p.  Flat fan (virtual detector through the origin, spacing
    a = Δs R_so/R_sd, coordinate p_k): pre-weight R_so / sqrt(R_so² + p_k²), Q = (1/a) h * R'
    (Kak & Slaney §3.4.2).  Curved fan (spacing α = Δs/R_sd): pre-weight R_so cos γ_k,
    kernel (nα / sin nα)² h(n) / α (§3.4.1).  The window is symmetrised so that the real
    rFFT filter equals the real part of scikit-image's full-FFT filtering.
    """
    size = padded_size(geometry.n_detectors)
    n = np.abs((np.arange(size) + size // 2) % size - size // 2)  # circulant distance
    h = _ramp_kernel(n)
    spacing = geometry.detector_spacing / geometry.pixel_size
    pos = geometry.detector_positions()
    if geometry.kind == "parallel":
        pre, step = np.ones(geometry.n_detectors), spacing
    else:
        r_so, r_sd = geometry.source_origin / geometry.pixel_size, geometry.source_detector / geometry.pixel_size
        if geometry.detector_shape == "flat":
            virtual = pos * r_so / r_sd
            pre, step = r_so / np.sqrt(r_so ** 2 + virtual ** 2), spacing * r_so / r_sd
        else:
            step = spacing / r_sd
            pre = r_so * np.cos(pos / r_sd)
            gamma = n * step
            h = h * np.divide(gamma, np.sin(gamma), out=np.ones_like(gamma), where=n > 0) ** 2
    window = _window(name, size)
    window = 0.5 * (window + np.roll(window[::-1], 1))
    response = np.real(np.fft.fft(h)) * window / step
    return pre.astype(np.float32), response[: size // 2 + 1].astype(np.float32)


def _check_fan_scan(geometry: CTGeometry) -> None:
    if geometry.kind == "fan":
        step = np.diff(geometry.angles)
        if geometry.n_views < 2 or not np.allclose(step, 2 * np.pi / geometry.n_views, rtol=1e-6):
            raise UserError("fan-beam FBP needs a full 2π scan of evenly spaced views: "
                            "use CTGeometry.fan or an iterative method")


# ============================================================================ operator
def _spmm(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Sparse (m, n) @ dense (n, B): one column goes through the matrix-vector product (about
    twice as fast on CPU as a one-column matrix product), several through one contiguous product."""
    if x.shape[1] == 1:
        return (matrix @ x[:, 0]).unsqueeze(1)
    return matrix @ x.contiguous()


class _SparseMatmul(torch.autograd.Function):
    """y = M x for a sparse M, with backward M^T g (so gradients use the exact transpose)."""

    @staticmethod
    def forward(ctx, matrix, matrix_t, x):
        ctx.matrices = (matrix, matrix_t)
        return _spmm(matrix, x)

    @staticmethod
    def backward(ctx, grad):
        matrix, matrix_t = ctx.matrices
        return None, None, _SparseMatmul.apply(matrix_t, matrix, grad)


def _result_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype an operator returns for ``x``: computed in float32, given back in x's floating
    dtype (float64 in, float64 out), float32 for integer input."""
    return x.dtype if x.is_floating_point() else torch.float32


def _apply(matrix, matrix_t, x: torch.Tensor, out_shape: tuple[int, int]) -> torch.Tensor:
    """Apply ``matrix`` to the trailing two dims of x, all leading dims in one sparse @ dense."""
    lead = x.shape[:-2]
    flat = x.to(matrix.dtype).reshape(-1, matrix.shape[1]).T
    return _SparseMatmul.apply(matrix, matrix_t, flat).T.reshape(*lead, *out_shape).to(_result_dtype(x))


class CTOperator(MaskedOperator):
    """A = Λ ⊙ T with T the Radon transform of ``geometry`` (Joseph's method, sparse int32 CSR).

    Images are (B, C, H, W), sinograms (B, C, V, D); ``mask`` is (V, D) or (V,) (views).
    The products run in float32 and come back in the input's floating dtype.
    ``filter`` is the FBP filter that :meth:`transform_inverse` uses.  FBP inverts T only where
    the views sample the angles densely enough (about π/2 views per pixel of image width: 400
    for 256²); below that, and on a subset of the views, T⁻¹ Λ T has eigenvalues above 2, so
    the repeated step x + T⁻¹[Λ (y − T x)] diverges (``inverse_projects``; a test measures it).
    """

    inverse_projects = False

    def __init__(self, geometry: CTGeometry, mask=None, filter: str = "ramp"):
        full = np.ones(geometry.sinogram_shape, np.float32)
        mask = full if mask is None else combine_masks(geometry, mask)
        super().__init__(torch.as_tensor(mask))
        _check_filter(filter)
        self.geometry, self.filter = geometry, filter
        forward, adjoint = system_matrices(geometry)
        self.register_buffer("matrix", forward, persistent=False)
        self.register_buffer("matrix_t", adjoint, persistent=False)
        self.register_buffer("backprojector", None, persistent=False)

    def _check(self, x: torch.Tensor, shape: tuple[int, int], what: str) -> None:
        if x.dim() < 3 or tuple(x.shape[-2:]) != shape:
            raise UserError(f"{what} of shape {tuple(x.shape)} does not match the CT geometry's "
                            f"{shape}: resample it or build the geometry for it")
        if x.is_complex():  # the float32 matrices would drop the imaginary part with only a warning
            raise UserError(f"a complex {what} ({x.dtype}) was given to the CT operator, which is real: pass "
                            "its real part, or its real and imaginary parts as two batch items")

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """T x: (…, H, W) -> (…, V, D)."""
        self._check(x, self.geometry.image_shape, "image")
        return _apply(self.matrix, self.matrix_t, x, self.geometry.sinogram_shape)

    def transform_adjoint(self, m: torch.Tensor) -> torch.Tensor:
        """T^T m: (…, V, D) -> (…, H, W), the exact transpose of :meth:`transform`."""
        self._check(m, self.geometry.sinogram_shape, "sinogram")
        return _apply(self.matrix_t, self.matrix, m, self.geometry.image_shape)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """A^T y = T^T (Λ ⊙ y), with the sinogram's shape checked before masking."""
        self._check(y, self.geometry.sinogram_shape, "sinogram")
        return super().adjoint(y)

    def transform_inverse(self, m: torch.Tensor) -> torch.Tensor:
        """T^{-1} m by FBP with the operator's filter."""
        return self.fbp(m, self.filter)

    def fbp(self, sinogram: torch.Tensor, filter: str = "ramp") -> torch.Tensor:
        """Filtered back-projection of a full-grid sinogram (…, V, D) -> (…, H, W).

        Filter in the frequency domain with zero padding, then one sparse back-projection.
        """
        self._check(sinogram, self.geometry.sinogram_shape, "sinogram")
        _check_fan_scan(self.geometry)
        pre, response = (torch.as_tensor(a, device=sinogram.device) for a in fbp_filter(self.geometry, filter))
        size = padded_size(self.geometry.n_detectors)
        spectrum = torch.fft.rfft(sinogram.to(torch.float32) * pre, n=size, dim=-1) * response
        filtered = torch.fft.irfft(spectrum, n=size, dim=-1)[..., : self.geometry.n_detectors]
        if self.backprojector is None:
            self.backprojector = backprojection_matrix(self.geometry).to(self.mask.device)
        lead = filtered.shape[:-2]
        flat = _spmm(self.backprojector, filtered.reshape(-1, self.backprojector.shape[1]).T)
        return flat.T.reshape(*lead, *self.geometry.image_shape).to(_result_dtype(sinogram))


def fbp(geometry, sinogram: torch.Tensor, filter: str = "ramp") -> torch.Tensor:
    """FBP of ``sinogram`` (…, V, D) for a :class:`CTGeometry` (or a :class:`CTOperator`)."""
    op = geometry if isinstance(geometry, CTOperator) else CTOperator(geometry)
    return op.fbp(sinogram, filter)


# =============================================================================== masks
def view_mask(n_full: int, k: int | None = None, indices=None, full_circle: bool = False) -> np.ndarray:
    """(V,) float32 view mask: ``k`` evenly spaced views or the given view ``indices``.

    On a half turn (parallel beam over 180°) the k views are round(linspace(0, n_full-1, k)), as
    Song et al.'s code (``get_ct_subsampling_mask``): both ends are kept, so the first and last
    views lie one step apart (0° and 179° of 180 views), the published 23-view protocol, kept for
    comparability.  On a ``full_circle`` (fan beam over 360°) the last view would sit next to the
    first (359° beside 0°) and k views would give k − 1 directions, so the views are
    round(arange(k) · n_full / k) instead: k views evenly spaced around the circle.
    """
    if (k is None) == (indices is None):
        raise UserError("give either the number of views k or the view indices, not both or neither")
    mask = np.zeros(int(n_full), np.float32)
    if k is not None:
        if not 1 <= int(k) <= n_full:
            raise UserError(f"cannot keep {k} views of {n_full}: choose between 1 and {n_full}")
        positions = np.arange(int(k)) * (n_full / int(k)) if full_circle else np.linspace(0, n_full - 1, int(k))
        indices = np.round(positions).astype(int)
    indices = np.asarray(indices, dtype=int).reshape(-1)
    if len(indices) == 0 or indices.min() < 0 or indices.max() >= n_full:
        raise UserError(f"view indices must be a non-empty list within 0..{n_full - 1}")
    mask[indices] = 1.0
    return mask


def limited_angle_mask(geometry: CTGeometry, range_degrees: float, start_degrees: float = 0.0) -> np.ndarray:
    """(V,) float32 mask keeping the views with angle in [start, start + range) degrees, modulo
    the period of the line set: 180° for parallel beam (θ and θ + 180° measure the same lines),
    360° for fan beam."""
    if not range_degrees > 0:
        raise UserError(f"the limited-angle range must be positive, got {range_degrees} degrees")
    period = 180.0 if geometry.kind == "parallel" else 360.0
    # 1e-9 on both ends: a view at exactly the start angle (30° computed as 29.999…) is kept
    offset = np.mod(np.degrees(geometry.angles) - start_degrees + 1e-9, period)
    mask = (offset < range_degrees).astype(np.float32)
    if mask.all():
        raise UserError(f"a {range_degrees:g}° range keeps every view of this scan: choose a smaller range")
    if not mask.any():
        raise UserError(f"no view lies in [{start_degrees:g}°, {start_degrees + range_degrees:g}°): widen the range")
    return mask


def metal_trace_mask(geometry: CTGeometry, metal_image) -> np.ndarray:
    """(V, D) float32 Λ that REMOVES the metal trace: 0 on the bins whose ray passes through the
    boolean ``metal_image`` (its forward projection is > 0), 1 elsewhere.  The trace is 1 - Λ."""
    metal = torch.as_tensor(np.asarray(metal_image, dtype=np.float32))
    if tuple(metal.shape) != geometry.image_shape:
        raise UserError(f"metal mask of shape {tuple(metal.shape)} does not match the image "
                        f"{geometry.image_shape}: give a mask of the image's size")
    if not bool((metal != 0).any()):
        raise UserError("the metal mask is empty: give a mask with at least one metal pixel")
    forward, _ = system_matrices(geometry)
    trace = (forward @ (metal != 0).float().reshape(-1, 1)).reshape(geometry.sinogram_shape) > 1e-6
    keep = (~trace).numpy().astype(np.float32)
    if not keep.any():
        raise UserError("the metal trace covers the whole sinogram: the metal mask is too large")
    return keep


def combine_masks(geometry: CTGeometry, *masks) -> np.ndarray:
    """Product of (V,) view masks and (V, D) masks, as a (V, D) float32 array."""
    out = np.ones(geometry.sinogram_shape, np.float32)
    for mask in masks:
        mask = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask, np.float32)
        if mask.shape == (geometry.n_views,):
            mask = mask[:, None]
        elif mask.shape != geometry.sinogram_shape:
            raise UserError(f"CT mask of shape {mask.shape} fits neither the views ({geometry.n_views},) "
                            f"nor the sinogram {geometry.sinogram_shape}")
        out = out * mask
    if not out.any():
        raise UserError("the combined CT mask keeps no measurement: relax the view, angle or metal mask")
    return out


# ========================================================================= measurements
def ct_operator_from_measurement(meas, filter: str = "ramp") -> CTOperator:
    """The CTOperator of a CT :class:`~scorerecon.data.measurement.Measurement` (geometry + Λ)."""
    if meas.modality != "ct":
        raise UserError(f"expected a CT measurement, got modality {meas.modality!r}")
    geometry = CTGeometry.from_dict(meas.geometry)
    if tuple(meas.data.shape) != geometry.sinogram_shape:
        raise UserError(f"the sinogram's shape {tuple(meas.data.shape)} does not match its geometry "
                        f"{geometry.sinogram_shape}: re-create the measurement")
    mask = np.broadcast_to(np.asarray(meas.mask, np.float32), geometry.sinogram_shape)
    return CTOperator(geometry, mask, filter=filter)


def sinogram_to_unit(meas) -> torch.Tensor:
    """The measured sinogram as (1, 1, V, D) unit-window line integrals in pixel units (Λ applied)."""
    geometry = CTGeometry.from_dict(meas.geometry)
    scale = ct_line_integral_scale(geometry.pixel_size)
    data = np.asarray(meas.data, np.float32) * np.asarray(meas.mask, np.float32) / scale
    return torch.from_numpy(np.ascontiguousarray(data, np.float32))[None, None]


def sinogram_to_physical(sinogram, geometry: CTGeometry) -> np.ndarray:
    """Inverse of :func:`sinogram_to_unit`: pixel-unit unit-window integrals -> post-log line integrals."""
    values = sinogram.detach().cpu().numpy() if isinstance(sinogram, torch.Tensor) else np.asarray(sinogram)
    return (values * ct_line_integral_scale(geometry.pixel_size)).astype(np.float32)
