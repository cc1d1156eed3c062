"""SourceVAE: a DAC-style waveform VAE with a diagonal Gaussian posterior (Sec. 2.1, A.1).

The encoder maps a mono source `s [B, 1, N]` to the posterior N(mu_z(s), Sigma_z(s)) with
`mu_z, log Sigma_z [B, C, T]`, `T = ceil(N / D)`, `D = prod(encoder_rates)` (320), `C = 80`.
The latent used downstream is the posterior mean `z_s = mu_z(s)`. The decoder maps any
`z [B, C, T]` back to audio `[B, 1, T * D]`. There is no quantizer (DAC minus RVQ plus KL).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from msldm.config import VAEConfig
from msldm.layers import ResidualUnit, Snake1d, fold_weight_norm, wn_conv1d, wn_conv_transpose1d

__all__ = ["SourceVAE", "Encoder", "Decoder", "LOGVAR_MIN", "LOGVAR_MAX", "count_parameters"]

LOGVAR_MIN: float = -30.0
LOGVAR_MAX: float = 20.0
"""Clamp range of the posterior log-variance (as the MSLDM / latent-diffusion code)."""


def _encoder_block(in_channels: int, out_channels: int, stride: int,
                   dilations: tuple[int, ...]) -> nn.Sequential:
    """Residual units at `in_channels`, then a strided conv: `[B, in, L] -> [B, out, L/stride]`."""
    return nn.Sequential(
        *[ResidualUnit(in_channels, d) for d in dilations],
        Snake1d(in_channels),
        wn_conv1d(in_channels, out_channels, 2 * stride, stride=stride,
                  padding=math.ceil(stride / 2)),
    )


def _decoder_block(in_channels: int, out_channels: int, stride: int,
                   dilations: tuple[int, ...]) -> nn.Sequential:
    """A transposed conv, then residual units: `[B, in, L] -> [B, out, L*stride]`."""
    return nn.Sequential(
        Snake1d(in_channels),
        wn_conv_transpose1d(in_channels, out_channels, 2 * stride, stride=stride,
                            padding=math.ceil(stride / 2), output_padding=stride % 2),
        *[ResidualUnit(out_channels, d) for d in dilations],
    )


class Encoder(nn.Module):
    """`[B, 1, T*D] -> [B, 2C, T]` (mean and log-variance stacked on channels).

    Widths: `encoder_dim`, doubled at each of the strided blocks (DAC).
    """

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        width = cfg.encoder_dim
        layers: list[nn.Module] = [wn_conv1d(1, width, 7, padding=3)]
        for stride in cfg.encoder_rates:
            layers.append(_encoder_block(width, 2 * width, stride, cfg.dilations))
            width *= 2
        layers += [Snake1d(width), wn_conv1d(width, 2 * cfg.latent_dim, 3, padding=1)]
        self.block = nn.Sequential(*layers)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """`audio [B, 1, T*D] -> moments [B, 2C, T]`."""
        return self.block(audio)


class Decoder(nn.Module):
    """`[B, C, T] -> [B, 1, T*D]`. Widths: `decoder_dim`, halved at each up-sampling (DAC)."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        if cfg.decoder_dim % 2 ** len(cfg.decoder_rates):
            raise ValueError("decoder_dim must be divisible by 2 ** len(decoder_rates)")
        width = cfg.decoder_dim
        layers: list[nn.Module] = [wn_conv1d(cfg.latent_dim, width, 7, padding=3)]
        for stride in cfg.decoder_rates:
            layers.append(_decoder_block(width, width // 2, stride, cfg.dilations))
            width //= 2
        # No final tanh: the MSLDM SourceVAE decoder ends on the conv (DAC adds a tanh).
        layers += [Snake1d(width), wn_conv1d(width, 1, 7, padding=3)]
        self.model = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """`z [B, C, T] -> audio [B, 1, T*D]`."""
        return self.model(z)


class SourceVAE(nn.Module):
    """The SourceVAE of Sec. 2.1: `encode`, `decode`, `forward`, `fold_weight_norm`."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        if math.prod(cfg.decoder_rates) != cfg.hop:
            raise ValueError("prod(decoder_rates) must equal prod(encoder_rates) = D")
        self.cfg = cfg
        self.hop = cfg.hop  # D
        self.latent_dim = cfg.latent_dim  # C
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def encode(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior of `audio [B, 1, N]`: `(mean [B, C, T], logvar [B, C, T])`, T = ceil(N/D).

        The audio is zero-padded on the right to `T * D` samples (the pad is computed from the
        shape only). `logvar` is clamped to [LOGVAR_MIN, LOGVAR_MAX].
        """
        pad = (-audio.shape[-1]) % self.hop
        moments = self.encoder(F.pad(audio, (0, pad)))  # [B, 2C, T]
        mean, logvar = moments.chunk(2, dim=1)  # 2 x [B, C, T]
        return mean, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """`z [B, C, T] -> audio [B, 1, T*D]`."""
        return self.decoder(z)

    def forward(self, audio: torch.Tensor, sample_posterior: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruct `audio [B, 1, N]`: `(recon [B, 1, N], mean [B, C, T], logvar [B, C, T])`.

        Decodes the posterior mean, or with `sample_posterior` (training, as the paper's code)
        a sample `z = mean + exp(logvar / 2) * eps`; the output is trimmed back to N samples.
        """
        mean, logvar = self.encode(audio)
        z = mean
        if sample_posterior:
            z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        recon = self.decode(z)[..., : audio.shape[-1]]
        return recon, mean, logvar

    def fold_weight_norm(self) -> int:
        """Replace weight-norm parametrizations by plain weights, in place (for export).

        Outputs are unchanged. Returns the number of convs folded.
        """
        return fold_weight_norm(self)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of `module` (weight-norm g and v counted separately)."""
    return sum(p.numel() for p in module.parameters())
