"""The operator interface shared by CT and MRI: A = P(Λ) T.

``T`` is the full, invertible (or left-invertible) measurement: the Radon transform over all
views, or the 2-D Fourier transform (times coil sensitivities).  ``Λ`` is a 0/1 mask on the full
measurement grid.  We represent ``P(Λ)`` implicitly: a measurement ``y`` lives on the *full*
grid with zeros where ``Λ`` is 0, i.e. we always store ``P^{-1}(Λ) y`` (the right inverse of the
paper).  With that convention

    A x      = Λ ⊙ T x
    A^H y    = T^H (Λ ⊙ y)
    T_inv    = T^{-1}            (FBP for CT, inverse FFT / SENSE combine for MRI)

and Song et al.'s proximal data-consistency step (their eq. 8) reads

    x' = T_inv[ λ Λ ŷ + (1-λ) Λ T x + (I-Λ) T x ] = T_inv[ T x + λ Λ (ŷ - T x) ]

(``scorerecon.solvers.conditioning.InverseProblem.prox``, which also covers a T_inv that does
not project: ``inverse_projects``).

Tensors are (batch, channel, H, W) for images; measurements are (batch, channel, *grid).
Subclasses implement :meth:`transform`, :meth:`transform_adjoint` and :meth:`transform_inverse`.
"""

from __future__ import annotations

import torch


class MaskedOperator(torch.nn.Module):
    """Abstract A = P(Λ) T.  ``mask`` broadcasts against the full measurement.

    ``inverse_projects``: whether the step x + T⁻¹[Λ (y − T x)] moves x onto {A x = y} without
    overshooting: the orthogonal projection for a unitary T (single-coil Fourier), a unit gradient
    step for SENSE with normalised maps.  Operators whose T⁻¹ is only approximate (CT's FBP) set
    it to False, and data consistency (the hard projection, Song's step) then runs conjugate
    gradients instead.

    ``gram_is_scaled_mask``: whether A A^H = L Λ for a scalar L on complex images (a unitary T:
    single-coil and coil-by-coil Fourier), so that white complex image noise reaches the measured
    samples with one variance.  SENSE and CT set it to False; and on real images, where the Gram
    operator is Re(A^H A), no operator has it.  Without it the likelihood gradient of annealed
    Langevin solves with the whole covariance by CG
    (:func:`~scorerecon.solvers.samplers.likelihood_score`).
    """

    inverse_projects = True
    gram_is_scaled_mask = False

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask.to(torch.float32))

    # -- the full transform T: implemented by subclasses --------------------------------
    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """T x over the full measurement grid."""
        raise NotImplementedError

    def transform_adjoint(self, m: torch.Tensor) -> torch.Tensor:
        """T^H m (exact adjoint of :meth:`transform`)."""
        raise NotImplementedError

    def transform_inverse(self, m: torch.Tensor) -> torch.Tensor:
        """T^{-1} m (FBP for CT, inverse FFT for MRI); a left inverse of T."""
        raise NotImplementedError

    # -- derived: A, A^H, data consistency -----------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """A x = Λ ⊙ T x, on the full grid."""
        return self.mask * self.transform(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """A^H y = T^H (Λ ⊙ y)."""
        return self.transform_adjoint(self.mask * y)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """A^H A x."""
        return self.adjoint(self.forward(x))

    @property
    def measured_fraction(self) -> float:
        """Fraction of the full measurement grid that Λ keeps."""
        return float(self.mask.float().mean())
