"""Checkpoints: `{config, weights, version}` in ONE safetensors file.

Tensors are the module's state dict (plus optional extra tensors, such as the latent
statistics of a diffusion checkpoint); the safetensors metadata holds the format name,
version, kind, the `ModelConfig` as JSON and free-form JSON `meta` (provenance, step).
Loading rebuilds the model through the config; nothing is unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from msldm.atomic import atomic_path
from msldm.config import ModelConfig

FORMAT = "msldm-checkpoint"
VERSION = "1"
KINDS = ("vae", "diffusion")


class CheckpointError(ValueError):
    """The file is not a checkpoint this version of msldm can read."""


def pick_device(name: str | None = None) -> torch.device:
    """`name` ("cpu", "cuda", "cuda:1"), or CUDA when there is one, else CPU."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
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
    from msldm.vae_models import build_vae

    config, state, _, meta = read_checkpoint(path, "vae")
    vae = _with_state(build_vae(config.vae), state, path)
    return vae.to(device).eval(), config, meta


def _with_state(module: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> torch.nn.Module:
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: its weights do not fit the model its config describes: {e}") from None
    return module


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
    model = _with_state(EDMDenoiser(config.diffusion), state, path)
    stats = identity_stats(config.diffusion.latent_dim)
    stats.update({k: v.float() for k, v in extra.items() if k in stats})
    return model.to(device).eval(), config, meta, stats


def write_shards(path: str | Path, out_dir: str | Path, max_bytes: int = 16 * 2 ** 20,
                 half: bool = False) -> list[Path]:
    """Split a checkpoint into safetensors shards of at most `max_bytes` each (tensors are
    never cut; one larger than the limit is an error). `half` stores float32 tensors as
    float16 (for carrying weights; `join_shards` casts them back). Every shard carries the
    checkpoint's metadata and its index; returns the shard paths."""
    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    groups: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        if half and t.dtype == torch.float32:
            t = t.half()
        n = t.numel() * t.element_size()
        if n > max_bytes - 2 ** 16:
            raise ValueError(f"tensor {name} ({n} bytes) does not fit in one shard")
        if size + n > max_bytes - 2 ** 16 and groups[-1]:
            groups.append({})
            size = 0
        groups[-1][name] = t
        size += n
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(path).name.removesuffix(".safetensors")
    paths = []
    for i, group in enumerate(groups):
        meta = {**metadata, "shard": f"{i + 1}/{len(groups)}", "stored_half": str(half)}
        p = out_dir / f"{stem}-{i + 1:02d}-of-{len(groups):02d}.safetensors"
        with atomic_path(p) as tmp:  # a crash never leaves a truncated shard under its final name
            save_file(group, str(tmp), metadata=meta)
        paths.append(p)
    return paths


def join_shards(shards: list[str | Path], path: str | Path) -> Path:
    """Rebuild one checkpoint file from the shards of `write_shards` (float16 stored tensors
    are cast back to float32). Checks that every shard of the set is there."""
    shards = sorted(Path(s) for s in shards)
    tensors: dict[str, torch.Tensor] = {}
    metadata: dict[str, str] = {}
    seen: set[str] = set()
    for s in shards:
        with safe_open(str(s), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            seen.add(metadata.get("shard", "?"))
            half = metadata.get("stored_half") == "True"
            for k in f.keys():
                t = f.get_tensor(k)
                tensors[k] = t.float() if half and t.dtype == torch.float16 else t
    total = int(metadata.get("shard", "0/0").split("/")[1])
    if seen != {f"{i}/{total}" for i in range(1, total + 1)}:
        raise CheckpointError(f"the shards given ({', '.join(sorted(seen))}) are not one whole set of {total}")
    for key in ("shard", "stored_half"):
        metadata.pop(key, None)
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path
