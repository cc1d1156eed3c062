"""Where the SourceVAE loses notes (issue 12): the reconstruction's transcription against the
original's, split into the kinds of error, per stem.

For each pitched stem of N test segments, the bundle's encoder and decoder reconstruct it and
Basic Pitch transcribes both (`msldm.eval.transcribe`). Printed per stem (means over segments):
- note F1 as the evaluation scores it (pitch and onset within 50 ms), and the same F1 with the
  pitch ignored (onsets only), folded to a pitch class (octave errors forgiven), and with a
  100 ms onset window;
- notes per segment in the original and the reconstruction (more: spurious or split notes);
- for every original note, what the reconstruction has there: no onset within 50 ms (`lost`),
  or the nearest-pitched onset's interval: the same pitch, an octave, a semitone, a fifth, or
  another (in polyphony the nearest may be another chord tone);
- how many of the original notes repeat the pitch of the note before them, among all of them
  and among the lost ones (a re-struck note that the reconstruction joins to the one before
  is lost);
- for every reconstructed note with no original onset of its pitch within 50 ms (spurious),
  whether it falls inside a sounding original note of the same pitch (a sustained note struck
  again: its level wavers) or at an octave of a sounding one;
- for the original's held notes (0.5 s or longer), how steady the level of their fundamental
  is in each signal: the spread of its frame-to-frame change (dB, median over notes) and the
  share of notes in which it climbs back by more than 3 dB within 0.1 s (a wavering level is
  what the transcriber hears as a note struck again);
- the reconstruction's energy against the original's in octave-wide bands (dB, summed over
  the segments).

    python scripts/vae_note_errors.py --data ~/.cache/msldm/data/multi --split test --n 12
"""

from __future__ import annotations

import argparse
import collections
import sys
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PITCHED = ("bass", "guitar", "piano")
KINDS = ("same", "octave", "semitone", "fifth", "other", "lost")
BAND_EDGES = (20, 40, 80, 160, 320, 640, 1280, 2560, 5120, 11025)


def _onset_near(notes: Sequence, t: float, tolerance: float) -> bool:
    """Some note of `notes` starts within `tolerance` s of `t`."""
    return any(abs(e.start - t) <= tolerance for e in notes)


def note_kinds(reference: Sequence, estimate: Sequence, tolerance: float = 0.05) -> collections.Counter:
    """For each reference note, the kind of what `estimate` has at its onset (`KINDS`): `lost`
    when no estimated onset is within `tolerance` s, else the interval from the reference pitch
    to the closest-pitched estimate among those onsets (octave: 12 or 24 semitones, fifth: 7)."""
    kinds: collections.Counter = collections.Counter()
    for n in reference:
        if not _onset_near(estimate, n.start, tolerance):
            kinds["lost"] += 1
            continue
        near = [e.pitch - n.pitch for e in estimate if abs(e.start - n.start) <= tolerance]
        d = abs(min(near, key=abs))
        kinds["same" if d == 0 else "octave" if d in (12, 24) else "semitone" if d == 1
              else "fifth" if d == 7 else "other"] += 1
    return kinds


def repeats(reference: Sequence, lost_only: Sequence | None = None, tolerance: float = 0.05) -> tuple[int, int]:
    """(notes that repeat the pitch of the note starting before them, notes counted), over all
    reference notes or, with `lost_only` (the estimate), over those with no estimated onset
    within `tolerance` s."""
    ordered = sorted(reference, key=lambda n: n.start)
    rep = total = 0
    for prev, n in zip(ordered, ordered[1:]):
        if lost_only is not None and _onset_near(lost_only, n.start, tolerance):
            continue
        total += 1
        rep += prev.pitch == n.pitch
    return rep, total


def spurious(reference: Sequence, estimate: Sequence, tolerance: float = 0.05) -> tuple[int, int, int, int]:
    """(estimated notes, spurious ones: no reference onset of the same pitch within `tolerance`
    s, spurious ones inside a sounding reference note of the same pitch that began earlier,
    other spurious ones within a sounding reference note one or two octaves away)."""
    bad = inside = octave = 0
    for e in estimate:
        if any(abs(n.start - e.start) <= tolerance and n.pitch == e.pitch for n in reference):
            continue
        bad += 1
        if any(n.pitch == e.pitch and n.start < e.start - tolerance and n.end > e.start for n in reference):
            inside += 1
        elif any(abs(n.pitch - e.pitch) in (12, 24) and n.start - tolerance <= e.start <= n.end for n in reference):
            octave += 1
    return len(estimate), bad, inside, octave


