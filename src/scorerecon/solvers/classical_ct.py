"""Classical CT reconstructions behind the method registry: ``fbp``, ``sart``, ``tv``, ``li-mar``.

All work in the unit window on pixel-unit line integrals (``operators/ct.py``) and return the
unit-domain image; the registry converts it to HU.

* ``fbp`` — filtered back-projection (Kak & Slaney 1988, ch. 3) of the measured sinogram with
  zeros in the missing views, multiplied by N_full / N_acquired so that the Riemann sum over the
  acquired views keeps the intensities right.  On metal data it reconstructs the *uncorrected*
  scan, measurement + ``extras/metal_trace_data``, as a scanner would: the metal-artefact baseline.
* ``sart`` — the simultaneous form of SART (Andersen & Kak, Ultrasonic Imaging 6, 1984;
  Jiang & Wang, IEEE TMI 22(5), 2003): x ← P₊[x + λ C A^T R (y − A x)], R = 1/(A 1),
  C = 1/(A^T 1), relaxation λ = :data:`SART_RELAXATION`, nonnegativity, started from the
  clipped FBP of the sinogram with the metal trace interpolated (the LI-MAR image; plain FBP
  without metal).
* ``tv`` — min_x ½‖A x − y‖² + w TV(x) s.t. x ≥ 0 (isotropic TV), solved by Chambolle–Pock with
  the diagonal preconditioning of Pock & Chambolle (2011) (``optim.pdhg``), started like SART.
  Measured on a training slice (256², 23 views), preconditioned PDHG reached 33.6 dB in 300
  iterations where FISTA with an inner FGP TV prox (Beck & Teboulle 2009) and step 1/‖A‖² was at
  32.2 dB after 200, still climbing slowly (A^T A of sparse-view CT is ill-conditioned).  The default weight (:func:`default_tv_weight`) was chosen by a sweep on
  validation slices of the *training* volume (``benchmarks/ct_classical.py --sweep``), never on
  evaluation slices: noise-free data peaked at w = 0.1 for 23 parallel and fan views and a 120°
  limited angle (0.03 for 60 views, within 0.7 dB at 0.1); with Poisson noise at 10⁵ photons per
  bin the optimum grew to w ≈ 1 at 23 views and w ≈ 3 at 180 views (metal), hence
  w = 0.1 + (10⁵ / flux) · √(N_acquired / 23) when the measurement records a flux.
* ``li-mar`` — linear-interpolation metal artefact reduction (Kalender, Hebel & Ebersberger,
  Radiology 164, 1987): in every acquired view the metal trace is replaced by linear
  interpolation along the detector between its measured neighbours, then FBP.

Iterative methods run on the acquired views only: A restricted to them is the same operator
without its all-zero rows (P(Λ) literally), which makes sparse-view iterations several times faster.

Metal.  When the measurement carries ``extras/metal_mask`` and ``attrs/metal_hu``, every method
puts the metal back at the end: the metal pixels are set to the metal's unit-window value
(Λ excludes the metal trace, so without this the metal would be missing from the image).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import torch

from ..data.intensity import ct_line_integral_scale, hu_to_unit
from ..errors import UserError
from ..operators.ct import CTGeometry, CTOperator, ct_operator_from_measurement, sinogram_to_unit
from .optim import pdhg, pdhg_preconditioners
from .registry import MethodOutput, iteration_count, register

SART_RELAXATION = 1.0
DEFAULT_SART_ITERATIONS = 100
DEFAULT_TV_ITERATIONS = 300
DEFAULT_TV_WEIGHT = 0.1          # noise-free data
TV_NOISE_FLUX = 1e5              # flux at which the noise term of the default weight is 1 at 23 views
TV_NOISE_VIEWS = 23


@dataclass
class CTProblem:
    """A CT measurement prepared for the solvers (unit domain, pixel units)."""

    operator: CTOperator          # full geometry, mask Λ
    sinogram: torch.Tensor        # (1, 1, V, D) unit-window line integrals, 0 where Λ = 0
    acquired: np.ndarray          # (V,) bool: views with at least one measured bin
    metal: np.ndarray | None      # (H, W) bool metal mask, or None
    metal_unit: float | None      # unit-window value of the metal

    @property
    def view_scale(self) -> float:
        """N_full / N_acquired: FBP's Riemann-sum correction for missing views."""
        return len(self.acquired) / int(self.acquired.sum())

    def restricted(self) -> tuple[CTOperator, torch.Tensor]:
        """(A on the acquired views only, the sinogram of those views)."""
        g = self.operator.geometry
        sub = CTGeometry(g.kind, g.image_shape, g.angles[self.acquired], g.n_detectors, g.detector_spacing,
                         g.pixel_size, g.source_origin, g.source_detector, g.detector_shape)
        mask = self.operator.mask[self.acquired]
        return CTOperator(sub, mask), self.sinogram[..., self.acquired, :]

    def fbp(self, sinogram: torch.Tensor, filter: str = "ramp") -> torch.Tensor:
        """FBP of a full-grid sinogram with zeros in the missing views, scaled for them."""
        return self.operator.fbp(sinogram, filter) * self.view_scale

    def filled_sinogram(self) -> torch.Tensor:
        """The sinogram with the metal trace of the acquired views linearly interpolated."""
        mask = np.broadcast_to(self.operator.mask.numpy(), self.operator.geometry.sinogram_shape)
        filled = interpolate_metal_trace(self.sinogram[0, 0].numpy(), mask, self.acquired)
        return torch.from_numpy(filled)[None, None]

    def initial(self) -> torch.Tensor:
        """Start of the iterative methods: FBP of :meth:`filled_sinogram`, clipped at 0."""
        return self.fbp(self.filled_sinogram()).clamp_min(0)

    def finish(self, x: torch.Tensor) -> np.ndarray:
        """The (H, W) float32 unit image, with the metal put back when there is metal."""
        image = x.detach().reshape(self.operator.geometry.image_shape).cpu().numpy().astype(np.float32)
        if self.metal is not None and self.metal_unit is not None:
            image[self.metal] = self.metal_unit
        return image


