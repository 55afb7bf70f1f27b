"""Classical MRI reconstructions behind ``reconstruct(meas, method)``.

All methods see the operator of :func:`scorerecon.operators.mri.mri_operator_from_measurement`
(single-coil Cartesian, or SENSE with the file's or ESPIRiT maps) and unit-domain k-space y
(the reference magnitude peaks at 1), and return the magnitude centre-cropped to
``geometry["output_shape"]`` (read-out oversampling removed):

* ``zero-filled`` — |F^{-1} y| single-coil, root-sum-of-squares of the coil images multi-coil.
* ``sense`` — CG-SENSE (Pruessmann et al., MRM 46:638, 2001): conjugate gradients on
  (A^H A + μ I) x = A^H y from x = 0.
* ``cs-wavelet`` — L1-wavelet compressed sensing (Lustig, Donoho & Pauly, MRM 58:1182, 2007):
  min_x ½‖A x − y‖² + λ ‖Ψ x‖₁, Ψ an orthonormal db4 wavelet (4 levels, coarse band unpenalised),
  by FISTA (Beck & Teboulle 2009) with step 1/L, L = ‖A‖² from power iteration.  The image is
  zero-padded to a size divisible by 16 (the padding is part of the variable, so FISTA's prox
  stays exact) and, as in BART's ``pics``, the wavelet grid is shifted by a random offset at every
  iteration (cycle spinning) to avoid block artefacts; ``seed`` fixes the shifts.
* ``cs-tv`` — total-variation CS: min_x ½‖A x − y‖² + λ TV(x), isotropic TV of the complex image,
  by FISTA whose prox is Beck & Teboulle's FGP TV denoiser (their MFISTA scheme, IEEE TIP 2009)
  with a fixed number of inner iterations.  It reached a lower objective than Chambolle–Pock PDHG
  (σ = τ = 1/‖K‖) in the same time on a 217×181 brain slice (31.0 dB after 1.4 s vs 30.6 dB after
  2.9 s, 4× Poisson disc).

Both CS methods keep the image zero where no coil sees (``op.support``: ESPIRiT maps vanish
outside the object): the data do not determine those pixels, and without the constraint the
wavelet shrinkage leaks energy into them (a 64² phantom, 8 coils, 4× Poisson disc, ESPIRiT maps:
26.4 dB unconstrained, 36.1 dB constrained).  The projection follows each prox step.

Default weights λ and μ (unit domain: reference peak 1) were chosen on training-distribution
slices, never on the evaluation slices: ``benchmarks/mri_classical.py --tune`` on a Colin27
validation slice of ``scorerecon data prepare brain-mri`` at 256², 1 % complex noise, in three
settings (1 coil 4× equispaced, 8 coils 8× equispaced, 8 coils 8× Poisson disc, ESPIRiT maps),
maximising the mean PSNR over the grid {1, 3} × 10^{-4..-2}: wavelet λ = 0.003 (mean 32.0 dB vs
31.7 at 0.001), TV λ = 0.003 (32.5 vs 32.2 at 0.001), SENSE μ = 0.03 (over {0, 0.001, 0.01,
0.03, 0.1}).  The full sweep (four slices, six settings) writes ``benchmarks/results/
mri_weights.md``.  ``--weight`` and ``--iterations`` override the defaults.
"""

from __future__ import annotations

import numpy as np
import torch

from ..checks import finite_number
from ..operators.coils import rss
from ..operators.mri import center_crop, ifft2c, measurement_tensors, mri_operator_from_measurement
from .optim import conjugate_gradient, fista, power_iteration, tv_prox
from .registry import MethodOutput, iteration_count, register
from .wavelet import OrthonormalWavelet2D, padded_shape, soft_threshold

Tensor = torch.Tensor

# Defaults chosen on Colin27 validation slices (benchmarks/mri_classical.py --tune; module docstring).
SENSE_DAMPING = 0.03
SENSE_ITERATIONS = 20
WAVELET_WEIGHT = 0.003
WAVELET_ITERATIONS = 100
WAVELET_NAME, WAVELET_LEVELS = "db4", 4
TV_WEIGHT = 0.003
TV_ITERATIONS = 50
TV_PROX_ITERATIONS = 10


def _output(image: Tensor, meas, **info) -> MethodOutput:
    """Magnitude of a (1, 1, H, W) image, cropped to the reconstruction size, as a MethodOutput."""
    magnitude = center_crop(image.abs()[0, 0], meas.geometry.get("output_shape", image.shape[-2:]))
    return MethodOutput(unit_image=magnitude.detach().cpu().numpy().astype(np.float32), info=info,
                        complex_image=image[0, 0].detach().cpu().numpy())


