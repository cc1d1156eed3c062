"""Pack a latent cache's training windows small enough to travel to a lent GPU, and unpack them there.

A GPU run (scripts/train_denoiser_gpu.sh) gets its data through a 64 MiB copy per call, and the
mix4 cache is 5.4 GB of float32 tracks. The trainer only ever reads the windows that pass its
activity filter, so `pack` keeps exactly those (the same `LatentChunks` selection), normalises them
with the cache's stats, rounds to a step of `--step` standard deviations (int8), codes each
channel's frames as differences from the previous frame and compresses with LZMA. The windows are
dealt round-robin into `--parts` parts, each a fair sample of the whole, so a part that never
arrives costs data, not coverage. On 2026-12-04, step 0.08 kept the error at 0.023 of a standard
deviation (0.045 of a window's own spread) and packed 5266 windows into 148 MiB.

`unpack` writes a latent cache (index.json, stats.json, one `.npy` per window) that
`msldm train diffusion --latents` reads as is; every frame's stored RMS is 1, since the windows
were chosen by the filter already.

    python scripts/pack_latents.py pack --latents ~/.cache/msldm/data/mix4-latents --out P \\
        --parts 3 --frame-threshold-db -50 --min-frame-share 0.6
    python scripts/pack_latents.py unpack --out LATENTS P/part0 P/part1 P/part2
"""

from __future__ import annotations

import argparse
import json
import lzma
import sys
from pathlib import Path

import numpy as np

MAGIC = "msldm-packed-latents"
VERSION = 1


def encode(z: np.ndarray, step: float) -> bytes:
    """Normalised windows `[N, K, C, T]` -> LZMA bytes of int8 frame-to-frame differences."""
    q = np.clip(np.round(z / step), -127, 127).astype(np.int8)
    d = np.diff(q.astype(np.int16), axis=-1, prepend=np.zeros(q.shape[:-1] + (1,), np.int16))
    return lzma.compress(d.astype(np.int8).tobytes(), preset=6)  # wraps mod 256; decode undoes it


def decode(blob: bytes, shape: tuple[int, ...], step: float) -> np.ndarray:
    """Inverse of `encode` up to rounding: float32 normalised windows of `shape`."""
    d = np.frombuffer(lzma.decompress(blob), np.int8).reshape(shape)
    q = np.cumsum(d.astype(np.uint8), axis=-1, dtype=np.uint8).view(np.int8)  # sums mod 256
    return q.astype(np.float32) * np.float32(step)


def _stats(latents: Path) -> tuple[np.ndarray, np.ndarray]:
    stats = json.loads((latents / "stats.json").read_text())
    mean = np.asarray(stats["latent_mean"], np.float32)[None, :, None]
    std = np.asarray(stats["latent_std"], np.float32)[None, :, None]
    return mean, std


def pack(args: argparse.Namespace) -> None:
    from msldm.data.latents import ActivityFilter, LatentChunks

    src, out = Path(args.latents).expanduser(), Path(args.out)
    header = json.loads((src / "index.json").read_text())
    mean, std = _stats(src)
    kw = {"min_frame_share": args.min_frame_share}
    if args.frame_threshold_db is not None:
        kw["frame_threshold"] = 10 ** (args.frame_threshold_db / 20)
    sizes = []
    for k in range(args.parts):
        (out / f"part{k}").mkdir(parents=True, exist_ok=True)
    for split, limit in (("train", args.max_windows), ("validation", args.max_val_windows)):
        if split not in header["splits"]:
            continue
        ds = LatentChunks(src, split, args.window, activity=ActivityFilter(**kw))
        n = len(ds) if limit is None else min(len(ds), limit)
        order = np.random.default_rng(args.seed).permutation(len(ds))[:n]
        parts = range(args.parts) if split == "train" else (0,)
        for k in parts:
            picked = order[k::len(parts)]
            if not len(picked):
                continue
            z = np.stack([(ds[int(i)].numpy() - mean) / std for i in picked])
            names = [f"{ds.names[ds.index[int(i)][0]]}@{ds.index[int(i)][1]}" for i in picked]
            blob = encode(z, args.step)
            stem = out / f"part{k}" / split
            stem.with_suffix(".xz").write_bytes(blob)
            stem.with_suffix(".json").write_text(json.dumps(
                {"format": MAGIC, "version": VERSION, "split": split, "step": args.step,
                 "shape": list(z.shape), "names": names}))
            sizes.append(len(blob))
            print(f"part{k} {split}: {len(picked)} windows, {len(blob) / 2**20:.1f} MiB", flush=True)
    keep = {k: v for k, v in header.items() if k != "splits"}
    for k in range(args.parts):
        (out / f"part{k}" / "header.json").write_text(json.dumps(
            {"index": keep, "stats": json.loads((src / "stats.json").read_text()),
             "window": args.window}))
    print(f"packed {sum(sizes) / 2**20:.1f} MiB in {args.parts} parts under {out}")


