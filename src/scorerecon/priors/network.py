"""NCSN++-class U-Net for score estimation (Song et al. 2021, Appendix H; Ho et al. 2020).

Architecture, level by level (``len(ch_mult)`` levels, each halving the resolution):

* noise embedding: Gaussian Fourier features of the noise level c = log(β/α) (scale 16, as
  NCSN++ on log σ), or sinusoidal features, followed by a two-layer MLP;
* residual blocks GroupNorm → SiLU → conv3×3 (+ dense projection of the embedding) →
  GroupNorm → SiLU → dropout → conv3×3, with a 1×1 skip and NCSN++'s rescaling (x + h)/√2;
* self-attention only at the levels listed in ``attention_levels`` (the coarsest ones) and in
  the middle block; U-Net skip connections from every down block to its up block;
* the last convolution starts at zero, so the initial score is 0 (initial DSM loss 1).

The network is fully convolutional: trained on crops, it applies to any H, W divisible by
2^(levels − 1) (:meth:`ScoreUNet.check_image_size`).  It returns the *unscaled* output; the
score is ``net(x, c) / β(t)`` (:class:`scorerecon.priors.prior.ScorePrior`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=math.gcd(channels, min(channels // 4, 32)), num_channels=channels, eps=1e-6)


class GaussianFourierEmbedding(nn.Module):
    """[sin(2π W c), cos(2π W c)] with fixed W ~ N(0, scale²) (Tancik et al. 2020; NCSN++)."""

    def __init__(self, size: int, scale: float = 16.0):
        super().__init__()
        self.register_buffer("W", torch.randn(size) * scale)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        proj = c[:, None] * self.W[None, :] * (2.0 * math.pi)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


class SinusoidalEmbedding(nn.Module):
    """Transformer sinusoidal features of 1000·c (DDPM's timestep embedding, Ho et al. 2020)."""

    def __init__(self, size: int):
        super().__init__()
        freqs = torch.exp(-math.log(10000.0) * torch.arange(size) / size)
        self.register_buffer("freqs", freqs)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        proj = 1000.0 * c[:, None] * self.freqs[None, :]
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


class ResBlock(nn.Module):
    """DDPM/NCSN++ residual block conditioned on the noise embedding, skip rescaled by 1/√2."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = _group_norm(in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2, self.conv2 = _group_norm(out_ch), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.skip(x) + h) / math.sqrt(2.0)


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with a residual connection (NCSN++ AttnBlockpp)."""

    def __init__(self, ch: int):
        super().__init__()
        self.norm = _group_norm(ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)
        return (x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))) / math.sqrt(2.0)


class ScoreUNet(nn.Module):
    """U-Net ``net(x, c)`` with noise-level conditioning; see the module docstring."""

    def __init__(self, channels: int = 1, nf: int = 32, ch_mult=(1, 2, 2, 2), num_res_blocks: int = 2,
                 attention_levels=(3,), dropout: float = 0.0, embedding: str = "fourier",
                 fourier_scale: float = 16.0):
        super().__init__()
        levels = len(ch_mult)
        if channels < 1 or nf < 4 or nf % 4 or levels < 1 or min(ch_mult) < 1 or num_res_blocks < 1:
            raise UserError("network needs channels >= 1, nf a multiple of 4, ch_mult non-empty with entries >= 1, "
                            "num_res_blocks >= 1: fix the [network] table of the config")
        if any(not 0 <= lvl < levels for lvl in attention_levels):
            raise UserError(f"attention_levels {list(attention_levels)} must lie in 0..{levels - 1}")
        if embedding not in ("fourier", "sinusoidal"):
            raise UserError(f"embedding {embedding!r} unknown: use 'fourier' or 'sinusoidal'")
        self.config = dict(channels=channels, nf=nf, ch_mult=list(ch_mult), num_res_blocks=num_res_blocks,
                           attention_levels=list(attention_levels), dropout=dropout, embedding=embedding,
                           fourier_scale=fourier_scale)
        emb_dim = 4 * nf
        features = GaussianFourierEmbedding(nf, fourier_scale) if embedding == "fourier" else SinusoidalEmbedding(nf)
        self.embed = nn.Sequential(features, nn.Linear(2 * nf, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.conv_in = nn.Conv2d(channels, nf, 3, padding=1)
        self._build_down(nf, ch_mult, num_res_blocks, set(attention_levels), emb_dim, dropout)
        mid = nf * ch_mult[-1]
        self.mid = nn.ModuleList([ResBlock(mid, mid, emb_dim, dropout), AttnBlock(mid),
                                  ResBlock(mid, mid, emb_dim, dropout)])
        self._build_up(nf, ch_mult, num_res_blocks, set(attention_levels), emb_dim, dropout)
        self.norm_out = _group_norm(nf)
        self.conv_out = nn.Conv2d(nf, channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def _build_down(self, nf, ch_mult, num_res_blocks, attn, emb_dim, dropout) -> None:
        self.down = nn.ModuleList()
        self.skip_channels = [nf]
        ch = nf
        for level, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                self.down.append(ResBlock(ch, nf * mult, emb_dim, dropout))
                ch = nf * mult
                if level in attn:
                    self.down.append(AttnBlock(ch))
                self.skip_channels.append(ch)
            if level < len(ch_mult) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                self.skip_channels.append(ch)

    def _build_up(self, nf, ch_mult, num_res_blocks, attn, emb_dim, dropout) -> None:
        self.up = nn.ModuleList()
        skips = list(self.skip_channels)
        ch = nf * ch_mult[-1]
        for level in reversed(range(len(ch_mult))):
            for _ in range(num_res_blocks + 1):
                self.up.append(ResBlock(ch + skips.pop(), nf * ch_mult[level], emb_dim, dropout))
                ch = nf * ch_mult[level]
                if level in attn:
                    self.up.append(AttnBlock(ch))
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2.0, mode="nearest"),
                                             nn.Conv2d(ch, ch, 3, padding=1)))

    @property
    def levels(self) -> int:
        return len(self.config["ch_mult"])

    def check_image_size(self, height: int, width: int) -> None:
        """UserError unless H and W are divisible by 2^(levels − 1)."""
        factor = 2 ** (self.levels - 1)
        if height % factor or width % factor:
            raise UserError(f"image size {height}x{width} is not divisible by {factor}, which this prior "
                            f"needs: pad or crop the image to a multiple of {factor}")

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Unscaled network output for images x (B, C, H, W) and noise levels c (B,)."""
        emb = self.embed(c.to(torch.float32).reshape(-1).expand(x.shape[0]))
        h = self.conv_in(x)
        stack = [h]
        for block in self.down:
            h = _apply(block, h, emb)
            if not isinstance(block, AttnBlock):
                stack.append(h)
            else:
                stack[-1] = h
        for block in self.mid:
            h = _apply(block, h, emb)
        for block in self.up:
            if isinstance(block, ResBlock):
                h = torch.cat([h, stack.pop()], dim=1)
            h = _apply(block, h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))


def _apply(block: nn.Module, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    return block(h, emb) if isinstance(block, ResBlock) else block(h)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
