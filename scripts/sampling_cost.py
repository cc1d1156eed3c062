"""What one region's sampling costs, and where the time goes, for a request's given stems.

Times `server.windowing.generate_region` (the daemon's sampler, no window sampled again) on the
start of one track of a corpus: the given stems are the track's own, the rest generated. Each row is one
setting of the manifest's sampler fields (`--fields`, `FIELD=VALUE,...`; a lone `-` for the
bundle as shipped), alternated over `--repeats` rounds so that the machine's drift falls on
every row alike. Printed per row: the wall seconds of every round, the real-time factor of
the best, and of that round the denoiser's share (onnxruntime runs, rows per call), encoding,
decoding, and the rest of the sampler (noise, imputation).

    .venv/bin/python scripts/sampling_cost.py --track ~/.cache/msldm/data/multi/test/Track00010 \
        --given guitar,piano --fields - harmony_given_guidance=1
    .venv/bin/python scripts/sampling_cost.py --track ~/.cache/msldm/data/multi/test/Track00010 \
        --given bass,drums --fields - bass_drums_select=1
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import soundfile as sf  # noqa: E402

from msldm.config import SamplerConfig  # noqa: E402
from server.audio import to_mono  # noqa: E402
from server.runtime import Bundle  # noqa: E402
from server.windowing import Timings, generate_region  # noqa: E402

STEMS = ("bass", "drums", "guitar", "piano")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default="msldm/assets/bundle")
    ap.add_argument("--track", type=Path, required=True,
                    help="a track folder of a corpus (<stem>.wav at the model rate)")
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--given", required=True, help="comma list of given stems; the others are generated")
    ap.add_argument("--fields", nargs="+", default=["-"], help="sampler-field settings, one per row")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    given = [s for s in args.given.split(",") if s]
    if not given or not set(given) < set(STEMS):
        ap.error(f"--given: some but not all of {', '.join(STEMS)}")
    requested = [s for s in STEMS if s not in given]
    bundle = Bundle.load(args.bundle, threads=args.threads)
    shipped = bundle.sampler_defaults
    rows = {f: shipped if f == "-" else shipped.with_overrides(SamplerConfig.parse_assignments(f.split(",")))
            for f in args.fields}
    audio = {}
    for stem in given:
        x, rate = sf.read(str(args.track / f"{stem}.wav"), dtype="float32")
        if rate != bundle.sample_rate:
            ap.error(f"{args.track / stem}.wav is {rate} Hz, the model's rate is {bundle.sample_rate} Hz")
        audio[stem] = to_mono(x)[: int(args.seconds * rate)]
    n = min(len(a) for a in audio.values())

    calls: collections.Counter = collections.Counter()
    spent: collections.Counter = collections.Counter()
    real = bundle.denoise

    def timed(x, sigma, *a, **kw):
        t0 = time.perf_counter()
        out = real(x, sigma, *a, **kw)
        spent[x.shape[0]] += time.perf_counter() - t0
        calls[x.shape[0]] += 1
        return out

    bundle.denoise = timed
    best: dict[str, tuple[float, Timings, dict, dict]] = {}
    walls: dict[str, list[float]] = {f: [] for f in rows}
    for _ in range(args.repeats):
        for f, cfg in rows.items():
            bundle.sampler_defaults = cfg
            calls.clear()
            spent.clear()
            t, t0 = Timings(), time.perf_counter()
            for _piece in generate_region(bundle, audio, requested, n, seed=1, timings=t, silent_retries=0):
                pass
            wall = time.perf_counter() - t0
            walls[f].append(wall)
            if f not in best or wall < best[f][0]:
                best[f] = (wall, t, dict(calls), dict(spent))
    bundle.sampler_defaults = shipped
    print(f"{args.track.name}, {n / bundle.sample_rate:.1f} s, given {','.join(given)}, "
          f"generated {','.join(requested)}; {args.threads} threads")
    for f in rows:
        wall, t, c, s = best[f]
        den = sum(s.values())
        per = ", ".join(f"{c[r]} x {r} row(s) at {1000 * s[r] / c[r]:.1f} ms" for r in sorted(c))
        rounds = " / ".join(f"{w:.2f}" for w in walls[f])
        print(f"{f}: wall {rounds} s, real-time factor {wall * bundle.sample_rate / n:.2f} (best); "
              f"denoiser {den:.2f} s ({per}), encode {t.encode:.2f} s, decode {t.decode:.2f} s, "
              f"the rest of the sampler {t.sample - den:.2f} s; passes {t.passes}, candidates {t.candidates}, "
              f"guidance {rows[f].guidance if t.guidance is None else t.guidance}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
