"""Data-consistency steps for posterior sampling with A = P(Λ) T (REFERENCE.md, sections 1-3).

Everything here sees an :class:`InverseProblem` (an operator, the measurement, the image layout)
and tensors, never a modality.

The sampler's *state* is always real, (parts · samples · groups, 1, H, W), the layout a score
network trained on real images expects.  The *image* seen by the operator is
(samples · groups, 1, H, W), complex when ``complex_image`` is set: the real and imaginary parts
are stacked in the batch (Chung & Ye 2022, complex single-coil data), and ``groups`` images per
sample are sampled independently (the coil images of the SSOS / hybrid multi-coil flavours).

Steps implemented (x is the image, ŷ_t a noisy measurement, y the measured data):

* :func:`noisy_measurement` — Song et al. 2022, ŷ_t = α(t) y + β(t) A z, z ~ N(0, I) (Gaussian).
* :meth:`InverseProblem.prox` — Song et al. 2022 eq. 8, x' = T⁻¹[T x + λ Λ (ŷ_t − T x)], in the
  residual form x + λ T⁻¹[Λ (ŷ_t − T x)]: the fraction λ of the way to the projection of x onto
  {A x = ŷ_t}, which conjugate gradients compute where T⁻¹ does not project (CT).
* :meth:`InverseProblem.project` — the hard projection of Chung & Ye 2022, x ← T⁻¹[(I − Λ) T x + y]
  (``prox`` with λ = 1 and ŷ = y).
* :func:`likelihood_gradient` — ∇ log p(y | x) ≈ A^H (y − A x) / v (Jalal et al. 2021; v grows
  with the diffusion noise).
* :func:`sense_step` — Chung & Ye 2022 hybrid flavour: combine the coil images with the
  sensitivities, x ← x + λ A^H (y − A x) on the multi-coil operator, split them again.
* :func:`cg_consistency` — DDS (Chung, Lee & Ye 2024, Algorithm 1): a few conjugate-gradient steps on
  min_x ½‖y − A x‖² + ½ γ ‖x − x̂₀‖² started at the Tweedie estimate x̂₀.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..operators.base import MaskedOperator
from .optim import conjugate_gradient, power_iteration

Tensor = torch.Tensor
PROJECTION_ITERATIONS = 5  # CG steps of a projection where T⁻¹ does not project (CT)


def randn(shape, generator: torch.Generator | None, device) -> Tensor:
    """Standard normal noise drawn on the CPU generator (same seed, same image on any device)."""
    return torch.randn(shape, generator=generator).to(device)


def center_crop(x: Tensor, shape: tuple[int, int]) -> Tensor:
    """The centred (h, w) window of the last two axes."""
    top, left = (x.shape[-2] - shape[0]) // 2, (x.shape[-1] - shape[1]) // 2
    return x[..., top:top + shape[0], left:left + shape[1]]


def center_pad(x: Tensor, shape: tuple[int, int]) -> Tensor:
    """Zero-pad the last two axes to ``shape``, centred: the adjoint of :func:`center_crop`."""
    top, left = (shape[0] - x.shape[-2]) // 2, (shape[1] - x.shape[-1]) // 2
    pads = (left, shape[1] - x.shape[-1] - left, top, shape[0] - x.shape[-2] - top)
    return torch.nn.functional.pad(x, pads) if any(pads) else x


@dataclass
class SenseData:
    """The multi-coil problem behind a coil-by-coil one (hybrid flavour of Chung & Ye 2022).

    ``operator`` maps a combined image (B, 1, H, W) to multi-coil data (B, C, *grid); ``y`` is
    that data (1, C, *grid); ``maps`` are the sensitivities (C, H, W), used to combine coil images
    (x = Σ_c S_c^* x_c / Σ_c |S_c|²) and to split a combined image (x_c = S_c x).
    """

    operator: MaskedOperator
    y: Tensor
    maps: Tensor

    def combine(self, coil_images: Tensor) -> Tensor:
        """(K·C, 1, H, W) coil images → (K, 1, H, W) least-squares combination."""
        coils = self.maps.shape[0]
        x = coil_images.reshape(-1, coils, *coil_images.shape[-2:])
        weight = (self.maps.abs() ** 2).sum(0).clamp_min(1e-12)
        return (self.maps.conj() * x).sum(1, keepdim=True) / weight

    def split(self, image: Tensor) -> Tensor:
        """(K, 1, H, W) combined image → (K·C, 1, H, W) coil images S_c x."""
        return (self.maps * image).reshape(-1, 1, *image.shape[-2:])


@dataclass
class InverseProblem:
    """y = A x + n with A = Λ T, in the unit domain, as the samplers see it.

    ``y`` holds one measurement per group, (groups, …) on the full grid with zeros where Λ = 0.
    ``image_shape`` is the size the prior samples; ``grid_shape`` (default: the same) the size
    the operator sees, the centred window of it: the prior may need a padded size (U-Net
    levels), and the padding only ever meets the prior.
    """

    operator: MaskedOperator
    y: Tensor
    image_shape: tuple[int, int]
    complex_image: bool = False
    sense: SenseData | None = None
    grid_shape: tuple[int, int] | None = None

    def __post_init__(self):
        self.image_shape = tuple(int(s) for s in self.image_shape)
        self.grid_shape = self.image_shape if self.grid_shape is None else tuple(int(s) for s in self.grid_shape)

    @property
    def groups(self) -> int:
        return int(self.y.shape[0])

    @property
    def parts(self) -> int:
        return 2 if self.complex_image else 1

    @property
    def device(self) -> torch.device:
        return self.y.device

    def state_shape(self, samples: int) -> tuple[int, ...]:
        return (self.parts * samples * self.groups, 1, *self.image_shape)

    # -- state (real, parts in the batch) <-> image (complex when complex_image) ---------
    def to_image(self, state: Tensor) -> Tensor:
        if not self.complex_image:
            return state
        real, imag = state.chunk(2, dim=0)
        return torch.complex(real, imag)

    def to_state(self, image: Tensor) -> Tensor:
        if not self.complex_image:
            return image.real if image.is_complex() else image
        return torch.cat((image.real, image.imag), dim=0)

    def measured(self, samples: int) -> Tensor:
        """y repeated for every sample: (samples · groups, …)."""
        return self.y.repeat(samples, *([1] * (self.y.dim() - 1)))

    # -- the operator on (padded) images; real images cast for a complex operator ---------
    def crop(self, image: Tensor) -> Tensor:
        return center_crop(image, self.grid_shape)

    def pad(self, image: Tensor) -> Tensor:
        return center_pad(image, self.image_shape)

    def _cast(self, image: Tensor) -> Tensor:
        image = self.crop(image)
        return image.to(self.y.dtype) if self.y.is_complex() and not image.is_complex() else image

    def _image(self, value: Tensor) -> Tensor:
        return self.pad(value.real if value.is_complex() and not self.complex_image else value)

    def forward(self, image: Tensor) -> Tensor:
        """A x."""
        return self.operator(self._cast(image))

    def adjoint(self, data: Tensor) -> Tensor:
        """A^H m (its real part for real images)."""
        return self._image(self.operator.adjoint(data))

    def normal(self, image: Tensor) -> Tensor:
        """A^H A x."""
        return self.adjoint(self.forward(image))

    def prox(self, image: Tensor, y_hat: Tensor, lam: float) -> Tensor:
        """Song et al. 2022 eq. 8, x' = T⁻¹[T x + λ Λ (ŷ − T x)] = x + λ (P x − x), P the
        projection onto {A x = ŷ} (λ = 1: the projection itself).

        Where the operator's T⁻¹ projects (``inverse_projects``: MRI) this is the residual form
        x + λ T⁻¹[Λ (ŷ − T x)], exact for one coil and a complex image.  For SENSE (T⁻¹ combines
        the coils with the conjugate maps) and for real images in a phase frame (the real part
        is kept) the same form is one Landweber step x + λ A^H (ŷ − A x), ‖A‖ = 1, which moves x
        towards {A x = ŷ} without reaching it; the samplers repeat it after every update.  Otherwise (CT, T⁻¹ = FBP, which overshoots: repeating its step
        diverges) P x is :data:`PROJECTION_ITERATIONS` conjugate-gradient steps on A^H A x = A^H ŷ
        started at x, whose iterates x + K(A^H A, A^H (ŷ − A x)) approach the minimum-norm
        correction, the orthogonal projection.
        """
        if not self.operator.inverse_projects:
            return image + lam * (cg_consistency(self, image, 0.0, PROJECTION_ITERATIONS, y_hat) - image)
        op = self.operator
        residual = op.mask * (y_hat - op.transform(self._cast(image)))
        return image + lam * self._image(op.transform_inverse(residual))

    def project(self, image: Tensor) -> Tensor:
        """Hard data consistency (Chung & Ye 2022): x moved onto {A x = y}, :meth:`prox` with λ = 1."""
        return self.prox(image, self.measured(image.shape[0] // self.groups), 1.0)

    def residual_norm(self, image: Tensor) -> Tensor:
        """‖y − A x‖ per image, shape (samples · groups,)."""
        r = self.measured(image.shape[0] // self.groups) - self.forward(image)
        return torch.linalg.vector_norm(r.reshape(r.shape[0], -1), dim=1)


def inverse_step_gain(operator: MaskedOperator, image_shape: tuple[int, ...],
                      generator: torch.Generator | None = None) -> float:
    """Largest eigenvalue of T⁻¹ Λ T on real images of ``image_shape``, by power iteration: the
    gain of the residual step x + T⁻¹[Λ (y − T x)] along its worst direction.  Above 2 that step
    overshoots and, repeated, diverges: why CT's operators (T⁻¹ = FBP) set
    ``inverse_projects = False`` and :meth:`InverseProblem.prox` projects by CG there."""
    return power_iteration(lambda x: operator.transform_inverse(operator.mask * operator.transform(x)),
                           tuple(image_shape), generator=generator)


def noisy_measurement(problem: InverseProblem, alpha: Tensor, beta: Tensor, samples: int,
                      generator: torch.Generator | None) -> Tensor:
    """ŷ_t = α(t) y + β(t) A z with Gaussian z (Song et al. 2022, the noisy measurement y_t), one per sample."""
    z = problem.to_image(randn(problem.state_shape(samples), generator, problem.device))
    return alpha * problem.measured(samples) + beta * problem.forward(z)


def song_consistency(problem: InverseProblem, state: Tensor, y_hat: Tensor, lam: float) -> Tensor:
    """The proximal step of Song et al. 2022 (eq. 8) applied to the sampler state."""
    return problem.to_state(problem.prox(problem.to_image(state), y_hat, lam))


def hard_consistency(problem: InverseProblem, state: Tensor) -> Tensor:
    """Chung & Ye 2022: the measured data put back (:meth:`InverseProblem.project`) on the sampler state."""
    return problem.to_state(problem.project(problem.to_image(state)))


def likelihood_gradient(problem: InverseProblem, image: Tensor, variance: float | Tensor) -> Tensor:
    """A^H (y − A x) / v: the gradient of log N(y; A x, v I) with respect to x."""
    samples = image.shape[0] // problem.groups
    return problem.adjoint(problem.measured(samples) - problem.forward(image)) / variance


def sense_step(problem: InverseProblem, state: Tensor, lam: float) -> Tensor:
    """Hybrid flavour of Chung & Ye 2022: x ← x + λ A^H (y − A x) on the combined image.

    With normalised sensitivities I − λ A^H A is non-expansive for λ ∈ [0, 1] (their proposition on the hybrid step).
    """
    sense, image = problem.sense, problem.to_image(state)
    inside = problem.crop(image)
    x = sense.combine(inside)
    x = x + lam * sense.operator.adjoint(sense.y - sense.operator(x))
    return problem.to_state(image + problem.pad(sense.split(x) - inside))


def sense_schedule(step: int, steps: int, start: float = 1.0, end: float = 0.2) -> float:
    """λ of the SENSE step, linear from ``start`` to ``end`` over the run's own ``steps``."""
    return start + (end - start) * step / max(steps - 1, 1)


def cg_consistency(problem: InverseProblem, x0: Tensor, gamma: float, iterations: int,
                   y: Tensor | None = None) -> Tensor:
    """DDS data step: argmin_x ½‖y − A x‖² + ½ γ ‖x − x̂₀‖² by ``iterations`` CG steps from x̂₀.

    Solves (A^H A + γ I) x = A^H y + γ x̂₀ with :func:`optim.conjugate_gradient`; few iterations
    keep x in the Krylov space around x̂₀, near the data manifold (Chung, Lee & Ye 2024).
    ``y``: data per image (default: the measured data for every sample).
    """
    y = problem.measured(x0.shape[0] // problem.groups) if y is None else y
    rhs = problem.adjoint(y) + gamma * x0
    return conjugate_gradient(problem.normal, rhs, x0=x0, iterations=iterations, tol=1e-5,
                              damping=gamma)
