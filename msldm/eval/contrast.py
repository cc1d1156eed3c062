"""Do the given stems matter? The key contrast: one region, its piano in two keys a tritone
apart, the same drums and the same seed; the bass generated to fit each should hold more
chord tones of its own piano's chords than of the other's.

`key_contrast(bundle_dir, ...)` composes held-out-style songs (`msldm.data.synth`, the
held-out composer), renders drums and piano with FluidSynth, makes the tritone copy by
transposing the piano's notes (rhythm, voicing and sound unchanged), generates the bass
through the daemon's path (`BundleGenerator`) for both, transcribes each bass with Basic
Pitch and scores it against both chord sequences (`chord_tone_share`, duration-weighted).

    python -m msldm.eval.contrast --bundle msldm/assets/bundle --songs 4
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Sequence

import numpy as np

SHIFT = 6  # semitones: a tritone shares the fewest chord tones with the original key


def _transposed(annotation_chords: Sequence[dict], shift: int) -> list[dict]:
    return [{**c, "pitch_classes": [(int(p) + shift) % 12 for p in c["pitch_classes"]]} for c in annotation_chords]


def render_pair(seed: int, index: int, seconds: float, soundfont: Path, sample_rate: int = 22050) -> dict:
    """One composed song's drums, piano and tritone piano `[N]` at `sample_rate`, with both
    chord sequences (annotation format) and the song's key."""
    from msldm.data.synth.corpus import COMPOSERS
    from msldm.data.synth.midi import CHANNELS
    from msldm.data.synth.render import render_notes

    song = COMPOSERS["heldout"](seed, index, seconds)
    n = int(round(song.duration * sample_rate))

    def render(stem: str, notes) -> np.ndarray:
        return render_notes(notes, song.programs[stem], CHANNELS[stem], n, sample_rate, soundfont)[0]

    up = [dataclasses.replace(t, pitch=t.pitch + SHIFT if t.pitch + SHIFT <= 108 else t.pitch + SHIFT - 12)
          for t in song.notes["piano"]]
    chords = song.annotation(f"contrast-{seed}-{index}", sample_rate)["chords"]
    return {"drums": render("drums", song.notes["drums"]), "piano": render("piano", song.notes["piano"]),
            "piano_tritone": render("piano", up), "chords": chords, "chords_tritone": _transposed(chords, SHIFT),
            "key": song.key.to_dict(), "tempo": song.tempo, "style": song.style}


def key_contrast(bundle_dir: str | Path, songs: int = 4, seed: int = 0, seconds: float = 12.0,
                 soundfont: str | Path | None = None, steps: int | None = None) -> list[dict]:
    """Per song: the bass's chord-tone share against its own piano's chords and against the
    other key's, for the original and the tritone piano (same drums, same sampler seed)."""
    from msldm.data.synth.render import find_soundfont
    from msldm.eval.generators import BundleGenerator
    from msldm.eval.harmony import harmonic_fit

    gen = BundleGenerator(bundle_dir)
    sr = gen.sample_rate
    font = Path(soundfont) if soundfont else find_soundfont()
    rows = []
    for i in range(songs):
        pair = render_pair(seed + 101, 9 + 10 * i, seconds + 1.0, font, sr)
        n = int(seconds * sr)
        row = {"song": i, "key": pair["key"].get("name"), "style": pair["style"]}
        for name, piano, own, other in (("original", pair["piano"], pair["chords"], pair["chords_tritone"]),
                                        ("tritone", pair["piano_tritone"], pair["chords_tritone"], pair["chords"])):
            given = {"drums": pair["drums"][:n], "piano": piano[:n]}
            bass = gen(given, ["bass"], n_samples=n, seed=seed, steps=steps, sampler=None,
                       schedule=None, resample=None)["bass"]
            fit = harmonic_fit(bass, sr, own)  # the transcription is cached: the second call reuses it
            row[f"{name}_own"], row[f"{name}_note_seconds"] = fit.score, fit.note_seconds
            row[f"{name}_other"] = harmonic_fit(bass, sr, other).score
        rows.append(row)
    return rows


def format_rows(rows: Sequence[dict]) -> str:
    """A markdown table of `key_contrast` rows."""
    lines = ["| song | key | style | bass given piano: own chords | other key's | given tritone piano: own | other |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['song']} | {r['key']} | {r['style']} | {r['original_own']:.2f} | {r['original_other']:.2f} "
                     f"| {r['tritone_own']:.2f} | {r['tritone_other']:.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--songs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--soundfont", default=None, help="default: the first GM soundfont found")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    rows = key_contrast(args.bundle, args.songs, args.seed, args.seconds, args.soundfont)
    print(format_rows(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
