"""Discriminators of the SourceVAE GAN (DAC, Kumar et al. 2023; Sec. 2.1 of the MSLDM paper).

- `PeriodDiscriminator`: one of the multi-period discriminator (HiFi-GAN MPD), the waveform
  folded into `[B, 1, N/p, p]` and processed by 2D convs with kernels (5, 1).
- `BandedSTFTDiscriminator`: one of DAC's multi-resolution, multi-band STFT discriminators;
  the complex STFT as 2 channels `[B, 2, frames, bins]`, split into frequency bands, each
  band its own conv stack, the band features concatenated for a final conv.
- `Discriminator`: all of them (5 periods + 3 resolutions with the default config).

Every sub-discriminator returns a list of feature maps whose last entry is the logit map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from msldm.config import VAELossConfig
from msldm.layers import wn_conv2d

__all__ = ["PeriodDiscriminator", "BandedSTFTDiscriminator", "Discriminator"]

FeatureMaps = list[torch.Tensor]

_LEAK = 0.1


class PeriodDiscriminator(nn.Module):
    """MPD sub-discriminator for one period p. Widths `channels * (1, 4, 16, 32, 32)`."""

    def __init__(self, period: int, channels: int = 32) -> None:
        super().__init__()
        self.period = period
        widths = [1] + [channels * m for m in (1, 4, 16, 32, 32)]
        self.convs = nn.ModuleList(
            wn_conv2d(widths[i], widths[i + 1], (5, 1), stride=(3 if i < 4 else 1, 1),
                      padding=(2, 0))
            for i in range(5))
        self.conv_post = wn_conv2d(widths[-1], 1, (3, 1), padding=(1, 0))

    def forward(self, x: torch.Tensor) -> FeatureMaps:
        """`x [B, 1, N]` -> feature maps `[B, c_i, ~N/p/3^i, p]`, last = logits `[B, 1, *, p]`."""
        pad = (-x.shape[-1]) % self.period
        x = F.pad(x, (0, pad), mode="reflect") if pad else x
        b, c, n = x.shape
        x = x.reshape(b, c, n // self.period, self.period)  # [B, 1, N/p, p]
        fmaps: FeatureMaps = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), _LEAK)
            fmaps.append(x)
        fmaps.append(self.conv_post(x))
        return fmaps


def _band_stack(channels: int) -> nn.ModuleList:
    """The conv stack applied to one frequency band: `[B, 2, F, bins] -> [B, ch, F, bins/8]`."""
    return nn.ModuleList([
        wn_conv2d(2, channels, (3, 9), padding=(1, 4)),
        wn_conv2d(channels, channels, (3, 9), stride=(1, 2), padding=(1, 4)),
        wn_conv2d(channels, channels, (3, 9), stride=(1, 2), padding=(1, 4)),
        wn_conv2d(channels, channels, (3, 9), stride=(1, 2), padding=(1, 4)),
        wn_conv2d(channels, channels, (3, 3), padding=(1, 1)),
    ])


class BandedSTFTDiscriminator(nn.Module):
    """DAC's multi-band complex-STFT discriminator at one resolution (`n_fft`, hop n_fft/4).

    `bands` are fractions of the `n_fft // 2 + 1` bins, e.g. ((0, .1), (.1, .25), ...).
    """

    def __init__(self, n_fft: int, bands: tuple[tuple[float, float], ...],
                 channels: int = 32) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop = n_fft // 4
        n_bins = n_fft // 2 + 1
        self.bands = [(int(lo * n_bins), int(hi * n_bins)) for lo, hi in bands]
        self.stacks = nn.ModuleList(_band_stack(channels) for _ in self.bands)
        self.conv_post = wn_conv2d(channels, 1, (3, 3), padding=(1, 1))
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """`x [B, 1, N]` -> complex STFT as channels `[B, 2, frames, bins]` (float32)."""
        spec = torch.stft(x.squeeze(1).float(), self.n_fft, self.hop, window=self.window,
                          center=True, pad_mode="constant", return_complex=True)
        return torch.view_as_real(spec).permute(0, 3, 2, 1)  # [B, F, frames, 2] -> [B, 2, frames, F]

    def forward(self, x: torch.Tensor) -> FeatureMaps:
        """`x [B, 1, N]` -> per-band feature maps, last = logits `[B, 1, frames, sum bins/8]`."""
        spec = self.spectrogram(x)
        fmaps: FeatureMaps = []
        outs = []
        for (lo, hi), stack in zip(self.bands, self.stacks):
            h = spec[..., lo:hi]
            for conv in stack:
                h = F.leaky_relu(conv(h), _LEAK)
                fmaps.append(h)
            outs.append(h)
        fmaps.append(self.conv_post(torch.cat(outs, dim=-1)))
        return fmaps


class Discriminator(nn.Module):
    """All sub-discriminators: one `PeriodDiscriminator` per period, one
    `BandedSTFTDiscriminator` per FFT size (`VAELossConfig.periods`, `.stft_ffts`)."""

    def __init__(self, cfg: VAELossConfig) -> None:
        super().__init__()
        ch = cfg.discriminator_channels
        subs: list[nn.Module] = [PeriodDiscriminator(p, ch) for p in cfg.periods]
        subs += [BandedSTFTDiscriminator(n, cfg.stft_bands, ch) for n in cfg.stft_ffts]
        self.discriminators = nn.ModuleList(subs)

    @staticmethod
    def preprocess(x: torch.Tensor) -> torch.Tensor:
        """Remove DC and peak-normalise to 0.8 per example (as DAC): `[B, 1, N] -> [B, 1, N]`."""
        x = x - x.mean(dim=-1, keepdim=True)
        return 0.8 * x / (x.abs().amax(dim=-1, keepdim=True) + 1e-9)

    def forward(self, x: torch.Tensor) -> list[FeatureMaps]:
        """`x [B, 1, N]` -> one list of feature maps per sub-discriminator."""
        x = self.preprocess(x)
        return [d(x) for d in self.discriminators]
