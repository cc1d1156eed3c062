"""1D U-Net over the joint latent `[B, K*C, T]` (Mousai / MSDM style).

Residual blocks with group norm and a sigma embedding (scale and shift), self-attention
in the levels that ask for it, strided-conv down-sampling and nearest up-sampling with
skip connections. Written with export in mind: only Conv1d, GroupNorm, SiLU, MatMul,
Softmax, Resize-free up-sampling (repeat_interleave is avoided; `F.interpolate` nearest
with an integer scale exports to a plain Resize), so TensorRT's ONNX parser takes it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from msldm.config import UNetConfig


class SigmaEmbedding(nn.Module):
    """c_noise `[B]` -> embedding `[B, E]` via Fourier features and an MLP."""

    def __init__(self, dim: int, fourier: int = 64):
        super().__init__()
        self.register_buffer("freqs", torch.randn(fourier // 2) * 16.0, persistent=True)
        self.mlp = nn.Sequential(nn.Linear(fourier, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        angles = c_noise.float()[:, None] * self.freqs[None, :] * (2 * math.pi)  # [B, F/2]
        return self.mlp(torch.cat([angles.cos(), angles.sin()], dim=1))


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> Conv, with the sigma embedding as scale/shift of the second norm."""

    def __init__(self, c_in: int, c_out: int, emb: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv1d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb, 2 * c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(e)[:, :, None].chunk(2, dim=1)  # [B, c_out, 1] each
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class SelfAttention(nn.Module):
    """Multi-head self-attention over time with a residual connection."""

    def __init__(self, channels: int, heads: int, head_dim: int, groups: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv1d(channels, 3 * inner, 1)
        self.out = nn.Conv1d(inner, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, T = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, self.head_dim, T).unbind(1)
        # q, k, v: [B, H, Dh, T]
        att = torch.matmul(q.transpose(2, 3), k) * (self.head_dim ** -0.5)  # [B, H, T, T]
        att = att.softmax(dim=-1)
        h = torch.matmul(v, att.transpose(2, 3))  # [B, H, Dh, T]
        return x + self.out(h.reshape(B, self.heads * self.head_dim, T))


class Level(nn.Module):
    """One U-Net level: res blocks (+ attention) on the way down and on the way up."""

    def __init__(self, cfg: UNetConfig, i: int, c_prev: int):
        super().__init__()
        c, f, emb, g = cfg.channels[i], cfg.factors[i], cfg.embedding_dim, cfg.norm_groups
        self.factor = f
        self.down = nn.Conv1d(c_prev, c, 2 * f, stride=f, padding=f // 2) if f > 1 else \
            nn.Conv1d(c_prev, c, 3, padding=1)
        self.down_blocks = nn.ModuleList(ResBlock(c, c, emb, g) for _ in range(cfg.blocks[i]))
        self.up_blocks = nn.ModuleList(ResBlock(2 * c, c, emb, g) for _ in range(cfg.blocks[i]))
        attn = (lambda: SelfAttention(c, cfg.attention_heads, cfg.attention_head_dim, g))
        self.down_attn = attn() if cfg.attentions[i] else None
        self.up_attn = attn() if cfg.attentions[i] else None
        self.up = nn.Conv1d(c, c_prev, 3, padding=1)


class ChannelFilters(nn.Module):
    """`banks` depthwise temporal filters of every input channel, mixed per channel with weights
    that depend on the noise level: `forward(x [B, C, T], e [B, E]) -> [B, C, T]`.

    The denoiser's output at a low noise level is its input less that input's own noise, channel
    by channel; a first level narrower than the input cannot pass it (on 2026-12-05 the `cpu`
    U-Net, 128 channels over 320, removed 10% of the noise power at sigma 0.1 where a per-channel
    9-tap least-squares filter removes 50%). These filters are that path, at a few multiplies
    per input value. The mixing weights start at zero: a U-Net warm-started from one without
    them computes the same function until they learn."""

    def __init__(self, channels: int, banks: int, taps: int, emb: int):
        super().__init__()
        self.banks = banks
        self.conv = nn.Conv1d(channels, channels * banks, taps, padding=taps // 2, groups=channels, bias=False)
        self.gain = nn.Linear(emb, channels * banks)
        nn.init.zeros_(self.gain.weight)
        nn.init.zeros_(self.gain.bias)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        y = self.conv(x) * self.gain(e)[:, :, None]  # [B, C*banks, T]: channel c's banks at c*banks..
        return y.view(x.shape[0], x.shape[1], self.banks, x.shape[2]).sum(dim=2)


class UNet1d(nn.Module):
    """F_theta of EDM: `forward(x [B, K*C, T], c_noise [B]) -> [B, K*C, T]`; a conditional
    U-Net (`cfg.cond_channels` > 0) also takes `cond [B, cond_channels, T]`.

    T must be a multiple of `cfg.total_factor` (the product of the down-sampling factors).
    """

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        c0 = cfg.channels[0]
        self.embed = SigmaEmbedding(cfg.embedding_dim)
        self.stem = nn.Conv1d(cfg.in_channels, c0, 3, padding=1)
        self.cond: nn.Conv1d | None = None
        if cfg.cond_channels:  # given-stem conditioning; zero at first: the joint model's function
            self.cond = nn.Conv1d(cfg.cond_channels, c0, 1)
            nn.init.zeros_(self.cond.weight)
            nn.init.zeros_(self.cond.bias)
        levels, c_prev = [], c0
        for i in range(len(cfg.channels)):
            levels.append(Level(cfg, i, c_prev))
            c_prev = cfg.channels[i]
        self.levels = nn.ModuleList(levels)
        self.head = nn.Sequential(nn.GroupNorm(cfg.norm_groups, c0), nn.SiLU(),
                                  nn.Conv1d(c0, cfg.in_channels, 3, padding=1))
        self.filters = ChannelFilters(cfg.in_channels, cfg.channel_filters, cfg.channel_filter_taps,
                                      cfg.embedding_dim) if cfg.channel_filters else None

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        e = self.embed(c_noise)
        h = self.stem(x)
        if self.cond is not None:
            if cond is None:
                raise ValueError("this U-Net is conditional: pass cond [B, cond_channels, T]")
            h = h + self.cond(cond)
        skips: list[list[torch.Tensor]] = []
        for lv in self.levels:
            h = lv.down(h)
            saved = []
            for blk in lv.down_blocks:
                h = blk(h, e)
                if lv.down_attn is not None:
                    h = lv.down_attn(h)
                saved.append(h)
            skips.append(saved)
        for lv, saved in zip(reversed(self.levels), reversed(skips)):
            for blk in lv.up_blocks:
                h = blk(torch.cat([h, saved.pop()], dim=1), e)
                if lv.up_attn is not None:
                    h = lv.up_attn(h)
            if lv.factor > 1:
                h = F.interpolate(h, scale_factor=float(lv.factor), mode="nearest")
            h = lv.up(h)
        out = self.head(h)
        return out if self.filters is None else out + self.filters(x, e)
