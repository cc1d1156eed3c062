"""Validation EDM loss of diffusion checkpoints on the same windows and the same noise.

    python scripts/val_loss.py --latents ~/.cache/msldm/data/mix-latents --batches 24 \
        msldm/assets/cpu/diffusion.safetensors ~/.cache/msldm/runs/denoiser-cpu-plays/diffusion.safetensors

The windows are the latent folder's validation split under the training filter
(`--min-frame-share 0.6` of `scripts/train_denoiser_cpu.sh`), one window per 256 frames,
batches of 8 drawn at a fixed stride; batch b uses noise seed 1000 + b for every checkpoint,
so two checkpoints are compared on identical inputs (a paired comparison; unlike the
training log's validation, which scores the raw weights, this scores what was exported:
the EMA weights). Each checkpoint is normalised with the folder's `stats.json`.

`--given drums,piano` scores only the other stems' positions with those stems given: noised
for every model (imputation's Eq. 5), clean as well for a conditional one (`cpu_given`).
"""

from __future__ import annotations

import argparse

import torch

from msldm.checkpoint import load_diffusion
from msldm.data.latents import LatentChunks, load_stats
from msldm.data.slakh import ActivityFilter
from msldm.edm import edm_loss


def val_loss(checkpoint: str, chunks: LatentChunks, stats: dict[str, torch.Tensor], batches: int,
             batch: int = 8, given: tuple[str, ...] = ()) -> float:
    model = load_diffusion(checkpoint)[0]
    d = model.cfg
    unknown = set(given) - set(d.stems)
    if unknown:
        raise SystemExit(f"--given: {sorted(unknown)} not among the model's stems {list(d.stems)}")
    mask = None
    if given:
        mask = torch.tensor([float(s in given) for s in d.stems]).repeat_interleave(d.latent_dim)[None, :, None]
    mean, std = stats["latent_mean"][None, None, :, None], stats["latent_std"][None, None, :, None]
    total = 0.0
    with torch.no_grad():
        for b in range(batches):
            z = torch.stack([chunks[(b * batch + i) * 7 % len(chunks)] for i in range(batch)])
            z = ((z - mean) / std).reshape(batch, -1, z.shape[-1])
            total += float(edm_loss(model, z, torch.Generator().manual_seed(1000 + b), mask=mask))
    return total / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latents", required=True)
    parser.add_argument("--batches", type=int, default=24)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--min-frame-share", type=float, default=0.6)
    parser.add_argument("--given", default="", help="comma-separated stems given (e.g. drums,piano)")
    parser.add_argument("checkpoints", nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(1)
    chunks = LatentChunks(args.latents, "validation", args.window,
                          activity=ActivityFilter(threshold=1e-3, min_frame_share=args.min_frame_share))
    stats = load_stats(args.latents)
    given = tuple(s for s in args.given.split(",") if s)
    for path in args.checkpoints:
        loss = val_loss(path, chunks, stats, args.batches, given=given)
        print(f"{path}: {loss:.4f} ({len(chunks)} windows{', given ' + '+'.join(given) if given else ''})")


if __name__ == "__main__":
    main()
