"""`msldm data latents`: encode a Slakh-layout folder with a trained SourceVAE (posterior mean).

Example:

    msldm data latents --vae runs/vae/vae.safetensors --data data/synth --out data/latents

Resumable (tracks already written are skipped), batched, on CUDA when there is one. Writes
`<out>/<split>/<track>.npy` `[K, C, T]`, `index.json` and `stats.json` (per-channel
`latent_mean` / `latent_std`, the normalisation the diffusion model trains with).
"""

from __future__ import annotations

import argparse

_EXAMPLE = __doc__


def _run(args: argparse.Namespace) -> None:
    from msldm.checkpoint import load_vae
    from msldm.data.latents import extract_latents
    from msldm.hashing import sha256_file
    from msldm.checkpoint import pick_device

    device = pick_device(args.device)
    vae, config, _ = load_vae(args.vae, device)
    meta = {"vae_checkpoint": str(args.vae), "vae_sha256": sha256_file(args.vae),
            "config": config.to_dict()}
    index = extract_latents(vae, args.data, args.out, stems=config.diffusion.stems,
                            splits=args.splits, sample_rate=config.vae.sample_rate,
                            batch=args.batch, window_frames=args.window_frames, device=device,
                            dtype=args.dtype, sigma_data=config.diffusion.sigma_data, meta=meta,
                            progress=not args.no_progress)
    counts = {s: len(t) for s, t in index["splits"].items()}
    print(f"latents in {args.out}: {counts} tracks")


def add_latents_parser(data_subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `latents` to the `msldm data` group's subparsers; returns the new parser."""
    p = data_subparsers.add_parser("latents", help="encode stems into SourceVAE latents",
                                   description=_EXAMPLE,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vae", required=True, help="SourceVAE checkpoint (.safetensors)")
    p.add_argument("--data", required=True, help="Slakh root (either layout) with split folders")
    p.add_argument("--out", required=True, help="latents folder (resumed if it exists)")
    p.add_argument("--splits", nargs="+", default=["train", "validation", "test"])
    p.add_argument("--batch", type=int, default=8, help="windows encoded per batch")
    p.add_argument("--window-frames", type=int, default=512, help="latent frames per window")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run)
    return p

