"""How loud a bundle's generated stems come out against the given ones, window by window.

    python scripts/window_levels.py msldm/assets/bundle --generate bass,guitar --clips 12

Generates the stems `--generate` for `--clips` test clips of `--seconds` (12) (the evaluation's draw, seed 0:
`msldm.eval.data.load_segments`) with the other stems given, exactly as the daemon does
(`server.windowing.generate_region`), and prints per window index the mean over clips of each
generated stem's level minus the given stems' (`server.levels.given_level_db`) over the samples
that window streamed, with `--level model` (the decoder's level, the default here) or `balance`.
The daemon's level balance judges its gain on every window so far because of what this shows on
the bundled model: its first window sits lower against the given stems than its later ones.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from msldm.eval.data import load_segments
from msldm.eval.dsp import level_db
from server.levels import given_level_db
from server.runtime import Bundle, BundleError
from server.windowing import generate_region


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("--generate", default="bass,guitar", help="stems to generate (the others are given)")
    p.add_argument("--data", type=Path, default=Path.home() / ".cache/msldm/data/multi")
    p.add_argument("--split", default="test")
    p.add_argument("--clips", type=int, default=12)
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--level", choices=("model", "balance"), default="model")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    try:
        bundle = Bundle.load(args.bundle, threads=args.threads)
    except BundleError as e:
        raise SystemExit(f"{args.bundle}: {e}") from None
    made = [s for s in args.generate.split(",") if s]
    if not made or any(s not in bundle.stems for s in made):
        raise SystemExit(f"--generate: stems of {', '.join(bundle.stems)}, comma-separated")
    given_names = [s for s in bundle.stems if s not in made]
    rows: dict[int, list[dict[str, float]]] = {}
    for i, seg in enumerate(load_segments(args.data, args.clips, args.seconds, split=args.split, seed=0)):
        given = {s: seg.stems[s].astype(np.float32) for s in given_names}
        n = len(next(iter(seg.stems.values())))
        for piece in generate_region(bundle, given, made, n, seed=1000 + i, level=args.level):
            span = slice(piece.start, piece.start + len(piece.stems[made[0]]))
            g = given_level_db([a[span] for a in given.values()])
            if g is not None:
                rows.setdefault(piece.window, []).append({s: level_db(piece.stems[s]) - g for s in made})
    print("window  " + "  ".join(f"{s:>8s}" for s in made) + "   clips   (generated minus given, dB)")
    for w, r in sorted(rows.items()):
        print(f"{w:6d}  " + "  ".join(f"{np.mean([x[s] for x in r]):+8.2f}" for s in made) + f"   {len(r):5d}")


if __name__ == "__main__":
    main()
