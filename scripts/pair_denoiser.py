"""Pair a denoiser checkpoint with another SourceVAE, its weights untouched: the same tensors
(dtypes kept, the latent statistics too), the config's `vae` and `vae_loss` taken from the VAE,
and `meta` saying which VAE it was paired with and that it was not trained on that VAE's latents.

    python scripts/pair_denoiser.py DENOISER.safetensors VAE.safetensors OUT.safetensors --note "why"

`msldm export` refuses a denoiser and a VAE whose latent configs differ; a VAE trained on from
another (a widened encoder, a decoder fine-tune) can keep latents near enough that the denoiser
reads them as they are, which only generation measures can say (`docs/eval/model-history.md`,
"Twenty-seventh session": the shipped denoiser with the next SourceVAE, measured on every
request). The pairing is what `scripts/timing_bundle.py` does for timing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from msldm.atomic import atomic_path  # noqa: E402
from msldm.checkpoint import read_checkpoint  # noqa: E402
from msldm.hashing import sha256_file  # noqa: E402


def pair(diffusion: str | Path, vae: str | Path, out: str | Path, note: str = "") -> Path:
    """Write `out`: `diffusion`'s tensors with `vae`'s latent config. Returns `out`."""
    diffusion, vae, out = Path(diffusion), Path(vae), Path(out)
    vae_cfg = read_checkpoint(vae, "vae")[0]
    cfg, _, _, meta = read_checkpoint(diffusion, "diffusion")  # checks the file and its kind
    shape = ("latent_dim", "hop", "sample_rate")  # what the denoiser's tensors and windows assume
    differ = [f"{k} {getattr(cfg.vae, k)} against {getattr(vae_cfg.vae, k)}" for k in shape
              if getattr(cfg.vae, k) != getattr(vae_cfg.vae, k)]
    if differ:
        raise ValueError(f"{vae} cannot pair with {diffusion}: its latents differ in shape "
                         f"({'; '.join(differ)})")
    with safe_open(str(diffusion), framework="pt") as f:
        metadata = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    cfg = dataclasses.replace(cfg, vae=vae_cfg.vae, vae_loss=vae_cfg.vae_loss)
    meta = dict(meta) | {"paired_vae": {"file": vae.name, "sha256": sha256_file(vae),
                                        "denoiser": diffusion.name, "note": note or "weights unchanged"}}
    metadata.update(config=cfg.to_json(), meta=json.dumps(meta, sort_keys=True))
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("diffusion")
    ap.add_argument("vae")
    ap.add_argument("out")
    ap.add_argument("--note", default="", help="why the pair, kept in the checkpoint's meta")
    a = ap.parse_args(argv)
    try:
        print(pair(a.diffusion, a.vae, a.out, a.note))
    except ValueError as e:  # CheckpointError too: a usage error, no traceback, nothing written
        raise SystemExit(f"pair_denoiser: {e}") from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
