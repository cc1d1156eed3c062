"""What a listener would check first in generated stems, measured: level, when each stem
starts to sound, and (for pitched stems) its notes by Basic Pitch transcription.

    python scripts/describe_stems.py demo-out/*.wav
    python scripts/describe_stems.py --key F:minor demo-out/bass.wav demo-out/guitar.wav

Per file: RMS and peak level (dBFS, as `sox stats` gives them), the share of 93 ms frames
above -50 dBFS (the evaluation's audibility) and the time of the first such frame; for a
file whose name holds bass, guitar or piano: the number of notes, their MIDI range, the
pitch classes that hold the most note time, the share of note time in `--key`'s scale when
given, and the share at the 69 Hz latent frame rate (a decoder comb). Prints one line per
file; reads nothing but the files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf

from msldm.eval.density import AUDIBLE_DBFS, HOP, audible_mask
from msldm.eval.transcribe import note_time, pitch_diagnostics, transcribe

PITCHED = ("bass", "guitar", "piano")
NAMES = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}


def scale_pcs(key: str) -> set[int]:
    """`"F:minor"` -> the pitch classes of F natural minor. Raises ValueError for a key that is
    not TONIC[:major|minor] with a tonic of `NAMES`."""
    tonic, _, mode = key.partition(":")
    if tonic not in NAMES or (mode or "major") not in SCALES:
        raise ValueError(f"key {key!r}: want TONIC[:major|minor], TONIC one of {' '.join(NAMES)}")
    return {(NAMES.index(tonic) + d) % 12 for d in SCALES[mode or "major"]}


def describe(path: Path, key: str | None = None) -> dict[str, object]:
    """The measures of one file (mono mix of its channels), as a dict."""
    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    x = audio.mean(axis=1)
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    mask = audible_mask(x)
    out: dict[str, object] = {
        "file": path.name, "seconds": round(len(x) / sr, 2),
        "rms_dbfs": round(float(20 * np.log10(max(rms, 1e-9))), 1),
        "peak_dbfs": round(float(20 * np.log10(max(float(np.abs(x).max(initial=0.0)), 1e-9))), 1),
        f"audible_share@{AUDIBLE_DBFS:.0f}dB": round(float(mask.mean()) if mask.size else 0.0, 2),
        "first_sound_s": round(float(np.argmax(mask)) * HOP / sr, 2) if mask.any() else None}
    if any(p in path.name for p in PITCHED):
        notes = transcribe(x, sr)
        diag = pitch_diagnostics(notes, len(x) / sr, 22050 / 320)
        time_by_pc = np.zeros(12)
        for n in notes:
            time_by_pc[n.pitch % 12] += n.duration
        top = [NAMES[i] for i in np.argsort(-time_by_pc) if time_by_pc[i] > 0][:7]
        out.update({"notes": len(notes), "midi_range": [diag["pitch_low"], diag["pitch_high"]],
                    "pitch_classes_by_time": top, "comb_share": round(diag["comb_share"], 3)})
        if key and notes:
            pcs = scale_pcs(key)
            out["in_key_share"] = round(sum(n.duration for n in notes if n.pitch % 12 in pcs) / note_time(notes), 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--key", help="tonic:mode for the in-key share, e.g. F:minor or Eb:major")
    args = parser.parse_args()
    try:
        if args.key:
            scale_pcs(args.key)
        for path in args.files:
            print(describe(path, args.key))
    except (ValueError, sf.LibsndfileError) as e:  # a bad key, a missing or unreadable file
        parser.error(str(e))


if __name__ == "__main__":
    main()
