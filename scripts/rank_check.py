"""Does the daemon's take ranking (`server.fit`) pick the takes the evaluation's ruler prefers?

Input: several draws of one `msldm eval` on the same clips, each run with `--save-examples N`
(N = the clips, so every generation's audio is kept) and one task (BG by default). For every
clip the draws are its takes; the script scores each take with `server.fit` against the clip's
real given stems, ranks them, and prints the ruler's figures (pooled, normalised as the eval
report's "norm (pooled)") of the take ranked first, of an average take (the mean over draws)
and of the best take the ruler itself would pick (an upper bound), with the within-clip rank
correlation of estimate and ruler.

    .venv/bin/python scripts/rank_check.py --data ~/.cache/msldm/data/multi/test [--tempo] \\
        R0 R1 R2        # eval output folders of draws 0, 1, 2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scipy.stats import spearmanr  # noqa: E402

from msldm.eval.data import _make_segment, _read_track  # noqa: E402  (the eval's own segment reader)
from msldm.wavio import read_audio  # noqa: E402
from server import fit  # noqa: E402
from server.requests import beat_seconds  # noqa: E402

STEMS = ("bass", "drums", "guitar", "piano")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation of two score vectors; NaN where either is constant or has NaNs."""
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0 or np.isnan(b).any():
        return float("nan")
    return float(spearmanr(a, b)[0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="eval output folders (draws of the same clips)")
    ap.add_argument("--data", required=True, help="the split's folder of TrackNNNNN (the eval's --data + split)")
    ap.add_argument("--task", default="BG", help="the task whose takes are ranked (default BG)")
    ap.add_argument("--tempo", action="store_true",
                    help="give the scorer each clip's annotated tempo, as a DAW sends `region.tempo` "
                         "(the clips start on a downbeat); without it the grid is estimated from the audio")
    args = ap.parse_args(argv)
    metrics = [json.loads((Path(r) / "metrics.json").read_text()) for r in args.runs]
    targets = [STEMS[i] for i, c in enumerate("BDGP") if c in args.task]
    given_names = [s for s in STEMS if s not in targets]
    segs = metrics[0]["segments"]
    sr = int(metrics[0]["config"].get("sample_rate", 22050))
    n = int(round(float(metrics[0]["config"]["seconds"]) * sr))
    takes = len(args.runs)
    est = np.zeros((len(segs), takes))  # take score
    ruler = {s: {k: np.zeros((len(segs), takes)) for k in ("rhythmic", "harmonic", "level_db", "empty")}
             for s in targets}
    for d, m in enumerate(metrics):
        per_clip = m["tasks"][args.task]["per_clip"]
        for s in targets:
            for k in ruler[s]:  # None (a fit total generation does not score): NaN
                ruler[s][k][:, d] = [np.nan if v is None else v for v in per_clip[s][k]]
    for i, seg in enumerate(segs):  # each clip's given stems read and featured once, for all its takes
        track = Path(args.data) / seg["track"]
        clip = _make_segment(track, *_read_track(track, sr), float(seg.get("offset", 0.0)), n / sr, sr)
        beat = None
        if args.tempo:  # the clip's annotated tempo, as a DAW sends `region.tempo`
            beat = beat_seconds({"tempo": clip.tempo, "meter": (clip.annotation or {}).get("meter", [4, 4])})
        scorer = fit.Scorer({s: clip.stems[s] for s in given_names}, sr, beat)
        for d, run in enumerate(args.runs):
            gen = {}
            for s in targets:
                a = read_audio(Path(run) / "audio" / args.task / f"{i:03d}_{s}.wav").audio
                gen[s] = (a.mean(axis=1) if a.ndim == 2 else a)[:n].astype(np.float32)
            est[i, d] = fit.take_score(scorer(gen))
    pick = est.argmax(axis=1)
    rows = np.arange(len(segs))
    print(f"{len(segs)} clips x {takes} takes, task {args.task}")
    print("| stem / fit | take ranked first | average take | ruler's best take | within-clip Spearman |")
    print("|---|---|---|---|---|")
    stems_summary = metrics[0]["tasks"][args.task]["stems"]
    for s in targets:
        for k in ("rhythmic", "harmonic"):
            r = ruler[s][k]
            real, mism = stems_summary[s][f"{k}_real"], stems_summary[s][f"{k}_mismatched"]
            if real is None or mism is None:  # total generation: no fit to given stems
                continue
            norm = (lambda v: (v - mism) / (real - mism)) if abs(real - mism) > 1e-9 else (lambda v: float("nan"))
            # clips where the ruler hears no voiced note in some take (NaN) are left out, as the eval does
            ok = ~np.isnan(r).any(axis=1)
            first = norm(float(r[rows, pick][ok].mean()))
            avg = norm(float(r[ok].mean()))
            best = norm(float(r[ok].max(axis=1).mean()))
            rho = np.nanmean([spearman(est[i], r[i]) for i in rows]) if takes > 2 else float("nan")
            print(f"| {s} {k} (pooled) | {first:.3f} | {avg:.3f} | {best:.3f} | {rho:+.2f} |")
    print("\n| stem | level vs real, dB: first / average | empty: first / average |")
    print("|---|---|---|")
    for s in targets:
        lv, em = ruler[s]["level_db"], ruler[s]["empty"]
        real = stems_summary[s]["level_db_real"]
        print(f"| {s} | {lv[rows, pick].mean() - real:+.1f} / {lv.mean() - real:+.1f} "
              f"| {int(em[rows, pick].sum())} of {len(rows)} / {em.sum() / takes:.1f} of {len(rows)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
