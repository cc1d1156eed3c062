"""Can the given stems, shown clean, help at all? Train only a conditional U-Net's new input.

    python scripts/probe_conditioning.py --latents ~/.cache/msldm/data/mix6-latents \
        --init msldm/assets/cpu/diffusion.safetensors --steps 300 --sigma 2 --lr 3e-3

A `cpu_given` denoiser starts from joint weights (`--init`); everything but its conditioning
convolution is frozen, and that is trained on the training split at one noise level with bass
and guitar generated, drums and piano given. Every 100 steps it prints the loss on 64
validation windows at that level, with the clean input and without it (`blind`): how much
of the loss a linear read of the clean given stems at the first level can take away. The
validation windows and their noise are the same at every print.
"""

from __future__ import annotations

import argparse

import torch

from msldm.checkpoint import load_diffusion
from msldm.config import get_preset
from msldm.data.latents import LatentChunks, load_stats
from msldm.data.slakh import ActivityFilter
from msldm.edm import EDMDenoiser
from msldm.train.runs import warm_start_conditional


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--latents", required=True)
    p.add_argument("--init", required=True, help="joint (or conditional) weights of the cpu U-Net")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--sigma", type=float, default=2.0)
    p.add_argument("--lr", type=float, default=3e-3)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    activity = ActivityFilter(threshold=1e-3, min_frame_share=0.6)
    train = LatentChunks(args.latents, "train", 256, activity=activity)
    val = LatentChunks(args.latents, "validation", 256, activity=activity)
    stats = load_stats(args.latents)
    mean, std = stats["latent_mean"][None, None, :, None], stats["latent_std"][None, None, :, None]
    model = EDMDenoiser(get_preset("cpu_given").diffusion)
    warm_start_conditional(model, load_diffusion(args.init)[0].state_dict())
    for q in model.parameters():
        q.requires_grad_(False)
    for q in model.unet.cond.parameters():
        q.requires_grad_(True)
    opt = torch.optim.Adam(model.unet.cond.parameters(), lr=args.lr)
    d, sig = model.cfg, args.sigma
    mask = torch.tensor([float(s in ("drums", "piano")) for s in d.stems]).repeat_interleave(d.latent_dim)
    mask = mask[None, :, None]
    weight = (sig ** 2 + d.sigma_data ** 2) / (sig * d.sigma_data) ** 2

    def batch(chunks, idx):
        z = torch.stack([chunks[i % len(chunks)] for i in idx])
        return ((z - mean) / std).reshape(len(idx), -1, z.shape[-1])

    def loss(z, x, out):
        m = mask.expand_as(z)
        return (weight * (1 - m) * (out - z) ** 2).sum() / (1 - m).sum()

    def evaluate() -> str:
        total = {"clean": 0.0, "blind": 0.0}
        with torch.no_grad():
            for b in range(8):
                z = batch(val, [(b * 8 + i) * 7 for i in range(8)])
                x = z + torch.randn(z.shape, generator=torch.Generator().manual_seed(b)) * sig
                s = torch.full((8,), sig)
                total["clean"] += float(loss(z, x, model(x, s, z, mask.expand_as(z)))) / 8
                total["blind"] += float(loss(z, x, model(x, s))) / 8
        return f"validation loss at sigma {sig:g}: clean {total['clean']:.4f}, blind {total['blind']:.4f}"

    print("start:", evaluate(), flush=True)
    g = torch.Generator().manual_seed(1)
    for step in range(1, args.steps + 1):
        z = batch(train, torch.randint(0, len(train), (8,), generator=g).tolist())
        x = z + torch.randn(z.shape, generator=g) * sig
        out = model(x, torch.full((8,), sig), z, mask.expand_as(z))
        opt.zero_grad()
        loss(z, x, out).backward()
        opt.step()
        if step % 100 == 0:
            print(f"step {step}:", evaluate(), flush=True)


if __name__ == "__main__":
    main()
