"""Size the CPU denoiser by measurement: parameters, training steps per minute, validation loss
after equal CPU time, and the daemon's real-time factor on the README's main job.

    .venv/bin/python scripts/size_denoiser.py --latents ~/.cache/msldm/data/multi-latents \
        --vae msldm/assets/vae-spectral/vae.safetensors --minutes 3.5 --out /tmp/sizing

Every candidate is the `spectral` preset with another U-Net and window; each trains from the
same seed for the same wall time on this machine's threads (run nothing else meanwhile), is
then scored on the same validation chunks (EDM loss with fixed noise), exported with the
SourceVAE, and timed through a daemon process on a 12 s region (2 given, 2 generated stems,
the preset's sampler). Prints a markdown table and writes `<out>/sizing.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from msldm.config import UNetConfig, get_preset

_B = UNetConfig(channels=(128, 192, 256), factors=(1, 2, 2), blocks=(1, 1, 1), attentions=(False, True, True),
                attention_heads=4, attention_head_dim=32, embedding_dim=128, norm_groups=16)
CANDIDATES = {
    # name: (U-Net, window frames)
    "A-64/256": (dataclasses.replace(_B, channels=(64, 128, 192)), 256),
    "B-128/256": (_B, 256),
    "B-128/832": (_B, 832),
    "C-256/256": (dataclasses.replace(_B, channels=(256, 256, 384), blocks=(1, 1, 2), attention_heads=8,
                                      embedding_dim=256), 256),
}


def candidate_config(name: str, latents: str):
    from msldm.train.runs import diffusion_config

    unet, window = CANDIDATES[name]
    base = get_preset("spectral")
    unet = dataclasses.replace(unet, in_channels=base.diffusion.unet.in_channels)
    base = dataclasses.replace(base, name=f"sizing-{name}",
                               diffusion=dataclasses.replace(base.diffusion, unet=unet, window_frames=window))
    return diffusion_config(base, latents)


def train_for(config, latents: str, seconds: float, batch: int, lr: float, val_batches: int, out: Path):
    from msldm.data.latents import load_stats
    from msldm.train.distributed import DistInfo
    from msldm.train.runs import diffusion_datasets
    from msldm.train.tasks import DiffusionTask

    torch.manual_seed(0)
    train_set, val_set = diffusion_datasets(config, latents)
    task = DiffusionTask(config, DistInfo(), load_stats(latents), lr=lr, amp=False, seed=0)
    g = torch.Generator().manual_seed(0)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        idx = torch.randint(len(train_set), (batch,), generator=g).tolist()
        task.train_step(torch.stack([train_set[i] for i in idx]), steps)
        steps += 1
    wall = time.perf_counter() - t0
    vg = torch.Generator().manual_seed(1)
    vidx = torch.randint(len(val_set), (val_batches * batch,), generator=vg).tolist()
    losses = [task.val_step(torch.stack([val_set[i] for i in vidx[b * batch:(b + 1) * batch]]))["loss"]
              for b in range(val_batches)]
    ckpt = task.export(out / "diffusion.safetensors", task.modules["denoiser"], {"sizing": True})
    params = sum(p.numel() for p in task.modules["denoiser"].parameters())
    return {"params": params, "steps": steps, "steps_per_min": 60 * steps / wall,
            "val_loss": sum(losses) / len(losses), "ckpt": str(ckpt)}


def daemon_rtf(vae: str, ckpt: str, out: Path, seconds: float = 12.0) -> dict:
    from export.onnx_export import export_bundle
    from server.bench import bench_server

    export_bundle(vae, ckpt, out / "bundle")
    row = bench_server(out / "bundle", [seconds], repeats=2)[0]
    return {"daemon_s": row.daemon_total, "first_audio_s": row.daemon_first,
            "rtf": row.daemon_total / seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latents", required=True)
    ap.add_argument("--vae", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=3.5, help="training wall time per candidate")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--val-batches", type=int, default=16)
    ap.add_argument("--only", nargs="*", default=None, help="candidate names (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    rows = {}
    for name in args.only or CANDIDATES:
        out = Path(args.out) / name.replace("/", "_")
        out.mkdir(parents=True, exist_ok=True)
        config = candidate_config(name, args.latents)
        row = train_for(config, args.latents, 60 * args.minutes, args.batch, args.lr, args.val_batches, out)
        row.update(daemon_rtf(args.vae, row["ckpt"], out))
        row["window_frames"] = config.diffusion.window_frames
        rows[name] = row
        print(json.dumps({name: row}), flush=True)
    (Path(args.out) / "sizing.json").write_text(json.dumps(rows, indent=1))
    print(f"\n| U-Net / window | parameters | steps/min (batch {args.batch}) | val loss after {args.minutes} min "
          "| daemon 12 s (s) | first audio (s) | RTF |\n|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['params'] / 1e6:.2f}M | {r['steps_per_min']:.0f} | {r['val_loss']:.4f} "
              f"| {r['daemon_s']:.2f} | {r['first_audio_s']:.2f} | {r['rtf']:.3f} |")


if __name__ == "__main__":
    main()
