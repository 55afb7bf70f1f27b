"""Orthonormal 2-D discrete wavelet transform in torch (periodic boundary), for L1-wavelet CS.

One analysis level along an axis of even length N with an orthonormal filter pair (h, g)
(Daubechies 1992; Mallat, *A Wavelet Tour*, section 7.3) and periodic extension:

    a[k] = Σ_n h[n] x[(2k + L/2 − n) mod N],    d[k] = Σ_n g[n] x[(2k + L/2 − n) mod N]

(L the filter length), which is pywt's ``mode="periodization"`` convention.  The analysis matrix is orthogonal, so the
synthesis is its transpose (computed here exactly, not by inverting).  The 2-D transform applies
it along rows and columns and recurses on the low-pass quadrant; coefficients are packed in an
array of the image's shape (the layout of ``pywt.coeffs_to_array``: the coarse approximation in
the top-left corner).  Real or complex (B, C, H, W) tensors; H and W must be divisible by
2^levels (:func:`padded_shape` gives the smallest such size).
"""

from __future__ import annotations

import pywt
import torch

Tensor = torch.Tensor


def padded_shape(shape, levels: int) -> tuple[int, int]:
    """Smallest (H', W') ≥ shape divisible by 2^levels."""
    step = 2 ** levels
    return tuple(-(-int(s) // step) * step for s in shape)


class OrthonormalWavelet2D:
    """Multi-level periodic 2-D DWT ``Ψ`` with ``forward`` = Ψ and ``inverse`` = Ψ^T = Ψ^{-1}."""

    def __init__(self, name: str = "db4", levels: int = 4):
        wavelet = pywt.Wavelet(name)
        if not wavelet.orthogonal:
            raise ValueError(f"wavelet {name!r} is not orthogonal")
        self.levels = int(levels)
        self.lo = [float(v) for v in wavelet.dec_lo]
        self.hi = [float(v) for v in wavelet.dec_hi]

    # ---------------------------------------------------------------- one axis, one level
    def _bank(self, like: Tensor) -> Tensor:
        """(2, 1, L) conv1d weights: the flipped low- and high-pass filters (cross-correlation)."""
        return torch.tensor([self.lo[::-1], self.hi[::-1]], dtype=like.real.dtype, device=like.device)[:, None]

    def _split(self, x: Tensor, dim: int) -> Tensor:
        """[a, d] along ``dim``: a[k] = Σ_n h[n] x[(2k + L/2 − n) mod N] (and d with g)."""
        n, taps = x.shape[dim], len(self.lo)
        rows, shape = _as_rows(x, dim)
        index = (torch.arange(n + taps - 1, device=x.device) - (taps // 2 - 1)) % n
        out = torch.nn.functional.conv1d(rows[..., index], self._bank(rows), stride=2)
        return _from_rows(out.reshape(out.shape[0], n), shape, dim)

    def _merge(self, c: Tensor, dim: int) -> Tensor:
        """Exact transpose of :meth:`_split`: transposed convolution, then wrap the padding back."""
        n, taps = c.shape[dim], len(self.lo)
        rows, shape = _as_rows(c, dim)
        padded = torch.nn.functional.conv_transpose1d(rows.reshape(-1, 2, n // 2), self._bank(rows),
                                                      stride=2, output_padding=1)[:, 0]
        index = (torch.arange(n + taps - 1, device=c.device) - (taps // 2 - 1)) % n
        out = torch.zeros(padded.shape[0], n, dtype=padded.dtype, device=padded.device)
        out.index_add_(1, index, padded)
        return _from_rows(out, shape, dim)

    # --------------------------------------------------------------------------- 2-D
    def _check(self, x: Tensor) -> None:
        if padded_shape(x.shape[-2:], self.levels) != tuple(x.shape[-2:]):
            raise ValueError(f"image size {tuple(x.shape[-2:])} is not divisible by 2^{self.levels}")

    def forward(self, x: Tensor) -> Tensor:
        """Ψ x: packed coefficients of the image's shape."""
        self._check(x)
        out = x.clone()
        h, w = x.shape[-2:]
        for _ in range(self.levels):
            out[..., :h, :w] = self._split(self._split(out[..., :h, :w], -2), -1)
            h, w = h // 2, w // 2
        return out

    def inverse(self, c: Tensor) -> Tensor:
        """Ψ^T c = Ψ^{-1} c."""
        self._check(c)
        out = c.clone()
        for level in reversed(range(self.levels)):
            h, w = c.shape[-2] >> level, c.shape[-1] >> level
            out[..., :h, :w] = self._merge(self._merge(out[..., :h, :w], -1), -2)
        return out

    def detail_mask(self, shape, device=None) -> Tensor:
        """1 on detail coefficients, 0 on the coarsest approximation (left unpenalised)."""
        mask = torch.ones(tuple(shape[-2:]), device=device)
        mask[: shape[-2] >> self.levels, : shape[-1] >> self.levels] = 0
        return mask


def _as_rows(x: Tensor, dim: int) -> tuple[Tensor, tuple]:
    """Move ``dim`` last and flatten the rest into rows (complex: real and imaginary rows): (R, 1, N)."""
    moved = x.movedim(dim, -1)
    is_complex = moved.is_complex()
    if is_complex:
        moved = torch.view_as_real(moved).movedim(-1, -2)
    return moved.reshape(-1, 1, moved.shape[-1]), (moved.shape[:-1], is_complex)


def _from_rows(rows: Tensor, layout: tuple, dim: int) -> Tensor:
    """Inverse of :func:`_as_rows` for rows (R, N') of a possibly new length N'."""
    lead, is_complex = layout
    out = rows.reshape(*lead, rows.shape[-1])
    if is_complex:
        out = torch.view_as_complex(out.movedim(-2, -1).contiguous())
    return out.movedim(-1, dim)


def soft_threshold(c: Tensor, threshold: Tensor | float) -> Tensor:
    """Complex soft thresholding c · max(|c| − t, 0) / |c|, the prox of t‖·‖₁."""
    magnitude = c.abs()
    return c * torch.clamp(magnitude - threshold, min=0) / magnitude.clamp_min(torch.finfo(magnitude.dtype).tiny)
