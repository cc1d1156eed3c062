"""Measure the balance table of real stems (`server.levels`) and write it into a bundle's manifest.

    python scripts/level_balance.py ~/.cache/msldm/data/multi/train --tracks 600 \
        --bundle msldm/assets/bundle --source "10-hour corpus, train split, 600 tracks"

For every track folder (`TrackNNNNN/{bass,drums,guitar,piano}.wav`, at the bundle's rate) the
stems are cut into windows of the bundle's length (`window_frames` x `hop` samples, a new one
every 3/4 of that, as the daemon steps); for every stem and every set of the other stems, the
median of the stem's level minus the set's (`server.levels.measure_balance`) over the windows
where both sound. Prints the table (dB, and the windows behind each figure); with `--bundle`,
writes it as the manifest's `level_balance` block (the graphs, and so their hashes, untouched).
Measure it on the corpus the bundle's denoiser was trained on, never on an evaluation split.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import soundfile as sf

from server.levels import LevelBalance, measure_balance


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", type=Path, help="a folder of TrackNNNNN folders (a training split)")
    p.add_argument("--tracks", type=int, default=600, help="that many tracks, drawn with --seed (default 600)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bundle", type=Path, default=None, help="write the table into this bundle's manifest.json")
    p.add_argument("--source", default="", help="what the table was measured on (kept in the manifest)")
    args = p.parse_args(argv)
    bundle = args.bundle
    if bundle and not (bundle / "manifest.json").is_file():
        raise SystemExit(f"{bundle}: no manifest.json (not a model bundle)")
    manifest = json.loads((bundle / "manifest.json").read_text()) if bundle else None
    stems = tuple(manifest["stems"]) if manifest else ("bass", "drums", "guitar", "piano")
    rate = int(manifest["sample_rate"]) if manifest else 22050
    window = int(manifest["window_frames"]) * int(manifest["hop"]) if manifest else 256 * 320
    folders = sorted(t for t in args.root.glob("Track*") if t.is_dir())
    if not folders:
        raise SystemExit(f"{args.root}: no Track* folders")
    picked = sorted(np.random.default_rng(args.seed).permutation(len(folders))[: args.tracks])

    def tracks():  # one track in memory at a time
        for i in picked:
            missing = [s for s in stems if not (folders[i] / f"{s}.wav").is_file()]
            if missing:
                raise SystemExit(f"{folders[i]}: no {', '.join(f'{s}.wav' for s in missing)} (every stem is needed)")
            track = {}
            for s in stems:
                audio, sr = sf.read(folders[i] / f"{s}.wav", dtype="float32", always_2d=True)
                if sr != rate:
                    raise SystemExit(f"{folders[i] / f'{s}.wav'}: {sr} Hz, the bundle's rate is {rate} Hz")
                track[s] = audio.mean(axis=1)
            yield track

    table = measure_balance(tracks(), stems, window, window * 3 // 4)
    for stem, row in table.items():
        print(stem, "  ".join(f"{k} {v:+.1f} ({n})" for k, (v, n) in sorted(row.items())))
    if bundle:
        block = {"source": args.source or f"{args.root}, {len(picked)} tracks",
                 "offsets_db": {s: {k: round(v, 2) for k, (v, _) in sorted(row.items())} for s, row in table.items()}}
        LevelBalance.from_manifest(block, stems)  # the runtime's check, before anything is written
        manifest["level_balance"] = block
        from export.manifest import write_manifest
        write_manifest(bundle, manifest)
        print(f"wrote level_balance into {bundle / 'manifest.json'}")


if __name__ == "__main__":
    main()
