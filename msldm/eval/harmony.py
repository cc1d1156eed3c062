"""Harmonic fit of a pitched stem to the chords of the region (numpy only).

Pitch-class projection (our "chroma"): for each beat segment [b_i, b_{i+1}) the stem is
Hann-windowed, zero-padded (>= 8192 points) and Fourier transformed; spectral peaks
within 40 dB of the strongest (parabolically refined) in the stem's range are mapped to
the nearest equal-tempered pitch class, and their magnitudes summed per class.

Per voiced beat (segment RMS above the audibility threshold of `msldm.eval.density`
and at least one peak), with the chord C (set of pitch classes) playing at the beat:
- `tone_ratio` = chroma energy on C / total chroma energy (a soft score in [0, 1]);
- `dominant_hit` = 1 if the dominant pitch class is in C: for the bass, the *lowest
  strong* peak (the lowest peak with magnitude >= `BASS_STRONG` x the largest one: the
  bass note, since its upper harmonics fall on other classes); for the other stems the
  strongest chroma bin.
`HarmonicFit.score` (the headline number) is, averaged over voiced beats,
  bass: dominant_hit (the bass note must be a chord tone);
  guitar / piano: tone_ratio (several notes sound at once, all should be chord tones).
This choice separated matched from mismatched stems best on the toy corpus (see tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from msldm.eval.density import AUDIBLE_DBFS
from msldm.eval.dsp import EPS, as_mono, chroma_from_peaks, hz_to_pitch_class, spectral_peaks

PITCH_RANGES: dict[str, tuple[float, float]] = {
    "bass": (28.0, 1000.0), "guitar": (70.0, 4000.0), "piano": (25.0, 4200.0)}
"""Frequency range (Hz) searched for peaks, per stem; others use the piano's."""

PITCHED_STEMS: tuple[str, ...] = ("bass", "guitar", "piano")
BASS_STRONG = 0.3
PC_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
CHORD_QUALITIES: dict[str, tuple[int, ...]] = {"maj": (0, 4, 7), "min": (0, 3, 7)}
"""Triad templates `estimate_chords` matches (intervals above the root)."""


@dataclass(frozen=True)
class BeatPitch:
    """Pitch content of one beat segment of a stem."""

    chroma: np.ndarray  # [12] peak magnitude per pitch class
    dominant_pc: int  # -1 when unvoiced
    voiced: bool


@dataclass(frozen=True)
class HarmonicFit:
    """Harmonic fit of a stem over a region; NaN scores when no beat is voiced."""

    score: float
    tone_ratio: float
    dominant_hit: float
    voiced_beats: int
    beats: int


def beat_segments(beats: Sequence[float], n_samples: int, sr: int) -> list[tuple[int, int]]:
    """Sample ranges [start, end) of each beat (the last beat lasts one median beat)."""
    b = np.asarray(beats, dtype=np.float64)
    b = b[(b >= 0) & (b * sr < n_samples)]
    if b.size == 0:
        return []
    period = float(np.median(np.diff(b))) if b.size > 1 else 0.5
    ends = np.append(b[1:], b[-1] + period)
    return [(int(s * sr), min(int(e * sr), n_samples)) for s, e in zip(b, ends) if e * sr > s * sr + 16]


def beat_pitch(segment: np.ndarray, sr: int, stem: str) -> BeatPitch:
    """Chroma `[12]` and dominant pitch class of one beat segment of `stem`."""
    x = as_mono(segment)
    rms_db = 20 * np.log10(np.sqrt(np.mean(x ** 2)) + EPS) if x.size else -np.inf
    fmin, fmax = PITCH_RANGES.get(stem, PITCH_RANGES["piano"])
    if rms_db <= AUDIBLE_DBFS:
        return BeatPitch(np.zeros(12), -1, False)
    freqs, mags = spectral_peaks(x, sr, fmin, fmax)
    if freqs.size == 0:
        return BeatPitch(np.zeros(12), -1, False)
    chroma = chroma_from_peaks(freqs, mags)
    if stem == "bass":
        strong = np.flatnonzero(mags >= BASS_STRONG * mags.max())
        dominant = int(hz_to_pitch_class(freqs[strong[0:1]])[0])
    else:
        dominant = int(np.argmax(chroma))
    return BeatPitch(chroma, dominant, True)


