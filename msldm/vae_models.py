"""`build_vae(cfg)`: the SourceVAE that `VAEConfig.kind` names (one registry, one entry point)."""

from __future__ import annotations

from torch import nn

from msldm.config import VAEConfig
from msldm.spectral_vae import SpectralVAE
from msldm.vae import SourceVAE

VAE_KINDS: dict[str, type[nn.Module]] = {"dac": SourceVAE, "spectral": SpectralVAE}


def build_vae(cfg: VAEConfig) -> nn.Module:
    """A fresh SourceVAE of kind `cfg.kind` (`dac`: waveform, `spectral`: frame-rate STFT)."""
    try:
        return VAE_KINDS[cfg.kind](cfg)
    except KeyError:
        raise ValueError(f"unknown VAE kind {cfg.kind!r}; choose from {sorted(VAE_KINDS)}") from None