def unpack(args: argparse.Namespace) -> None:
    out = Path(args.out)
    index = None
    splits: dict[str, dict[str, int]] = {}
    mean = std = None
    for part in map(Path, args.parts):
        meta = json.loads((part / "header.json").read_text())
        if index is None:
            index, first = meta["index"], meta
            (out).mkdir(parents=True, exist_ok=True)
            (out / "stats.json").write_text(json.dumps(meta["stats"]))
            mean = np.asarray(meta["stats"]["latent_mean"], np.float32)[None, :, None]
            std = np.asarray(meta["stats"]["latent_std"], np.float32)[None, :, None]
        elif meta != first:
            raise SystemExit(f"{part} was packed from another cache or window than {args.parts[0]}")
        for info_path in sorted(part.glob("*.json")):
            info = json.loads(info_path.read_text())
            if info.get("format") != MAGIC:
                continue
            if info["version"] != VERSION:
                raise SystemExit(f"{info_path}: packed with version {info['version']}, not {VERSION}")
            z = decode(info_path.with_suffix(".xz").read_bytes(), tuple(info["shape"]), info["step"])
            x = z * std + mean
            split = info["split"]
            (out / split).mkdir(exist_ok=True)
            ones = np.ones(x.shape[1:2] + x.shape[3:], np.float32)  # [K, T]: chosen by the filter
            for name, window in zip(info["names"], x):
                safe = name.replace("@", "_at")
                np.save(out / split / f"{safe}.npy", window)
                np.save(out / split / f"{safe}.rms.npy", ones)
                splits.setdefault(split, {})[safe] = int(window.shape[-1])
            print(f"{part}: {len(info['names'])} {split} windows", flush=True)
    if index is None:
        raise SystemExit("no parts given")
    (out / "index.json").write_text(json.dumps({**index, "splits": splits}, indent=1))
    print(f"unpacked {sum(map(len, splits.values()))} windows into {out}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("pack", help="latent cache -> compressed parts")
    a.add_argument("--latents", required=True)
    a.add_argument("--out", required=True)
    a.add_argument("--parts", type=int, default=3)
    a.add_argument("--step", type=float, default=0.08, help="rounding step, in standard deviations")
    a.add_argument("--window", type=int, default=256, help="window frames (the preset's)")
    a.add_argument("--frame-threshold-db", type=float, default=None)
    a.add_argument("--min-frame-share", type=float, default=0.6)
    a.add_argument("--max-windows", type=int, default=None)
    a.add_argument("--max-val-windows", type=int, default=256)
    a.add_argument("--seed", type=int, default=0)
    a.set_defaults(func=pack)
    b = sub.add_parser("unpack", help="parts -> a latent cache the trainer reads")
    b.add_argument("--out", required=True)
    b.add_argument("parts", nargs="+")
    b.set_defaults(func=unpack)
    args = p.parse_args(argv)
    if getattr(args, "parts", 1) is not None and args.command == "pack" and args.parts < 1:
        sys.exit("--parts must be at least 1")
    args.func(args)


if __name__ == "__main__":
    main()