def ct_problem(meas) -> CTProblem:
    """Build the :class:`CTProblem` of a CT measurement."""
    op = ct_operator_from_measurement(meas)
    acquired = np.broadcast_to(np.asarray(meas.mask) != 0, op.geometry.sinogram_shape).any(axis=1)
    metal = meas.extras.get("metal_mask")
    metal = None if metal is None else np.asarray(metal) != 0
    if metal is not None and metal.shape != op.geometry.image_shape:
        raise UserError(f"the metal mask {metal.shape} does not match the image {op.geometry.image_shape}: "
                        "re-create the measurement")
    metal_hu = meas.attrs.get("metal_hu")
    return CTProblem(op, sinogram_to_unit(meas), acquired, metal,
                     None if metal_hu is None else float(hu_to_unit(float(metal_hu))))


def _positive(value, name: str):
    if not 0 < value < float("inf"):
        raise UserError(f"--{name} must be a positive finite number, got {value}")
    return value


def _uncorrected_sinogram(meas, problem: CTProblem) -> torch.Tensor:
    """Measurement plus what was measured inside the metal trace (the scan as acquired)."""
    trace = meas.extras.get("metal_trace_data")
    if trace is None:
        return problem.sinogram
    trace = np.asarray(trace, np.float32)
    if trace.shape != tuple(problem.sinogram.shape[-2:]):
        raise UserError(f"the metal trace data {trace.shape} do not match the sinogram "
                        f"{tuple(problem.sinogram.shape[-2:])}: re-create the measurement")
    scale = ct_line_integral_scale(problem.operator.geometry.pixel_size)
    return problem.sinogram + torch.from_numpy(trace / scale)[None, None]


# --------------------------------------------------------------------------- methods
@register("ct", "fbp")
def fbp_method(meas, filter: str = "ramp") -> MethodOutput:
    """Filtered back-projection; on metal data of the uncorrected scan (see the module docstring)."""
    problem = ct_problem(meas)
    x = problem.fbp(_uncorrected_sinogram(meas, problem), filter)
    return MethodOutput(problem.finish(x), info={"filter": filter, "view_scale": problem.view_scale})


