"""STFT and inverse STFT as plain convolutions, the same modules in training and in ONNX.

`ConvSTFT` is a `Conv1d` whose fixed kernels are the Hann-windowed DFT basis (real and
imaginary parts stacked on channels); `ConvISTFT` is a `ConvTranspose1d` with the windowed
inverse-DFT basis (overlap-add included), divided by the window envelope (itself a
`ConvTranspose1d` of ones), then trimmed. No FFT, Col2Im or STFT operator appears in an
exported graph, so TensorRT's ONNX parser takes them.

`FactorisedSTFT` / `FactorisedISTFT` compute the same transforms with about an eighth of
the multiply-adds (for n_fft 1280: 0.19 M instead of 1.64 M per frame): frames are built
from hop-sized blocks (n_fft a multiple of hop), and each frame's DFT is split Cooley-Tukey
style into two small DFTs (n_fft = N1 x N2, e.g. 32 x 40) joined by twiddle factors, all as
MatMul / Mul / Reshape / Slice / Concat / Pad. `make_stft` picks them where they apply.

Framing: `pad` samples of zeros on each side, frames of `n_fft` every `hop`. With
`pad = n_fft // 2` this is `torch.stft(center=True, pad_mode="constant")` and its inverse
`torch.istft(center=True)`; the spectral SourceVAE uses `pad = (n_fft - hop) // 2`, so frame
t is centred on the middle of hop block t and `N = T * hop` samples give exactly T frames.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvSTFT", "ConvISTFT", "FactorisedSTFT", "FactorisedISTFT", "make_stft", "hann", "bin_advance"]


def hann(n_fft: int) -> torch.Tensor:
    """The periodic Hann window `[n_fft]` (float64), as `torch.hann_window(n_fft)`."""
    n = torch.arange(n_fft, dtype=torch.float64)
    return 0.5 - 0.5 * torch.cos(2 * math.pi * n / n_fft)


def bin_advance(n_fft: int, hop: int) -> torch.Tensor:
    """Phase advance per hop of each bin's centre frequency, wrapped to (-pi, pi]: `[n_fft//2+1]`."""
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
    a = 2 * math.pi * k * hop / n_fft
    return (a + math.pi) % (2 * math.pi) - math.pi


def _angles(n_fft: int) -> torch.Tensor:
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]
    n = torch.arange(n_fft, dtype=torch.float64)[None, :]
    return 2 * math.pi * ((k * n) % n_fft) / n_fft  # [F, n_fft], reduced mod n_fft for accuracy


def _check_bins(n_fft: int, bins: int | None) -> int:
    """The number of bins a band-limited transform keeps: `bins`, or all n_fft/2 + 1."""
    if bins is None:
        return n_fft // 2 + 1
    if not 0 < bins <= n_fft // 2 + 1:
        raise ValueError(f"bins must be in 1..{n_fft // 2 + 1}, got {bins}")
    return bins


class ConvSTFT(nn.Module):
    """`audio [B, 1, N] -> (real, imag)`, each `[B, F, T]`, F = n_fft/2 + 1,
    T = (N + 2*pad - n_fft) // hop + 1 (torch.stft's sign convention: X_k = sum x w e^{-i...}).
    With `bins`, only the first `bins` bins are computed (F = bins)."""

    def __init__(self, n_fft: int, hop: int, pad: int | None = None, bins: int | None = None) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.pad = n_fft // 2 if pad is None else pad
        w, a = hann(n_fft), _angles(n_fft)[:_check_bins(n_fft, bins)]
        basis = torch.cat([w * torch.cos(a), -w * torch.sin(a)])  # [2F, n_fft]
        self.register_buffer("basis", basis.float()[:, None, :], persistent=False)  # [2F, 1, n_fft]

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        spec = F.conv1d(F.pad(audio, (self.pad, self.pad)), self.basis, stride=self.hop)  # [B, 2F, T]
        return spec.chunk(2, dim=1)


