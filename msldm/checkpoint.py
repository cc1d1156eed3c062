"""Checkpoints: `{config, weights, version}` in ONE safetensors file.

Tensors are the module's state dict (plus optional extra tensors, such as the latent
statistics of a diffusion checkpoint); the safetensors metadata holds the format name,
version, kind, the `ModelConfig` as JSON and free-form JSON `meta` (provenance, step).
Loading rebuilds the model through the config; nothing is unpickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from msldm.config import ModelConfig

FORMAT = "msldm-checkpoint"
VERSION = "1"
KINDS = ("vae", "diffusion")


class CheckpointError(ValueError):
    """The file is not a checkpoint this version of msldm can read."""


def save_checkpoint(path: str | Path, kind: str, config: ModelConfig, module: nn.Module,
                    extra: dict[str, torch.Tensor] | None = None,
                    meta: dict[str, Any] | None = None) -> Path:
    """Write `module`'s weights (+ `extra` tensors) with the config; atomic (temp + rename)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    for k, v in (extra or {}).items():
        tensors[f"extra.{k}"] = v.detach().to("cpu").contiguous()
    metadata = {"format": FORMAT, "version": VERSION, "kind": kind,
                "config": config.to_json(), "meta": json.dumps(meta or {}, sort_keys=True)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str | Path, kind: str | None = None
                    ) -> tuple[ModelConfig, dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    """Return (config, state_dict, extra tensors, meta) of a checkpoint file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises several types for a bad header
        raise CheckpointError(f"{path} is not a safetensors checkpoint: {exc}") from exc
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an msldm checkpoint")
    if metadata.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {metadata.get('version')}, "
                              f"this msldm reads version {VERSION}")
    if kind is not None and metadata.get("kind") != kind:
        raise CheckpointError(f"{path} holds a {metadata.get('kind')} model, expected {kind}")
    config = ModelConfig.from_json(metadata["config"])
    extra = {k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")}
    state = {k: v for k, v in tensors.items() if not k.startswith("extra.")}
    return config, state, extra, json.loads(metadata.get("meta", "{}"))


def load_vae(path: str | Path, device: str | torch.device = "cpu"):
    """Rebuild the SourceVAE of a checkpoint. Returns (SourceVAE in eval mode, config, meta)."""
    from msldm.vae import SourceVAE

    config, state, _, meta = read_checkpoint(path, "vae")
    vae = SourceVAE(config.vae)
    vae.load_state_dict(state)
    return vae.to(device).eval(), config, meta


def identity_stats(C: int) -> dict[str, torch.Tensor]:
    """Latent statistics that leave latents unchanged."""
    return {"latent_mean": torch.zeros(C), "latent_std": torch.ones(C)}


def load_diffusion(path: str | Path, device: str | torch.device = "cpu"):
    """Rebuild the denoiser of a checkpoint.

    Returns (EDMDenoiser in eval mode, config, meta, stats) where stats holds
    `latent_mean` and `latent_std` `[C]`: the model sees (z - latent_mean) / latent_std.
    """
    from msldm.edm import EDMDenoiser

    config, state, extra, meta = read_checkpoint(path, "diffusion")
    model = EDMDenoiser(config.diffusion)
    model.load_state_dict(state)
    stats = identity_stats(config.diffusion.latent_dim)
    stats.update({k: v.float() for k, v in extra.items() if k in stats})
    return model.to(device).eval(), config, meta, stats
