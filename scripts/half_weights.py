"""Write a checkpoint's weights as float16 for committing (statistics stay float32).

    python scripts/half_weights.py ~/.cache/msldm/runs/denoiser-cpu-plays/diffusion.safetensors \
        msldm/assets/cpu/diffusion.safetensors --provenance "what the run was"

Tensors named `extra.*` (the latents' normalisation) keep their dtype; every other float32
tensor of at least `MIN_HALF_NUMEL` elements is stored as float16, the smaller ones (biases,
norms) stay float32, as `msldm export --half-storage` stores them: exporting the committed file
gives the graphs of the float32 weights it came from (a mix by `interpolate_weights.py`, say).
The metadata is kept; `--provenance` sets `meta.provenance`; `--sampler FIELD=VALUE`
(repeatable) sets the config's sampler defaults, as chosen by the eval sweep after training, so
that `msldm generate` on the checkpoint and `msldm export` of it sample like the shipped bundle.
`msldm.checkpoint` loads the result as float32 weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from export.onnx_export import MIN_HALF_NUMEL
from msldm.atomic import atomic_path
from msldm.config import ModelConfig, SamplerConfig


def half(src: Path, dst: Path, provenance: str | None = None, sampler: dict[str, str] | None = None) -> dict:
    with safe_open(str(src), framework="pt") as f:
        metadata = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    for k, v in tensors.items():
        if not k.startswith("extra.") and v.dtype == torch.float32 and v.numel() >= MIN_HALF_NUMEL:
            tensors[k] = v.half()
    if provenance is not None:
        meta = json.loads(metadata.get("meta", "{}"))
        meta["provenance"] = provenance
        metadata["meta"] = json.dumps(meta, sort_keys=True)
    if sampler:
        config = ModelConfig.from_json(metadata["config"])
        config = dataclasses.replace(config, sampler=config.sampler.with_overrides(sampler))
        metadata["config"] = config.to_json()
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as part:  # a failed write leaves the committed file as it was
        save_file(tensors, str(part), metadata=metadata)
    return json.loads(metadata.get("meta", "{}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--provenance", default=None)
    parser.add_argument("--sampler", action="append", default=[], metavar="FIELD=VALUE")
    args = parser.parse_args()
    try:  # a bad field or value is a usage error, found before anything is written
        sampler = SamplerConfig.parse_assignments(args.sampler)
        print(half(args.src, args.dst, args.provenance, sampler))
    except ValueError as e:
        parser.error(str(e))


if __name__ == "__main__":
    main()
