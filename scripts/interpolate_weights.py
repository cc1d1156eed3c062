"""Interpolate two denoiser checkpoints of one U-Net: (1 - a) * A + a * B, tensor by tensor.

    python scripts/interpolate_weights.py msldm/assets/cpu/diffusion.safetensors \
        ~/.cache/msldm/runs/given1-ema-step6465.safetensors 0.5 OUT.safetensors

The interpolation of robust fine-tuning (WiSE-FT) between a model and its fine-tuned
descendant. B may be a conditional model warm-started from A (`cpu_given` from `cpu`): its
conditioning convolution, absent from A, counts as zero there (as it started). The output has
B's config, statistics and metadata, except that its `meta` says what was mixed (`interpolated`:
each side's file name and training step, or its own `interpolated` where it was a mix itself,
and the weight) in place of one training step; `msldm export --diffusion OUT ...` makes a bundle
of it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file


def _read(path: str):
    with safe_open(path, framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


def _origin(path: str, metadata: dict) -> dict:
    """What a checkpoint is, for the mix's metadata: its file and step, or the mix it was."""
    meta = json.loads(metadata.get("meta", "{}"))
    if "interpolated" in meta:
        return {"file": Path(path).name, "interpolated": meta["interpolated"]}
    return {"file": Path(path).name, "step": meta.get("step")}


def interpolate(a_path: str, b_path: str, a: float, out: str) -> int:
    """Writes `out`; returns the number of tensors interpolated."""
    if not 0.0 <= a <= 1.0:
        raise SystemExit(f"the weight of B must be in [0, 1], got {a}")
    A, meta_a = _read(a_path)
    B, meta = _read(b_path)
    mix = json.loads(meta.get("meta", "{}"))
    mix.pop("step", None)  # no single training step describes a mix
    mix["interpolated"] = {"a": _origin(a_path, meta_a), "b": _origin(b_path, meta), "weight_b": a}
    meta = {**meta, "meta": json.dumps(mix, sort_keys=True)}
    extra = [k for k in A if k not in B]
    if extra:
        raise SystemExit(f"{a_path} has tensors {b_path} lacks ({extra[:3]}...): not the same U-Net")
    mixed, n = {}, 0
    for k, v in B.items():
        if k.startswith("extra.") or not v.is_floating_point():  # statistics and buffers: B's
            mixed[k] = v
            continue
        if k in A and A[k].shape != v.shape:
            raise SystemExit(f"{k}: shape {tuple(A[k].shape)} in A, {tuple(v.shape)} in B")
        base = A[k].float() if k in A else 0.0 * v.float()  # B's conditioning input starts at zero
        mixed[k] = ((1 - a) * base + a * v.float()).to(v.dtype)
        n += 1
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(out).with_suffix(".partial")
    save_file(mixed, str(tmp), metadata=meta)
    tmp.replace(out)
    return n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", help="checkpoint A (weight 1 - a)")
    p.add_argument("b", help="checkpoint B (weight a); its config is the output's")
    p.add_argument("weight", type=float, help="a: the weight of B, in [0, 1]")
    p.add_argument("out")
    args = p.parse_args()
    n = interpolate(args.a, args.b, args.weight, args.out)
    print(f"{args.out}: {n} tensors at {1 - args.weight:g} x A + {args.weight:g} x B")


if __name__ == "__main__":
    main()
