"""How a redo sounds on a real bundle: held-out-composer songs (drums and piano rendered with
FluidSynth), a bass take generated through the daemon's job path, then bars of it redone
with another seed. Prints, per song: whether the kept samples are bit-exact, the level of
the redone span against the take's, the chord-tone share of the span's notes (Basic Pitch)
before and after, and a click measure at each seam (the largest sample-to-sample step
within 5 ms of the seam over the 99th percentile of steps within 200 ms of it, in the take
or the redo, whichever is louder there: about 1 or less means no click).

    .venv/bin/python scripts/redo_check.py --bundle msldm/assets/bundle --songs 4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from msldm.data.synth.render import find_soundfont  # noqa: E402
from msldm.eval.contrast import render_pair  # noqa: E402
from msldm.eval.harmony import harmonic_fit  # noqa: E402
from plugin_bridge import protocol as P  # noqa: E402
from server.daemon import model_info  # noqa: E402
from server.jobs import Job, run_job  # noqa: E402
from server.requests import Limits, build_request  # noqa: E402
from server.runtime import Bundle  # noqa: E402


class Collect:
    """An in-memory sink: the chunks of every take and stem, assembled."""

    def __init__(self) -> None:
        self.parts: dict[tuple[int, str], list[np.ndarray]] = {}
        self.final: Any = None

    def progress(self, *a: Any) -> None: ...

    def chunk(self, job: Job, stem: str, offset: int, audio: np.ndarray, window: int, final: bool,
              take: int = 0) -> None:
        self.parts.setdefault((take, stem), []).append(np.asarray(audio, np.float32))

    def done(self, job: Job, info: dict[str, Any]) -> None:
        self.final = info

    def error(self, job: Job, code: Any, message: str) -> None:
        raise RuntimeError(f"{code}: {message}")

    def stem(self, stem: str, take: int = 0) -> np.ndarray:
        return np.concatenate(self.parts[(take, stem)])


def run(bundle: Bundle, header: dict[str, Any], pcm: list[np.ndarray]) -> Collect:
    sink = Collect()
    req = build_request(P.decode(P.encode(header, pcm)), model_info(bundle), Limits())
    fn, *args = run_job(bundle, Job(b"check", req, sink))
    fn(*args)
    return sink


def _given(stems: dict[str, np.ndarray], sr: int) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    return ([{"stem": s, "sample_rate": sr, "channels": 1, "frames": len(a)} for s, a in stems.items()],
            [np.asarray(a, np.float32) for a in stems.values()])


def _db(x: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2)) + 1e-9))


def _click(redo: np.ndarray, take: np.ndarray, at: int, sr: int) -> float:
    w, around = int(0.005 * sr), int(0.2 * sr)
    near = slice(max(0, at - w), at + w)
    local = slice(max(0, at - around), at + around)
    steps = [np.abs(np.diff(x)) for x in (redo, take)]
    level = max(float(np.percentile(s[local], 99)) for s in steps)  # the louder of the two there
    return float(steps[0][near].max() / (level + 1e-9))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="msldm/assets/bundle")
    ap.add_argument("--songs", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--start", type=float, default=4.0, help="redone span, seconds from the region start")
    ap.add_argument("--end", type=float, default=8.0)
    args = ap.parse_args(argv)
    bundle = Bundle.load(args.bundle)
    sr, font = bundle.sample_rate, find_soundfont()
    n, a, b = int(args.seconds * sr), int(round(args.start * sr)), int(round(args.end * sr))
    span = np.zeros(n, bool)
    span[a:b] = True
    print("| song | kept samples bit-exact | level take / redo (dBFS) | chord-tone share in span, take / redo "
          "| click at seams (start, end) |\n|---|---|---|---|---|")
    for i in range(args.songs):
        pair = render_pair(201, 9 + 10 * i, args.seconds + 1.0, font, sr)
        given = {"drums": pair["drums"][:n], "piano": pair["piano"][:n]}
        info, pcm = _given(given, sr)
        take = run(bundle, {"type": "generate", "job_id": f"take{i}", "given": info, "generate": ["bass"],
                            "seed": 10 + i}, pcm).stem("bass")
        info, pcm = _given({**given, "bass": take}, sr)
        redo = run(bundle, {"type": "generate", "job_id": f"redo{i}", "given": info, "generate": ["bass"],
                            "seed": 50 + i, "redo": {"stem": "bass", "start": args.start, "end": args.end}},
                   pcm).stem("bass")
        exact = bool(np.array_equal(redo[~span], take[~span]))
        fits = [harmonic_fit(np.where(span, x, 0.0).astype(np.float32), sr, pair["chords"]).score
                for x in (take, redo)]
        print(f"| {i} | {exact} | {_db(take[a:b]):.1f} / {_db(redo[a:b]):.1f} | {fits[0]:.2f} / {fits[1]:.2f} "
              f"| {_click(redo, take, a, sr):.2f}, {_click(redo, take, b, sr):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
