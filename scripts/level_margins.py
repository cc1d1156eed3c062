"""How far under the loudest other stem a real, sounding stem goes, window by window.

    python scripts/level_margins.py ~/.cache/msldm/data/full/train --tracks 500
    python scripts/level_margins.py ~/.cache/msldm/data/multi/test --given drums,piano --under -21

For every track folder (`TrackNNNNN/{bass,drums,guitar,piano}.wav`) the stems are cut into
windows of the daemon's length (256 latent frames x 320 = 81920 samples, a new window every
3/4 of that, as the daemon steps); in each window where a stem sounds (RMS above
`--floor` dBFS) its RMS level is taken against the loudest of the other three stems' (with `--given`: of
those stems only, as the daemon judges a request). Prints, per stem, the count of windows and
the percentiles of that margin (dB, negative: quieter); with `--under X`, also the share of
windows whose margin is under X dB (how often the daemon would sample a real part again).

The daemon's `BURIED_DB` (`server/windowing.py`) comes from this table: a generated part
further under the given stems than real parts go in all but 1 window in 100 is a failed take.
Reads nothing but the audio files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf

from msldm.config import STEMS
from msldm.eval.dsp import level_db


def margins(track: Path, window: int, hop: int, floor_db: float,
            given: tuple[str, ...] | None = None) -> dict[str, list[float]]:
    """Per stem, its level minus the loudest other stem's (of `given` only, where given; a
    stem of `given` is then not measured), over the windows where it sounds."""
    missing = [s for s in STEMS if not (track / f"{s}.wav").is_file()]
    if missing:
        raise SystemExit(f"{track}: no {', '.join(f'{s}.wav' for s in missing)} (every stem is needed)")
    audio = {s: sf.read(track / f"{s}.wav", dtype="float32", always_2d=True)[0].mean(axis=1) for s in STEMS}
    n = min(len(a) for a in audio.values())
    out: dict[str, list[float]] = {s: [] for s in STEMS}
    for start in range(0, max(1, n - window + 1), hop):
        lv = {s: level_db(a[start:start + window]) for s, a in audio.items()}
        for s in STEMS:
            against = [o for o in (given or STEMS) if o != s]
            if lv[s] > floor_db and against and not (given and s in given):
                out[s].append(lv[s] - max(lv[o] for o in against))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", type=Path, help="a folder of TrackNNNNN folders (a corpus split)")
    p.add_argument("--tracks", type=int, default=500, help="the first N tracks by name (default 500)")
    p.add_argument("--window", type=int, default=256 * 320, help="samples per window (default 81920)")
    p.add_argument("--floor", type=float, default=-55.0, help="a stem sounds in a window above this RMS (dBFS)")
    p.add_argument("--percentiles", default="0.5,1,5,50")
    p.add_argument("--given", default=None, help="comma-separated stems to measure against (default: the other three)")
    p.add_argument("--under", type=float, default=None, help="also print the share of windows under this margin (dB)")
    args = p.parse_args(argv)
    tracks = sorted(t for t in args.root.glob("Track*") if t.is_dir())[: args.tracks]
    if not tracks:
        raise SystemExit(f"no TrackNNNNN folders under {args.root}")
    try:
        pcts = [float(v) for v in args.percentiles.split(",")]
    except ValueError:
        raise SystemExit(f"--percentiles: comma-separated numbers, got {args.percentiles!r}") from None
    given = tuple(args.given.split(",")) if args.given else None
    if given and not set(given) <= set(STEMS):
        raise SystemExit(f"--given: stems are {', '.join(STEMS)}")
    acc: dict[str, list[float]] = {s: [] for s in STEMS}
    for t in tracks:
        for s, v in margins(t, args.window, args.window * 3 // 4, args.floor, given).items():
            acc[s] += v
    against = "loudest of " + ",".join(given) if given else "loudest other stem"
    print(f"{len(tracks)} tracks of {args.root}; margin = stem - {against} (dB), windows of {args.window} samples")
    under = "" if args.under is None else f"  under {args.under:g}"
    print("stem     windows  " + "  ".join(f"p{q:g}".rjust(6) for q in pcts) + under)
    for s in STEMS:
        v = np.asarray(acc[s])
        if not len(v):
            continue
        cells = "  ".join(f"{np.percentile(v, q):6.1f}" for q in pcts)
        share = "" if args.under is None else f"  {float(np.mean(v < args.under)):.4f}"
        print(f"{s:7s}  {len(v):7d}  {cells}{share}")


if __name__ == "__main__":
    main()