def _positive(value, name: str):
    """``value`` unless it is negative or not finite (UserError); None passes (use the default)."""
    return None if value is None else finite_number(name, value, minimum=0)


@register("mri", "zero-filled")
def zero_filled(meas) -> MethodOutput:
    """|F^{-1} y| (single coil) or √(Σ_c |F^{-1} y_c|²) (multi-coil): no maps needed."""
    kspace, _, _ = measurement_tensors(meas)
    return _output(rss(ifft2c(kspace)), meas)


@register("mri", "sense")
def cg_sense(meas, iterations: int | None = None, weight: float | None = None) -> MethodOutput:
    """CG-SENSE: x = (A^H A + μ I)^{-1} A^H y by ``iterations`` conjugate-gradient steps."""
    op, y = mri_operator_from_measurement(meas)
    iterations = iteration_count(iterations, SENSE_ITERATIONS)
    damping = _positive(weight, "the SENSE damping --weight")
    damping = SENSE_DAMPING if damping is None else damping
    x = conjugate_gradient(op.normal, op.adjoint(y), iterations=iterations, tol=1e-6, damping=damping)
    return _output(x, meas, iterations=iterations, weight=damping)


def _lipschitz(op, shape, seed: int) -> float:
    """‖A‖² by power iteration (exactly 1 for a single coil or maps with Σ|S|² ≤ 1)."""
    generator = torch.Generator().manual_seed(seed)
    return max(power_iteration(op.normal, shape, iterations=20, generator=generator, dtype=torch.complex64),
               1e-6)


def _cs_problem(meas, iterations: int | None, default_iterations: int, weight: float | None,
                default_weight: float, what: str, seed: int):
    """(operator, data, iterations, λ, FISTA step 1/‖A‖²) shared by the compressed-sensing methods."""
    op, y = mri_operator_from_measurement(meas)
    lam = _positive(weight, what)
    step = 1.0 / _lipschitz(op, (1, 1, *y.shape[-2:]), seed)
    return op, y, iteration_count(iterations, default_iterations), default_weight if lam is None else lam, step


@register("mri", "cs-wavelet")
def cs_wavelet(meas, iterations: int | None = None, weight: float | None = None, seed: int = 0) -> MethodOutput:
    """L1-wavelet CS by FISTA with cycle spinning (module docstring)."""
    op, y, iterations, lam, step = _cs_problem(meas, iterations, WAVELET_ITERATIONS, weight, WAVELET_WEIGHT,
                                               "the wavelet --weight", seed)
    grid = tuple(y.shape[-2:])
    padded = padded_shape(grid, WAVELET_LEVELS)
    psi = OrthonormalWavelet2D(WAVELET_NAME, WAVELET_LEVELS)
    penalised = psi.detail_mask(padded)
    generator = torch.Generator().manual_seed(seed)
    support = _pad(op.support, padded)

    def grad(z: Tensor) -> Tensor:
        return _pad(op.adjoint(op.forward(center_crop(z, grid)) - y), padded)

    def prox(z: Tensor, t: float) -> Tensor:
        shift = tuple(int(s) for s in torch.randint(0, 2 ** WAVELET_LEVELS, (2,), generator=generator))
        shifted = torch.roll(z, shifts=shift, dims=(-2, -1))
        coefficients = psi.forward(shifted)
        shrunk = soft_threshold(coefficients, t * lam * penalised)
        return support * torch.roll(psi.inverse(shrunk), shifts=tuple(-s for s in shift), dims=(-2, -1))

    z = fista(grad, prox, _pad(op.adjoint(y), padded), step=step, iterations=iterations)
    return _output(center_crop(z, grid), meas, iterations=iterations, weight=lam)


def _pad(x: Tensor, shape) -> Tensor:
    """Zero-pad the last two axes to ``shape``, image centred (P; its adjoint is center_crop)."""
    dh, dw = shape[0] - x.shape[-2], shape[1] - x.shape[-1]
    return torch.nn.functional.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))


@register("mri", "cs-tv")
def cs_tv(meas, iterations: int | None = None, weight: float | None = None, seed: int = 0) -> MethodOutput:
    """TV-regularised least squares by FISTA with the FGP total-variation prox (module docstring)."""
    op, y, iterations, lam, step = _cs_problem(meas, iterations, TV_ITERATIONS, weight, TV_WEIGHT,
                                               "the TV --weight", seed)

    def grad(x: Tensor) -> Tensor:
        return op.adjoint(op.forward(x) - y)

    def prox(x: Tensor, t: float) -> Tensor:
        return op.support * tv_prox(x, t * lam, iterations=TV_PROX_ITERATIONS)

    x = fista(grad, prox, op.adjoint(y), step=step, iterations=iterations)
    return _output(x, meas, iterations=iterations, weight=lam)
