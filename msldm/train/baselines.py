"""The paper's baselines (Sec. 4.1 of the MSLDM paper) as configurations of the same code.

- ``msldm``: one denoiser over the joint latent of the K stems (K*C channels).
- ``isldm``: K independent denoisers, one per stem, each on C channels (the same U-Net
  otherwise); they cannot make the stems agree with each other.
- ``mixldm``: a "MixtureVAE" (the SourceVAE trained on mixtures, C' = K*C = 320 so the
  denoiser's input has MSLDM's size) and one denoiser on the mixture latent (stem ``"mix"``).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from msldm.config import MIX, ModelConfig


def _msldm(base: ModelConfig) -> list[ModelConfig]:
    return [base]


def _isldm(base: ModelConfig) -> list[ModelConfig]:
    d = base.diffusion
    unet = dataclasses.replace(d.unet, in_channels=d.latent_dim)
    return [dataclasses.replace(base, name=f"{base.name}-isldm-{stem}",
                                diffusion=dataclasses.replace(d, stems=(stem,), unet=unet))
            for stem in d.stems]


def _mixldm(base: ModelConfig) -> list[ModelConfig]:
    d = base.diffusion
    C_mix = d.K * d.latent_dim  # 320 for K = 4, C = 80
    vae = dataclasses.replace(base.vae, latent_dim=C_mix)
    unet = dataclasses.replace(d.unet, in_channels=C_mix)
    diffusion = dataclasses.replace(d, stems=(MIX,), latent_dim=C_mix, unet=unet)
    return [dataclasses.replace(base, name=f"{base.name}-mixldm", vae=vae, diffusion=diffusion)]


BASELINES: dict[str, Callable[[ModelConfig], list[ModelConfig]]] = {
    "msldm": _msldm, "isldm": _isldm, "mixldm": _mixldm}


def baseline_configs(base: ModelConfig, kind: str) -> list[ModelConfig]:
    """The model(s) to train for baseline `kind` built from `base` (ISLDM: one per stem)."""
    try:
        return BASELINES[kind](base)
    except KeyError:
        raise ValueError(f"unknown baseline {kind!r}; choose from {sorted(BASELINES)}") from None


def baseline_config(base: ModelConfig, kind: str) -> ModelConfig | list[ModelConfig]:
    """Like `baseline_configs`, but a single `ModelConfig` for msldm and mixldm."""
    configs = baseline_configs(base, kind)
    return configs if kind == "isldm" else configs[0]
