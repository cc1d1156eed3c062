"""Join latent folders made by `msldm data latents` into one, by symbolic links (no copies).

    python scripts/merge_latents.py --out ~/.cache/msldm/data/mix-latents \
        ~/.cache/msldm/data/multi-latents ~/.cache/msldm/data/full:train=~/.cache/msldm/data/full-latents

Each source is `DIR` (all its splits) or `PREFIX:SPLIT[,SPLIT]=DIR` (only those splits, track
names prefixed with `PREFIX-` so that equal names from two corpora do not collide). Every
source must come from the same SourceVAE (same header). `stats.json` (the normalisation the
denoiser trains with) is taken from the first source, or with `--stats-from CKPT` from a
diffusion checkpoint's `latent_mean` / `latent_std`, so that a model warm-started from it
keeps the normalisation it was trained with.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from msldm.atomic import atomic_write_text

HEADER_KEYS = ("format", "version", "stems", "hop", "latent_dim", "sample_rate", "vae_sha256")


def _parse(source: str) -> tuple[str, tuple[str, ...] | None, Path]:
    if "=" not in source:
        return "", None, Path(source).expanduser()
    spec, folder = source.split("=", 1)
    prefix, _, splits = spec.rpartition(":")
    return Path(prefix).name, tuple(s for s in splits.split(",") if s), Path(folder).expanduser()


def stats_of_checkpoint(path: Path) -> dict:
    """The latent statistics a diffusion checkpoint was trained with, as `stats.json` holds them."""
    from msldm.checkpoint import load_diffusion

    stats = load_diffusion(path)[3]
    return {"latent_mean": stats["latent_mean"].tolist(), "latent_std": stats["latent_std"].tolist(),
            "from_checkpoint": str(path)}


def _index(folder: Path) -> dict:
    path = folder / "index.json"
    if not path.is_file():
        raise SystemExit(f"{folder} is not a latents folder (no index.json): make it with `msldm data latents`")
    return json.loads(path.read_text())


def merge(out: Path, sources: list[str], stats_from: Path | None = None) -> dict:
    """Links every source's tracks into `out`; returns {split: tracks}. All sources are read
    and checked before anything is written."""
    parsed = [(prefix, splits, folder, _index(folder)) for prefix, splits, folder in map(_parse, sources)]
    first = parsed[0][3]
    merged = {k: v for k, v in first.items() if k != "splits"} | {"splits": {}, "sources": []}
    links: list[tuple[Path, Path]] = []
    for prefix, splits, folder, index in parsed:
        diff = [k for k in HEADER_KEYS if index.get(k) != first.get(k)]
        if diff:
            raise SystemExit(f"{folder} was made differently from the first source ({', '.join(diff)})")
        merged["sources"].append(str(folder))
        for split, tracks in index["splits"].items():
            if splits is not None and split not in splits:
                continue
            target = merged["splits"].setdefault(split, {})
            for name, frames in tracks.items():
                new = f"{prefix}-{name}" if prefix else name
                if new in target:
                    raise SystemExit(f"track {new} of {folder} is already in {split}: give the source a prefix")
                target[new] = frames
                links += [(out / split / f"{new}{suffix}", (folder / split / f"{name}{suffix}").resolve())
                          for suffix in (".npy", ".rms.npy")]
    stats = (json.dumps(stats_of_checkpoint(stats_from)) if stats_from is not None
             else (parsed[0][2] / "stats.json").read_text())
    for link, target in links:
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(target, link)
    atomic_write_text(out / "stats.json", stats)
    atomic_write_text(out / "index.json", json.dumps(merged, indent=1))  # last: the folder is usable
    return {split: len(tracks) for split, tracks in merged["splits"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--stats-from", type=Path, default=None, metavar="CKPT",
                        help="take the normalisation from this diffusion checkpoint")
    parser.add_argument("sources", nargs="+")
    args = parser.parse_args()
    print(merge(args.out.expanduser(), args.sources, args.stats_from))


if __name__ == "__main__":
    main()