def held_note_level(audio: np.ndarray, notes: Sequence, sr: int, n_fft: int = 4096,
                    hop: int = 256) -> tuple[list[float], list[bool]]:
    """Per held note (>= 0.5 s, its first 80 ms and last 50 ms left out): the standard deviation
    of the frame-to-frame change of its fundamental's level (dB; the loudest of the three bins
    around it) and whether that level climbs by more than 3 dB over its minimum within 0.1 s."""
    if len(audio) < n_fft:
        return [], []
    window = np.hanning(n_fft)
    frames = 1 + (len(audio) - n_fft) // hop
    spec = np.abs(np.stack([np.fft.rfft(window * audio[i * hop:i * hop + n_fft]) for i in range(frames)]))
    span = max(1, int(0.1 * sr / hop))
    spreads, rises = [], []
    for n in notes:
        t0, t1 = int((n.start + 0.08) * sr / hop), int((n.end - 0.05) * sr / hop)
        if n.end - n.start < 0.5 or t1 - t0 < 8 or t1 > frames:
            continue
        k = int(round(440.0 * 2 ** ((n.pitch - 69) / 12) * n_fft / sr))
        level = 20 * np.log10(spec[t0:t1, max(k - 1, 0):k + 2].max(axis=1) + 1e-9)
        spreads.append(float(np.std(np.diff(level))))
        rises.append(any(level[i + span] - level[i:i + span].min() > 3 for i in range(len(level) - span)))
    return spreads, rises


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=Path("msldm/assets/bundle"))
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from msldm.eval.data import load_segments
    from msldm.eval.generators import BundleGenerator
    from msldm.eval.transcribe import note_f1, transcribe

    vae = BundleGenerator(args.bundle, threads=args.threads)  # its `reconstruct`: the bundle's round trip

    def one_pitch(notes):
        return [replace(n, pitch=60) for n in notes]

    def pitch_class(notes):
        return [replace(n, pitch=60 + n.pitch % 12) for n in notes]

    segments = load_segments(args.data, args.n, args.seconds, split=args.split)
    for stem in PITCHED:
        f1s, counts, kinds, rep = [], [], collections.Counter(), np.zeros(4, int)
        energy = np.zeros((2, len(BAND_EDGES) - 1))
        spur = np.zeros(4, int)
        held: dict[str, tuple[list, list]] = {"original": ([], []), "reconstruction": ([], [])}
        for seg in segments:
            a = seg.stems[stem]
            if np.sqrt(np.mean(np.square(a))) < 1e-4:
                continue
            r = vae.reconstruct(a)
            ref, est = transcribe(a), transcribe(r)
            f1s.append((note_f1(ref, est), note_f1(one_pitch(ref), one_pitch(est)),
                        note_f1(pitch_class(ref), pitch_class(est)), note_f1(ref, est, 0.1)))
            counts.append((len(ref), len(est)))
            kinds += note_kinds(ref, est)
            rep += (*repeats(ref), *repeats(ref, est))
            spur += spurious(ref, est)
            for name, x in (("original", a), ("reconstruction", r)):
                sd, up = held_note_level(x, ref, vae.sample_rate)
                held[name][0].extend(sd)
                held[name][1].extend(up)
            freqs = np.fft.rfftfreq(len(a), 1 / vae.sample_rate)
            for row, x in enumerate((a, r)):
                power = np.abs(np.fft.rfft(x)) ** 2
                energy[row] += [power[(freqs >= lo) & (freqs < hi)].sum() for lo, hi in zip(BAND_EDGES, BAND_EDGES[1:])]
        if not f1s:
            print(f"{stem}: no sounding segment")
            continue
        f = np.mean(f1s, axis=0)
        c = np.mean(counts, axis=0)
        total = max(1, sum(kinds.values()))
        print(f"{stem} ({len(f1s)} segments): note F1 {f[0]:.2f}, onsets only {f[1]:.2f}, pitch class {f[2]:.2f}, "
              f"100 ms {f[3]:.2f}; notes per segment {c[0]:.1f} -> {c[1]:.1f}; original notes: "
              + ", ".join(f"{k} {kinds[k] / total:.2f}" for k in KINDS)
              + f"; repeating the note before: {rep[0] / max(1, rep[1]):.2f} of all, {rep[2] / max(1, rep[3]):.2f} "
                "of the lost")
        print(f"  spurious: {spur[1] / max(1, spur[0]):.2f} of the reconstruction's notes; of those, "
              f"{spur[2] / max(1, spur[1]):.2f} inside a sounding original note of that pitch, "
              f"{spur[3] / max(1, spur[1]):.2f} at an octave of one")
        if held["original"][0]:
            print(f"  held notes ({len(held['original'][0])}): fundamental's frame-to-frame change, sd "
                  + ", ".join(f"{k} {np.median(v[0]):.2f} dB" for k, v in held.items())
                  + "; climbing back > 3 dB: " + ", ".join(f"{k} {np.mean(v[1]):.2f}" for k, v in held.items()))
        gain = 10 * np.log10((energy[1] + 1e-12) / (energy[0] + 1e-12))
        print("  energy, reconstruction against original: " + ", ".join(
            f"{lo}-{hi} Hz {g:+.1f} dB" for lo, hi, g in zip(BAND_EDGES, BAND_EDGES[1:], gain)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