class ConvISTFT(nn.Module):
    """`(real, imag) [B, F, T] -> audio [B, 1, (T - 1) * hop + n_fft - 2 * pad]`.

    The inverse of `ConvSTFT` with the same window (least-squares overlap-add, as torch.istft):
    frames are the inverse real DFT times the window, overlap-added, divided by the summed
    squared window. The imaginary parts of the DC and Nyquist bins are ignored (irfft).
    With `bins`, it takes only the first `bins` bins `[B, bins, T]` (the others zero): the
    inverse of a low band at a fraction of the full basis's cost.
    """

    def __init__(self, n_fft: int, hop: int, pad: int | None = None, bins: int | None = None) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.pad = n_fft // 2 if pad is None else pad
        w, a = hann(n_fft), _angles(n_fft)
        c = torch.full((n_fft // 2 + 1, 1), 2.0, dtype=torch.float64)
        c[0] = 1.0
        if n_fft % 2 == 0:
            c[-1] = 1.0
        if bins is not None:  # band-limited: the first `bins` bins in, the rest taken as zero
            a, c = a[:_check_bins(n_fft, bins)], c[:bins]
        basis = torch.cat([c * torch.cos(a), -c * torch.sin(a)]) * w / n_fft  # [2F, n_fft]
        self.register_buffer("basis", basis.float()[:, None, :], persistent=False)  # [2F, 1, n_fft]
        self.register_buffer("window_sq", (w ** 2).float()[None, None, :], persistent=False)  # [1, 1, n_fft]

    def forward(self, real: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
        spec = torch.cat([real, imag], dim=1)  # [B, 2F, T]
        audio = F.conv_transpose1d(spec, self.basis, stride=self.hop)  # [B, 1, (T-1)*hop + n_fft]
        ones = torch.ones_like(real[:1, :1, :])  # [1, 1, T]: the envelope follows T in the graph
        envelope = F.conv_transpose1d(ones, self.window_sq, stride=self.hop)
        audio = audio / envelope.clamp_min(1e-8)
        return audio[..., self.pad:-self.pad] if self.pad else audio  # static slice: any T in ONNX


# ----------------------------------------------------------------------------- factorised


def _split(n: int) -> tuple[int, int]:
    """n = N1 * N2 with N1 the largest divisor of n not above sqrt(n)."""
    n1 = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return n1, n // n1


def factorisable(n_fft: int, hop: int, pad: int) -> bool:
    """The factorised transforms need frames made of whole hop blocks: n_fft and 2*pad both
    multiples of hop."""
    return n_fft % hop == 0 and (2 * pad) % hop == 0


class _Factors(nn.Module):
    """The constants of an n_fft = N1 x N2 real DFT: the N1-point DFT, the twiddles and the
    N2-point DFT restricted to the K2 columns that reach bin n_fft / 2."""

    def __init__(self, n_fft: int, hop: int, pad: int | None = None) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.pad = n_fft // 2 if pad is None else pad
        if not factorisable(n_fft, hop, self.pad):
            raise ValueError(f"n_fft {n_fft} and 2*pad {2 * self.pad} must be multiples of hop {hop}")
        self.m = n_fft // hop  # hop blocks per frame
        self.n1, self.n2 = _split(n_fft)
        self.bins = n_fft // 2 + 1
        self.k2 = (self.bins - 1) // self.n1 + 1  # columns k2 with some k = k1 + N1*k2 < bins
        tau = 2 * math.pi
        i1 = torch.arange(self.n1, dtype=torch.float64)
        i2 = torch.arange(self.n2, dtype=torch.float64)
        j2 = torch.arange(self.k2, dtype=torch.float64)
        small = tau * ((i1[:, None] * i1[None, :]) % self.n1) / self.n1  # [N1, N1]
        twiddle = tau * ((i1[:, None] * i2[None, :]) % n_fft) / n_fft  # [N1 (k1), N2 (n2)]
        big = tau * ((i2[:, None] * j2[None, :]) % self.n2) / self.n2  # [N2 (n2), K2 (k2)]
        for name, value in (("cos1", small.cos()), ("sin1", small.sin()), ("cos_t", twiddle.cos()),
                            ("sin_t", twiddle.sin()), ("cos2", big.cos()), ("sin2", big.sin()),
                            ("window", hann(n_fft).reshape(self.n1, self.n2))):
            self.register_buffer(name, value.float(), persistent=False)

    def _overlap_add(self, frames: torch.Tensor) -> torch.Tensor:
        """`[B, T, n_fft]` -> `[B, 1, (T + m - 1) * hop]`: frame t added at sample t * hop."""
        B = frames.shape[0]
        blocks = frames.reshape(B, -1, self.m, self.hop)
        out = sum(F.pad(blocks[:, :, j], (0, 0, j, self.m - 1 - j)) for j in range(self.m))
        return out.reshape(B, 1, -1)


class FactorisedSTFT(_Factors):
    """`ConvSTFT` (same framing, window and sign), computed as two small DFTs per frame. With
    `bins`, only the first `bins` bins: the second DFT then runs over the few columns k2 that
    reach them (for n_fft 2560 and 118 bins, 3 of 33)."""

    def __init__(self, n_fft: int, hop: int, pad: int | None = None, bins: int | None = None) -> None:
        super().__init__(n_fft, hop, pad)
        self.bins = _check_bins(n_fft, bins)
        self.k2 = (self.bins - 1) // self.n1 + 1  # the columns k2 with some bin k = k1 + N1*k2 < bins
        self.cos2, self.sin2 = self.cos2[:, :self.k2].contiguous(), self.sin2[:, :self.k2].contiguous()

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        extra = (-(audio.shape[-1] + 2 * self.pad)) % self.hop  # 0 for the VAE (N = T * hop)
        x = F.pad(audio, (self.pad, self.pad + extra)) if self.pad or extra else audio
        B = x.shape[0]
        blocks = x.reshape(B, -1, self.hop)  # [B, T + m - 1, hop]
        m = self.m
        frames = torch.cat([blocks[:, j:j - (m - 1)] if j < m - 1 else blocks[:, j:] for j in range(m)],
                           dim=-1)  # [B, T, n_fft]
        if extra:  # the padding to whole blocks made room for one frame past torch.stft's last
            frames = frames[:, :-1]
        xr = frames.reshape(B, -1, self.n1, self.n2) * self.window  # [B, T, N1 (n1), N2 (n2)]
        a_re, a_im = self.cos1 @ xr, -(self.sin1 @ xr)  # N1-point DFT over n1 -> [B, T, k1, n2]
        b_re = a_re * self.cos_t + a_im * self.sin_t  # times exp(-i 2 pi k1 n2 / n_fft)
        b_im = a_im * self.cos_t - a_re * self.sin_t
        x_re = b_re @ self.cos2 + b_im @ self.sin2  # N2-point DFT over n2 -> [B, T, k1, k2]
        x_im = b_im @ self.cos2 - b_re @ self.sin2
        T = x_re.shape[1]

        def bins(z: torch.Tensor) -> torch.Tensor:  # bin k = k1 + N1 * k2 -> [B, F, T]
            return z.transpose(2, 3).reshape(B, T, -1)[:, :, :self.bins].transpose(1, 2)
        return bins(x_re), bins(x_im)


class FactorisedISTFT(_Factors):
    """`ConvISTFT` (same inverse, window and envelope), computed as two small DFTs per frame."""

    def __init__(self, n_fft: int, hop: int, pad: int | None = None) -> None:
        super().__init__(n_fft, hop, pad)
        c = torch.full((self.n1 * self.k2,), 2.0, dtype=torch.float64)
        c[0] = 1.0
        if n_fft % 2 == 0:
            c[n_fft // 2] = 1.0
        c[self.bins:] = 0.0  # the grid's columns past bin n_fft / 2
        self.register_buffer("scale", (c / n_fft).float(), persistent=False)  # irfft weights c_k / N

    def forward(self, real: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
        B, T = real.shape[0], real.shape[-1]
        grid = self.n1 * self.k2

        def grid_of(z: torch.Tensor) -> torch.Tensor:  # [B, F, T] -> [B, T, k1, k2], weighted
            z = F.pad(z.transpose(1, 2), (0, grid - self.bins)) * self.scale
            return z.reshape(B, T, self.k2, self.n1).transpose(2, 3)
        y_re, y_im = grid_of(real), grid_of(imag)
        s_re = y_re @ self.cos2.t() - y_im @ self.sin2.t()  # inverse N2-point DFT -> [B, T, k1, n2]
        s_im = y_re @ self.sin2.t() + y_im @ self.cos2.t()
        u_re = s_re * self.cos_t - s_im * self.sin_t  # times exp(+i 2 pi k1 n2 / n_fft)
        u_im = s_re * self.sin_t + s_im * self.cos_t
        x = self.cos1 @ u_re - self.sin1 @ u_im  # real part of the inverse N1-point DFT -> [B, T, n1, n2]
        frames = (x * self.window).reshape(B, T, self.n_fft)
        audio = self._overlap_add(frames)
        ones = torch.ones_like(real[:1, :1, :]).transpose(1, 2)  # [1, T, 1]: the envelope follows T
        envelope = self._overlap_add(ones * (self.window ** 2).reshape(1, 1, -1))
        audio = audio / envelope.clamp_min(1e-8)
        return audio[..., self.pad:-self.pad] if self.pad else audio


def make_stft(n_fft: int, hop: int, pad: int | None = None, bins: int | None = None
              ) -> tuple[nn.Module, nn.Module]:
    """(STFT, inverse STFT) for this framing: the factorised pair where it applies, else the
    convolutions. Both pairs compute the same transforms (to float rounding). With `bins`, both
    are band-limited: the STFT gives and the inverse takes only the first `bins` bins."""
    p = n_fft // 2 if pad is None else pad
    if not factorisable(n_fft, hop, p):
        return ConvSTFT(n_fft, hop, p, bins), ConvISTFT(n_fft, hop, p, bins)
    inverse = FactorisedISTFT(n_fft, hop, p) if bins is None else ConvISTFT(n_fft, hop, p, bins)
    return FactorisedSTFT(n_fft, hop, p, bins), inverse
