"""Key or chords? Guitar and piano generated given a song's bass and drums, clip by clip: the share
of their note time in the song's key's scale and on the chord sounding then, beside the real
parts' (docs/eval/model-history.md, "Seventeenth session").

    python scripts/chord_share.py --bundle msldm/assets/bundle --data ~/.cache/msldm/data/multi/test \
        --segments R/metrics.json [--seed-offset 100] [--sampler-field given_noise=0.3]

`--segments`: the `metrics.json` of an `msldm eval` run on that split (its clips: track and
offset); each clip is generated through the daemon's windows with seed = clip index + offset,
transcribed as the evaluation transcribes (`msldm.eval.harmony`), and scored against the
track's `annotation.json` (key; chords, the one in force at the clip's start included).
Prints one line per clip and the means.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import soundfile as sf

from msldm.eval.generators import BundleGenerator
from msldm.eval.harmony import chord_tone_share, stem_notes

MAJOR, MINOR = (0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10)
SECONDS = 12.0


def shares(audio: np.ndarray, sr: int, ann: dict, offset: float) -> tuple[float, float]:
    """(share of note time in the key's scale, share on the chord's tones); NaN without notes."""
    notes = stem_notes(audio, sr)
    total = sum(n.end - n.start for n in notes)
    if total <= 0:
        return float("nan"), float("nan")
    key = ann["key"]
    scale = {(key["tonic_pc"] + i) % 12 for i in (MAJOR if key["mode"] == "major" else MINOR)}
    in_key = sum(n.end - n.start for n in notes if n.pitch % 12 in scale) / total
    before = [c for c in ann["chords"] if c["time"] <= offset]
    chords = ([dict(before[-1], time=0.0)] if before else []) + [
        dict(c, time=c["time"] - offset) for c in ann["chords"] if offset < c["time"] < offset + SECONDS]
    on, seconds = chord_tone_share(notes, chords, SECONDS)
    return in_key, on / max(seconds, 1e-9)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True)
    p.add_argument("--data", required=True, type=Path, help="a split folder of the corpus (tracks with annotation.json)")
    p.add_argument("--segments", required=True, type=Path, help="metrics.json of an eval run on that split")
    p.add_argument("--seed-offset", type=int, default=0)
    p.add_argument("--sampler-field", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    fields = dict(kv.split("=", 1) for kv in args.sampler_field if "=" in kv)
    if len(fields) != len(args.sampler_field):
        p.error("--sampler-field wants FIELD=VALUE")
    segments = json.loads(args.segments.read_text())["segments"]
    gen = BundleGenerator(args.bundle, threads=args.threads, sampler_fields=fields or None)
    rows = []
    for i, seg in enumerate(segments):
        track = args.data / seg["track"]
        ann = json.loads((track / "annotation.json").read_text())

        def load(stem: str) -> tuple[np.ndarray, int]:
            x, sr = sf.read(track / f"{stem}.wav", dtype="float32")
            start = int(seg["offset"] * sr)
            return x[start:start + int(SECONDS * sr)], sr

        (bass, sr), (drums, _) = load("bass"), load("drums")
        out = gen({"bass": bass, "drums": drums}, ["guitar", "piano"], n_samples=len(bass),
                  seed=i + args.seed_offset, steps=None, sampler=None)
        row = []
        for stem in ("guitar", "piano"):
            row += [*shares(out[stem], sr, ann, seg["offset"]), *shares(load(stem)[0], sr, ann, seg["offset"])]
        rows.append(row)
        print(f"{i:2d} {ann['key']['name']:9s} {ann['style']:9s} guitar key {row[0]:.2f} chord {row[1]:.2f} "
              f"(real {row[2]:.2f} {row[3]:.2f})  piano key {row[4]:.2f} chord {row[5]:.2f} "
              f"(real {row[6]:.2f} {row[7]:.2f})", flush=True)
    m = np.nanmean(np.array(rows), axis=0)
    print(f"means: guitar key {m[0]:.2f} chord {m[1]:.2f} (real {m[2]:.2f} {m[3]:.2f}); "
          f"piano key {m[4]:.2f} chord {m[5]:.2f} (real {m[6]:.2f} {m[7]:.2f})")


if __name__ == "__main__":
    main()
