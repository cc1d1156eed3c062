"""How much noise does a denoiser take out, level by level? The noise power left when real latents,
noised to a fixed sigma, are denoised once: (D(z + sigma n) - z)^2 over (sigma n)^2, 1 = none taken
out. Beside each checkpoint, a [1, 2, 1] / 4 moving average in time of the noised latents, the
least a denoiser should beat at low levels.

    python scripts/denoise_check.py --latents ~/.cache/msldm/data/multi-latents-v2 \\
        ~/.cache/msldm/runs/v2-step11442.safetensors msldm/assets/cpu/diffusion.safetensors

On 2026-12-05 the U-Net trained with sigma ~ U(0, 3) left 0.90 of the noise at sigma 0.1 and 0.46 at
0.3 (the moving average 0.54 and 0.40); with per-channel filters and the mixed draw 0.58 and 0.21
(docs/model-card.md, "Eleventh session"). Windows: `--n` tracks of the split, `--frames` latent
frames from frame `--start` of each, the checkpoint's own normalisation; the noise is seeded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from msldm.checkpoint import load_diffusion


def windows(latents: Path, split: str, n: int, start: int, frames: int) -> torch.Tensor:
    """Raw latents `[n, K, C, frames]` of the first `n` tracks of `split` that are long enough."""
    out = []
    for f in sorted((latents / split).glob("*.npy")):
        if f.name.endswith(".rms.npy"):
            continue
        z = np.load(f, mmap_mode="r")
        if z.shape[-1] >= start + frames:
            out.append(torch.from_numpy(np.array(z[:, :, start:start + frames], dtype=np.float32)))
        if len(out) == n:
            break
    if not out:
        raise SystemExit(f"no track of {latents / split} has {start + frames} frames")
    return torch.stack(out)


def noise_left(model, zn: torch.Tensor, sigma: float, seed: int) -> tuple[float, float]:
    """(denoiser, moving average): the noise power left at `sigma` on normalised `zn` `[B, K*C, T]`."""
    n = torch.randn(zn.shape, generator=torch.Generator().manual_seed(seed)) * sigma
    with torch.no_grad():
        d = model(zn + n, torch.full((zn.shape[0],), float(sigma)))
    x = torch.nn.functional.pad(zn + n, (1, 1), mode="replicate")
    avg = 0.25 * x[..., :-2] + 0.5 * x[..., 1:-1] + 0.25 * x[..., 2:]
    power = float((n ** 2).mean())
    return float(((d - zn) ** 2).mean()) / power, float(((avg - zn) ** 2).mean()) / power


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="diffusion checkpoints (safetensors)")
    p.add_argument("--latents", type=Path, required=True, help="a `msldm data latents` folder")
    p.add_argument("--split", default="validation")
    p.add_argument("--n", type=int, default=16, help="tracks, one window each")
    p.add_argument("--start", type=int, default=100, help="first latent frame of each window")
    p.add_argument("--frames", type=int, default=256)
    p.add_argument("--sigmas", default="0.03,0.1,0.3,1.0")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    sigmas = [float(s) for s in args.sigmas.split(",")]
    raw = windows(args.latents.expanduser(), args.split, args.n, args.start, args.frames)
    B, K, C, T = raw.shape
    print(f"{B} windows of {T} frames from {args.latents / args.split}; noise power left after one call:")
    print("checkpoint | " + " | ".join(f"sigma {s}" for s in sigmas))
    baseline = None
    for ckpt in args.checkpoints:
        model, _, _, stats = load_diffusion(Path(ckpt).expanduser())
        if model.cfg.latent_dim != C or model.cfg.K != K:
            raise SystemExit(f"{ckpt}: a model of {model.cfg.K} x {model.cfg.latent_dim} channels, "
                             f"the latents have {K} x {C}")
        zn = ((raw - stats["latent_mean"].view(1, 1, C, 1)) / stats["latent_std"].view(1, 1, C, 1)).reshape(B, K * C, T)
        rows = [noise_left(model, zn, s, args.seed + i) for i, s in enumerate(sigmas)]
        print(f"{Path(ckpt).name} | " + " | ".join(f"{d:.3f}" for d, _ in rows))
        baseline = baseline or rows
    print("[1, 2, 1] / 4 moving average | " + " | ".join(f"{a:.3f}" for _, a in baseline))


if __name__ == "__main__":
    main()
