"""Does the denoiser's own miss of the given stems tell which takes fit (`server.windowing.best_of`)?

For each of N clips of a split, the daemon's sampler (`server.windowing.generate_region`, one
candidate a window: `bass_drums_select` 1) makes T takes of the task's stems from the clip's
other stems. Every sampler step's denoised estimate holds the model's estimate of the given
stems too; the miss is its squared error against the given latents, summed over a take's windows
at the steps that start at or above `--level` and below `--top` (default: the steps of the
guidance's band that reach its lowest level, one step of it: the last step starting at or above
the band's end; where no band runs, the steps between `--level` and `--top`). The script prints
the ruler's raw fits (`msldm.eval.fit.fit_scores`, the clip's chord annotation and grid) of the
take picked three ways, per clip, averaged over clips: the smallest miss, the highest
`server.fit` estimate (the daemon's take ranking), both (the sum of the two ranks), and the
average take.

    .venv/bin/python scripts/miss_rank_check.py --data ~/.cache/msldm/data/multi --task GP
    .venv/bin/python scripts/miss_rank_check.py --data ~/.cache/msldm/data/multi --task BG --level 0.8 --top 1.3
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from msldm.eval.data import load_segments  # noqa: E402
from msldm.eval.fit import build_context, fit_scores  # noqa: E402
from server.fit import Scorer, take_score  # noqa: E402
from server.requests import beat_seconds  # noqa: E402
from server.runtime import Bundle  # noqa: E402
from server.windowing import generate_region  # noqa: E402

STEMS = ("bass", "drums", "guitar", "piano")


def order(values: list[float], high: bool) -> np.ndarray:
    """Rank (0: best) of each value, the highest first when `high`."""
    v = np.asarray(values, float)
    return np.argsort(np.argsort(-v if high else v, kind="stable"), kind="stable")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="msldm/assets/bundle")
    ap.add_argument("--data", required=True, help="the eval's --data (a folder with train/validation/test)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--task", default="GP", help="the generated stems' letters (BDGP), as the eval's subsets")
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--takes", type=int, default=4)
    ap.add_argument("--seed", type=int, default=2000)
    ap.add_argument("--level", type=float, default=None,
                    help="lowest start sigma of the steps whose miss counts (default: the guidance band's end)")
    ap.add_argument("--top", type=float, default=None, help="and below this one (default: the next step's)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    targets = [STEMS[i] for i, c in enumerate("BDGP") if c in args.task]
    given_names = [s for s in STEMS if s not in targets]
    if not targets or not given_names:
        raise SystemExit(f"--task {args.task!r}: name some stems to generate and leave some given")
    bundle = Bundle.load(args.bundle, threads=args.threads)
    bundle.sampler_defaults = dataclasses.replace(bundle.sampler_defaults, bass_drums_select=1)
    sr, C = bundle.sample_rate, bundle.C
    real_generate, misses = bundle.generate, []

    def generate(shape, **kw):  # the sampler as the daemon calls it, its steps' estimates read on the way
        sigmas = bundle.sigmas(kw.get("steps"), kw.get("schedule"))
        lo = args.level
        if lo is None:
            lo = kw.get("reconstruction_tmin")
            lo = bundle.sampler_defaults.reconstruction_tmin if lo is None else lo
        starts = [s for s in sigmas[:-1] if s >= lo]
        hi = args.top if args.top is not None else (min(starts) * 1.0001 if starts else -1.0)
        mask = np.zeros((1, bundle.K * C, 1), np.float32)  # the given stems' blocks, every frame given
        for s in given_names:
            k = bundle.stems.index(s)
            mask[:, k * C:(k + 1) * C] = 1.0
        miss = np.zeros(shape[0])
        inner = kw.get("callback")

        def callback(step, total, sigma, x, denoised):
            if lo <= sigmas[step - 1] <= hi and kw.get("given") is not None:
                miss[:] += np.square((kw["given"] - denoised) * mask).reshape(shape[0], -1).sum(1)
            if inner is not None:
                inner(step, total, sigma, x, denoised)

        out = real_generate(shape, **{**kw, "callback": callback})
        misses.append(miss)
        return out

    bundle.generate = generate
    segs = load_segments(args.data, args.n, 12.0, sr, split=args.split)
    keys = [(s, k) for s in targets for k in ("harmonic", "rhythmic")]
    picks: dict[str, list[dict]] = {"miss": [], "estimate": [], "both": []}
    average = []
    for ci, seg in enumerate(segs):
        given = {s: seg.stems[s] for s in given_names}
        misses.clear()
        n = len(seg.stems[targets[0]])
        parts: dict[tuple[int, str], list[np.ndarray]] = {}
        for p in generate_region(bundle, given, targets, n, seed=args.seed + 10 * ci, takes=args.takes,
                                 silent_retries=0):
            for s, a in p.stems.items():
                parts.setdefault((p.take, s), []).append(a)
        ctx = build_context(given, sr, seg.annotation)
        beat = beat_seconds({"tempo": seg.tempo, "meter": (seg.annotation or {}).get("meter", [4, 4])}) \
            if np.isfinite(seg.tempo) else None
        scorer = Scorer(given, sr, beat)
        miss = np.sum(misses, axis=0)
        rows, est = [], []
        for t in range(args.takes):
            audio = {s: np.concatenate(parts[(t, s)]) for s in targets}
            fits = {s: fit_scores(audio[s], sr, s, ctx) for s in targets}
            rows.append({(s, k): fits[s][k] for s, k in keys})
            est.append(take_score(scorer(audio)))
        by_miss, by_est = order(list(miss), False), order(est, True)
        picks["miss"].append(rows[int(np.argmin(by_miss))])
        picks["estimate"].append(rows[int(np.argmin(by_est))])
        picks["both"].append(rows[int(np.argmin(by_miss + by_est + 1e-3 * by_miss))])
        average.extend(rows)
        print(f"clip {ci}: miss " + " ".join(f"{m:.0f}" for m in miss), flush=True)
    print(f"\n{len(segs)} clips x {args.takes} takes, task {args.task} (given {', '.join(given_names)}); "
          "the ruler's raw fits, mean over clips")
    print("| take picked by | " + " | ".join(f"{s} {k}" for s, k in keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, rows in (*picks.items(), ("(average take)", average)):
        print(f"| {name} | " + " | ".join(f"{np.nanmean([r[key] for r in rows]):.3f}" for key in keys) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