def stem_beat_pitches(audio: np.ndarray, sr: int, beats: Sequence[float], stem: str) -> list[BeatPitch]:
    """`beat_pitch` of every beat segment of `audio [N]`."""
    x = as_mono(audio)
    return [beat_pitch(x[s:e], sr, stem) for s, e in beat_segments(beats, len(x), sr)]


def chord_at(chords: Sequence[Mapping], t: float) -> Mapping | None:
    """The chord (annotation dict with `time` and `pitch_classes`) sounding at time t."""
    current = None
    for c in chords:
        if c["time"] <= t + 1e-6:
            current = c
        else:
            break
    return current if current is not None else (chords[0] if chords else None)


def harmonic_fit(audio: np.ndarray, sr: int, beats: Sequence[float], chords: Sequence[Mapping],
                 stem: str) -> HarmonicFit:
    """Harmonic fit of a pitched `stem` `audio [N]` to `chords` (one per beat, annotation
    schema: time (s), pitch_classes). See the module docstring for the definitions."""
    pitches = stem_beat_pitches(audio, sr, beats, stem)
    starts = [s / sr for s, _ in beat_segments(beats, len(as_mono(audio)), sr)]
    ratios, hits = [], []
    for t, bp in zip(starts, pitches):
        chord = chord_at(chords, t)
        if not bp.voiced or chord is None:
            continue
        tones = sorted(set(int(p) % 12 for p in chord["pitch_classes"]))
        ratios.append(bp.chroma[tones].sum() / (bp.chroma.sum() + EPS))
        hits.append(float(bp.dominant_pc in tones))
    if not ratios:
        nan = float("nan")
        return HarmonicFit(nan, nan, nan, 0, len(pitches))
    tone_ratio, dominant_hit = float(np.mean(ratios)), float(np.mean(hits))
    score = dominant_hit if stem == "bass" else tone_ratio
    return HarmonicFit(score, tone_ratio, dominant_hit, len(ratios), len(pitches))


def _chord_templates() -> list[tuple[int, str, np.ndarray]]:
    out = []
    for root in range(12):
        for quality, intervals in CHORD_QUALITIES.items():
            t = np.zeros(12)
            t[[(root + i) % 12 for i in intervals]] = 1.0
            out.append((root, quality, t / np.linalg.norm(t)))
    return out


def estimate_chords(given_audio: Mapping[str, np.ndarray], beats: Sequence[float],
                    sr: int = 22050, stickiness: float = 0.05,
                    bass_bonus: float = 0.1) -> list[dict]:
    """One chord per beat from the chroma of the given pitched stems (drums ignored).

    Per beat, the peak-normalised chroma of each given pitched stem is summed and matched
    (cosine) against the major/minor triad templates; a template whose root is the bass's
    lowest strong pitch class gains `bass_bonus`, the previous beat's chord gains
    `stickiness` (less flicker). Beats without pitched sound repeat the previous chord.
    Returns annotation-schema dicts: time, root_pc, quality, pitch_classes, name.
    """
    per_stem = {s: stem_beat_pitches(a, sr, beats, s) for s, a in given_audio.items()
                if s in PITCHED_STEMS}
    n = max((len(v) for v in per_stem.values()), default=0)
    templates, chords, prev = _chord_templates(), [], None
    beat_times = [float(b) for b in beats][:n]
    for i, t in enumerate(beat_times):
        chroma = np.zeros(12)
        bass_pc = -1
        for stem, bps in per_stem.items():
            bp = bps[i]
            if bp.voiced:
                chroma += bp.chroma / (bp.chroma.max() + EPS)
                bass_pc = bp.dominant_pc if stem == "bass" else bass_pc
        if chroma.sum() > EPS:
            c = chroma / np.linalg.norm(chroma)
            scores = [float(c @ tpl) + bass_bonus * (root == bass_pc)
                      + stickiness * (prev is not None and (root, q) == prev) for root, q, tpl in templates]
            root, q, _ = templates[int(np.argmax(scores))]
            prev = (root, q)
        if prev is not None:
            root, q = prev
            pcs = [(root + k) % 12 for k in CHORD_QUALITIES[q]]
            chords.append({"time": t, "root_pc": root, "quality": q, "pitch_classes": pcs,
                           "name": PC_NAMES[root] + ("m" if q == "min" else "")})
    return chords