def sart(problem: CTProblem, iterations: int = DEFAULT_SART_ITERATIONS,
         relaxation: float = SART_RELAXATION) -> torch.Tensor:
    """Simultaneous SART, x ← P₊[x + λ C A^T R (y − A x)], from :meth:`CTProblem.initial`."""
    op, y = problem.restricted()
    x = problem.initial()
    rows = op(torch.ones_like(x))
    r = torch.where(rows > 0, 1.0 / rows.clamp_min(1e-6), torch.zeros_like(rows))
    cols = op.adjoint(torch.ones_like(y))
    c = torch.where(cols > 0, 1.0 / cols.clamp_min(1e-6), torch.zeros_like(cols))
    for _ in range(iterations):
        x = (x + relaxation * c * op.adjoint(r * (y - op(x)))).clamp_min(0)
    return x


@register("ct", "sart")
def sart_method(meas, iterations: int | None = None) -> MethodOutput:
    """SART (simultaneous form), :data:`DEFAULT_SART_ITERATIONS` iterations by default."""
    iterations = iteration_count(iterations, DEFAULT_SART_ITERATIONS)
    problem = ct_problem(meas)
    x = sart(problem, iterations)
    return MethodOutput(problem.finish(x), info={"iterations": iterations, "relaxation": SART_RELAXATION})


def tv(problem: CTProblem, weight: float = DEFAULT_TV_WEIGHT, iterations: int = DEFAULT_TV_ITERATIONS) -> torch.Tensor:
    """min ½‖A x − y‖² + weight TV(x), x ≥ 0, by preconditioned PDHG from :meth:`CTProblem.initial`."""
    op, y = problem.restricted()
    x0 = problem.initial()
    steps = pdhg_preconditioners(op, op.adjoint, x0, y)
    return pdhg(op, op.adjoint, y, x0, weight, iterations=iterations, steps=steps, lower=0.0)


def default_tv_weight(flux: float | None, n_acquired: int) -> float:
    """w = 0.1 without noise, 0.1 + (10⁵ / flux) √(N_acquired / 23) with Poisson noise (see above)."""
    if flux is None:
        return DEFAULT_TV_WEIGHT
    if not (isinstance(flux, numbers.Real) and 0 < flux < float("inf")):
        raise UserError(f"the measurement's flux attribute is {flux!r}, not a positive number of photons: "
                        "fix the file, or pass --weight")
    return DEFAULT_TV_WEIGHT + (TV_NOISE_FLUX / float(flux)) * float(np.sqrt(n_acquired / TV_NOISE_VIEWS))


@register("ct", "tv")
def tv_method(meas, iterations: int | None = None, weight: float | None = None) -> MethodOutput:
    """TV-regularised least squares; weight :func:`default_tv_weight` by default."""
    iterations = iteration_count(iterations, DEFAULT_TV_ITERATIONS)
    problem = ct_problem(meas)
    if weight is None:
        weight = default_tv_weight(meas.attrs.get("flux"), int(problem.acquired.sum()))
    weight = float(_positive(weight, "weight"))
    x = tv(problem, weight, iterations)
    return MethodOutput(problem.finish(x), info={"iterations": iterations, "weight": weight})


def interpolate_metal_trace(sinogram: np.ndarray, mask: np.ndarray, acquired: np.ndarray) -> np.ndarray:
    """Replace the unmeasured bins of every acquired view by linear interpolation along the
    detector between the measured bins (constant beyond the outermost ones)."""
    out = np.array(sinogram, dtype=np.float32, copy=True)
    bins = np.arange(out.shape[1])
    for view in np.flatnonzero(acquired):
        kept = mask[view] > 0
        if not kept.all():
            out[view, ~kept] = np.interp(bins[~kept], bins[kept], out[view, kept])
    return out


@register("ct", "li-mar")
def li_mar_method(meas, filter: str = "ramp") -> MethodOutput:
    """Linear-interpolation MAR: interpolate across the metal trace, FBP, put the metal back."""
    problem = ct_problem(meas)
    if problem.metal is None:
        raise UserError("li-mar needs a metal measurement (extras/metal_mask): simulate with --metal, "
                        "or use fbp, sart or tv")
    x = problem.fbp(problem.filled_sinogram(), filter)
    return MethodOutput(problem.finish(x), info={"filter": filter, "view_scale": problem.view_scale})
