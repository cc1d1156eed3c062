"""STFT and inverse STFT as plain convolutions, the same modules in training and in ONNX.

`ConvSTFT` is a `Conv1d` whose fixed kernels are the Hann-windowed DFT basis (real and
imaginary parts stacked on channels); `ConvISTFT` is a `ConvTranspose1d` with the windowed
inverse-DFT basis (overlap-add included), divided by the window envelope (itself a
`ConvTranspose1d` of ones), then trimmed. No FFT, Col2Im or STFT operator appears in an
exported graph, so TensorRT's ONNX parser takes them.

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

__all__ = ["ConvSTFT", "ConvISTFT", "hann", "bin_advance"]


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


class ConvSTFT(nn.Module):
    """`audio [B, 1, N] -> (real, imag)`, each `[B, F, T]`, F = n_fft/2 + 1,
    T = (N + 2*pad - n_fft) // hop + 1 (torch.stft's sign convention: X_k = sum x w e^{-i...})."""

    def __init__(self, n_fft: int, hop: int, pad: int | None = None) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.pad = n_fft // 2 if pad is None else pad
        w, a = hann(n_fft), _angles(n_fft)
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
    """

    def __init__(self, n_fft: int, hop: int, pad: int | None = None) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.pad = n_fft // 2 if pad is None else pad
        w, a = hann(n_fft), _angles(n_fft)
        c = torch.full((n_fft // 2 + 1, 1), 2.0, dtype=torch.float64)
        c[0] = 1.0
        if n_fft % 2 == 0:
            c[-1] = 1.0
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
