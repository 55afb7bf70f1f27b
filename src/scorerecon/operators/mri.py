"""Cartesian MRI operators: A = P(Λ) T with T the centred orthonormal 2-D Fourier transform.

Conventions (DESIGN.md).  Images are complex (batch, 1, H, W); k-space is complex
(batch, coils, H, W) on the full grid with zeros where Λ = 0.  H is the read-out (frequency
encoding) axis and W the phase-encoding axis, as in fastMRI, so 1-D masks select columns.
The FFT is centred and orthonormal,

    F x = fftshift( fft2( ifftshift(x), norm="ortho" ) ),        F^H = F^{-1},

so ‖F x‖ = ‖x‖ and k-space noise of standard deviation σ is image noise of the same σ.

Single coil (:class:`SingleCoilMRI`):  T = F,  T^H = T^{-1} = F^{-1}.

Multi-coil SENSE (:class:`SenseMRI`, Pruessmann et al. 1999):  T x = [F (S_c x)]_c for
sensitivity maps S_c, with coils in the channel dimension (one batched FFT, no loop).  Its adjoint
combines coils, T^H m = Σ_c S_c^* F^{-1} m_c, and its left inverse is the least-squares coil
combination T^{-1} m = Σ_c S_c^* F^{-1} m_c / Σ_c |S_c|²  (zero where no coil sees the pixel).

Helpers move complex images to real/imaginary channels or batch items (the network boundary),
scale by magnitude without touching the phase, and crop to a reconstruction size.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError
from .base import MaskedOperator
from .coils import measurement_maps, sense_combine

Tensor = torch.Tensor
_FFT_DIMS = (-2, -1)


# ----------------------------------------------------------------------------- the FFT
def fft2c(x: Tensor) -> Tensor:
    """Centred orthonormal 2-D FFT over the last two axes: fftshift ∘ fft2(ortho) ∘ ifftshift."""
    x = torch.fft.ifftshift(x, dim=_FFT_DIMS)
    return torch.fft.fftshift(torch.fft.fft2(x, dim=_FFT_DIMS, norm="ortho"), dim=_FFT_DIMS)


def ifft2c(k: Tensor) -> Tensor:
    """Inverse (= adjoint) of :func:`fft2c`."""
    k = torch.fft.ifftshift(k, dim=_FFT_DIMS)
    return torch.fft.fftshift(torch.fft.ifft2(k, dim=_FFT_DIMS, norm="ortho"), dim=_FFT_DIMS)


def as_complex(x: Tensor) -> Tensor:
    """Real tensors become complex (complex64 for float32); complex tensors pass through."""
    if x.is_complex():
        return x
    return torch.complex(x, torch.zeros_like(x)) if x.dtype in (torch.float32, torch.float64) \
        else x.to(torch.complex64)


# ------------------------------------------------------------------------- operators
class SingleCoilMRI(MaskedOperator):
    """A x = Λ ⊙ F x for images (B, 1, H, W); ``mask`` (H, W) or broadcastable to (B, 1, H, W)."""

    gram_is_scaled_mask = True

    def __init__(self, mask: Tensor):
        super().__init__(torch.as_tensor(mask))

    @property
    def support(self) -> Tensor:
        """Pixels the data determine: all of them, (1, 1, H, W) bool."""
        return torch.ones((1, 1, *self.mask.shape[-2:]), dtype=torch.bool, device=self.mask.device)

    def transform(self, x: Tensor) -> Tensor:
        """T x = F x."""
        return fft2c(as_complex(x))

    def transform_adjoint(self, m: Tensor) -> Tensor:
        """T^H m = F^{-1} m (F is unitary)."""
        return ifft2c(as_complex(m))

    def transform_inverse(self, m: Tensor) -> Tensor:
        """T^{-1} m = F^{-1} m."""
        return ifft2c(as_complex(m))


class CoilPhaseMRI(SingleCoilMRI):
    """Coil-by-coil Fourier sampling of real coil images with a known phase each:
    A r_c = Λ ⊙ F(e^{iφ_c} r_c) (phase-constrained reconstruction, Noll, Nishimura & Macovski 1991,
    per coil).

    Images are (K·C, 1, H, W), sample-major, as the coil-by-coil samplers batch C coils for each
    of K samples; ``rotation`` is e^{iφ_c}, (C, H, W) of unit modulus, so T is unitary and
    T^{-1} = T^H = e^{-iφ_c} F^{-1}.
    """

    def __init__(self, mask: Tensor, rotation: Tensor):
        super().__init__(mask)
        rotation = as_complex(torch.as_tensor(rotation))
        if rotation.dim() != 3:
            raise UserError(f"coil phase maps must be (coils, H, W), got shape {tuple(rotation.shape)}")
        _check_grid(rotation.shape[-2:], self.mask.shape[-2:], "coil phase")
        self.register_buffer("rotation", rotation[:, None])

    def _rotated(self, x: Tensor, rotation: Tensor) -> Tensor:
        """Multiply coil image c of every sample by ``rotation[c]``."""
        return (x.reshape(-1, *rotation.shape) * rotation).reshape(x.shape)

    def transform(self, x: Tensor) -> Tensor:
        """T r = [F (e^{iφ_c} r_c)]_c."""
        return fft2c(self._rotated(as_complex(x), self.rotation))

    def transform_adjoint(self, m: Tensor) -> Tensor:
        """T^H m = [e^{-iφ_c} F^{-1} m_c]_c."""
        return self._rotated(ifft2c(as_complex(m)), self.rotation.conj())

    def transform_inverse(self, m: Tensor) -> Tensor:
        """T^{-1} = T^H (unitary)."""
        return self.transform_adjoint(m)


class SenseMRI(MaskedOperator):
    """Multi-coil SENSE: A x = Λ ⊙ F(S_c x); images (B, 1, H, W) → k-space (B, C, H, W).

    ``maps``: complex sensitivities (C, H, W), or (B, C, H, W) for one set per batch item.
    ``mask``: (H, W), or broadcastable to (B, C, H, W).
    """

    def __init__(self, maps: Tensor, mask: Tensor):
        super().__init__(torch.as_tensor(mask))
        maps = as_complex(torch.as_tensor(maps))
        if maps.dim() == 3:
            maps = maps.unsqueeze(0)
        if maps.dim() != 4:
            raise UserError(f"sensitivity maps must be (coils, H, W), got shape {tuple(maps.shape)}: "
                            "pass one complex map per coil")
        _check_grid(maps.shape[-2:], self.mask.shape[-2:], "sensitivity maps")
        self.register_buffer("maps", maps)

    @property
    def support(self) -> Tensor:
        """Pixels some coil sees, Σ_c |S_c|² > 0 (ESPIRiT zeroes its maps outside the object)."""
        return (self.maps.abs() ** 2).sum(dim=1, keepdim=True) > 0

    @property
    def coils(self) -> int:
        """Number of receive coils C."""
        return int(self.maps.shape[1])

    def transform(self, x: Tensor) -> Tensor:
        """T x = [F (S_c x)]_c, coils in the channel dimension."""
        return fft2c(self.maps * as_complex(x))

    def transform_adjoint(self, m: Tensor) -> Tensor:
        """T^H m = Σ_c S_c^* F^{-1} m_c."""
        return (self.maps.conj() * ifft2c(as_complex(m))).sum(dim=1, keepdim=True)

    def transform_inverse(self, m: Tensor) -> Tensor:
        """Least-squares coil combination Σ_c S_c^* F^{-1} m_c / Σ_c |S_c|² (0 outside the maps)."""
        return sense_combine(ifft2c(as_complex(m)), self.maps)


def phase_rotated(op: SingleCoilMRI | SenseMRI, rotation: Tensor) -> SenseMRI:
    """The operator of images rotated by a phase map first: A' x = A (e^{iφ} x), ``rotation`` = e^{iφ} (H, W).

    The rotation is folded into the sensitivities (one map e^{iφ} for a single coil), so A' is a
    :class:`SenseMRI`; |x| is unchanged, so a magnitude reconstruction does not see it.
    """
    if isinstance(op, SenseMRI):
        return SenseMRI(op.maps * rotation, op.mask)  # every batch item's maps (B, C, H, W)
    if type(op) is not SingleCoilMRI:  # e.g. CoilPhaseMRI, whose per-coil phases one map would lose
        raise TypeError(f"phase_rotated takes SingleCoilMRI or SenseMRI, not {type(op).__name__}")
    return SenseMRI(rotation[None], op.mask)


def _check_grid(shape_a, shape_b, what: str) -> None:
    """Refuse grids that do not broadcast against each other (one line, UserError)."""
    try:
        torch.broadcast_shapes(tuple(shape_a), tuple(shape_b))
    except RuntimeError:
        raise UserError(f"{what} grid {tuple(shape_a)} does not match the k-space/mask grid "
                        f"{tuple(shape_b)}: use maps of the k-space size") from None


# --------------------------------------------------------------- the network boundary
def complex_to_channels(x: Tensor) -> Tensor:
    """Complex (B, C, H, W) → real (B, 2C, H, W), channels [Re x_0, Im x_0, Re x_1, Im x_1, ...]."""
    return torch.view_as_real(x).movedim(-1, 2).flatten(1, 2)


def channels_to_complex(x: Tensor) -> Tensor:
    """Inverse of :func:`complex_to_channels`: real (B, 2C, H, W) → complex (B, C, H, W)."""
    if x.shape[1] % 2:
        raise ValueError(f"need an even number of channels (real, imaginary pairs), got {x.shape[1]}")
    parts = x.unflatten(1, (x.shape[1] // 2, 2)).movedim(2, -1).contiguous()
    return torch.view_as_complex(parts)


def complex_to_batch(x: Tensor) -> Tensor:
    """Complex (B, C, H, W) → real (2B, C, H, W): real parts first, then imaginary parts.

    Chung & Ye (2022) run a magnitude-trained prior on the real and imaginary parts separately;
    stacking them in the batch does both in one network call.
    """
    return torch.cat((x.real, x.imag), dim=0)


def batch_to_complex(x: Tensor) -> Tensor:
    """Inverse of :func:`complex_to_batch`."""
    if x.shape[0] % 2:
        raise ValueError(f"need an even batch (real parts, then imaginary parts), got {x.shape[0]}")
    real, imag = x.chunk(2, dim=0)
    return torch.complex(real, imag)


def magnitude_normalize(x: Tensor) -> tuple[Tensor, Tensor]:
    """Divide each batch item by the maximum of its magnitude; the phase is untouched.

    Returns ``(x / s, s)`` with s > 0 real of shape (B, 1, 1, 1), so that ``x = s · (x / s)``.
    """
    scale = x.abs().flatten(1).amax(dim=1).clamp_min(torch.finfo(x.real.dtype).tiny)
    scale = scale.reshape(-1, *(1,) * (x.dim() - 1))
    return x / scale, scale


def center_crop(x: Tensor | np.ndarray, shape) -> Tensor | np.ndarray:
    """The centred (h, w) window of the last two axes (fastMRI's crop of read-out oversampling)."""
    h, w = (int(s) for s in shape)
    height, width = x.shape[-2:]
    if h > height or w > width:
        raise UserError(f"cannot crop a {height}x{width} image to {h}x{w}: the output size must not "
                        "exceed the k-space matrix")
    top, left = (height - h) // 2, (width - w) // 2
    return x[..., top:top + h, left:left + w]


# ------------------------------------------------------------------ from a measurement
def measurement_tensors(meas, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, float]:
    """(k-space (1, C, H, W) in the unit domain, mask (H, W), intensity scale) of a ``Measurement``.

    The unit domain divides k-space by ``attrs["intensity_scale"]`` (a positive real, so the phase
    is untouched), which maps the reference magnitude to a peak of 1.
    """
    scale = float(meas.attrs.get("intensity_scale", 1.0))
    kspace = torch.from_numpy(np.ascontiguousarray(meas.data)).to(torch.complex64) / scale
    mask = torch.from_numpy(np.ascontiguousarray(meas.mask)).to(torch.float32)
    return kspace.unsqueeze(0).to(device), mask.to(device), scale


def mri_operator_from_measurement(meas, device: torch.device | str = "cpu") -> tuple[MaskedOperator, Tensor]:
    """The operator and unit-domain k-space (1, C, H, W) of an MRI ``Measurement``.

    Multi-coil data use ``extras["sensitivity_maps"]``; when the file carries none they are
    estimated once by ESPIRiT from the auto-calibration region and kept in ``meas.extras``.
    """
    kspace, mask, _ = measurement_tensors(meas, device)
    if kspace.shape[1] == 1:
        return SingleCoilMRI(mask).to(device), kspace
    maps = torch.from_numpy(measurement_maps(meas)).to(device)
    return SenseMRI(maps, mask).to(device), kspace
