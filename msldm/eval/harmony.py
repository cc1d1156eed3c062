"""Harmonic fit of a pitched stem to the chords of the region, from a note transcription.

Notes come from Basic Pitch (`msldm.eval.transcribe`). The harmonic fit of a stem is the
duration-weighted share of its note time whose pitch class is a tone of the chord sounding
then: each note is split at chord changes and each piece counts its duration on the chord
in force. Chords are annotation dicts (`time` in s relative to the region, `pitch_classes`);
without an annotation they are estimated per beat from the transcriptions of the given
pitched stems (`estimate_chords`, templates with triads and seventh chords).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from msldm.eval.transcribe import Note, transcribe

PITCHED_STEMS: tuple[str, ...] = ("bass", "guitar", "piano")
PC_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
CHORD_QUALITIES: dict[str, tuple[int, ...]] = {
    "maj": (0, 4, 7), "min": (0, 3, 7), "7": (0, 4, 7, 10), "maj7": (0, 4, 7, 11),
    "min7": (0, 3, 7, 10), "m7b5": (0, 3, 6, 10)}
"""Chord templates `estimate_chords` matches (intervals above the root)."""
_SUFFIX = {"maj": "", "min": "m", "7": "7", "maj7": "maj7", "min7": "m7", "m7b5": "m7b5"}
SEVENTH_PENALTY = 0.02  # a seventh template must explain more than its triad
BASS_WEIGHT = 2.0  # the bass's notes count double in chord estimation (they name the root)


@dataclass(frozen=True)
class HarmonicFit:
    """Harmonic fit of a stem over a region; NaN score when it has no notes."""

    score: float  # share of note time on chord tones
    note_seconds: float
    notes: int


_CACHE: OrderedDict[tuple, list[Note]] = OrderedDict()
_CACHE_SIZE = 512


def stem_notes(audio: np.ndarray, sr: int) -> list[Note]:
    """`transcribe(audio, sr)`, memoised on the audio's bytes (the harness scores the same real
    stems in several tasks)."""
    a = np.ascontiguousarray(np.asarray(audio, dtype=np.float32).reshape(-1))
    key = (hashlib.sha1(a.tobytes()).hexdigest(), len(a), sr)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    notes = transcribe(a, sr)
    _CACHE[key] = notes
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return notes


def chord_spans(chords: Sequence[Mapping], end: float) -> list[tuple[float, float, frozenset[int]]]:
    """`[(start, stop, pitch classes)]` of the chords, each lasting until the next (the last
    until `end`; the first also covers any time before it)."""
    spans = []
    for i, c in enumerate(chords):
        start = float(c["time"]) if i else min(0.0, float(c["time"]))
        stop = float(chords[i + 1]["time"]) if i + 1 < len(chords) else max(end, start)
        spans.append((start, stop, frozenset(int(p) % 12 for p in c["pitch_classes"])))
    return spans


def chord_tone_share(notes: Sequence[Note], chords: Sequence[Mapping], end: float) -> tuple[float, float]:
    """(seconds of note time on chord tones, seconds of note time), notes split at chord changes."""
    spans = chord_spans(chords, end)
    on, total = 0.0, 0.0
    for n in notes:
        pc = n.pitch % 12
        for a, b, tones in spans:
            overlap = min(n.end, b) - max(n.start, a)
            if overlap > 0:
                total += overlap
                on += overlap * (pc in tones)
    return on, total


def harmonic_fit(audio: np.ndarray, sr: int, chords: Sequence[Mapping]) -> HarmonicFit:
    """Harmonic fit of a pitched stem `audio [N]` to `chords` (module docstring)."""
    notes = stem_notes(audio, sr)
    on, total = chord_tone_share(notes, chords, len(audio) / sr)
    return HarmonicFit(on / total if total > 0 else float("nan"), total, len(notes))


def chord_at(chords: Sequence[Mapping], t: float) -> Mapping | None:
    """The chord (annotation dict with `time` and `pitch_classes`) sounding at time t."""
    current = None
    for c in chords:
        if c["time"] <= t + 1e-6:
            current = c
        else:
            break
    return current if current is not None else (chords[0] if chords else None)


def _templates() -> list[tuple[int, str, np.ndarray]]:
    out = []
    for root in range(12):
        for quality, intervals in CHORD_QUALITIES.items():
            t = np.zeros(12)
            t[[(root + i) % 12 for i in intervals]] = 1.0
            out.append((root, quality, t / np.linalg.norm(t)))
    return out


def beat_chroma(notes_by_stem: Mapping[str, Sequence[Note]], a: float, b: float) -> tuple[np.ndarray, int]:
    """(pitch-class weights `[12]` of the notes sounding in [a, b) — overlap x amplitude, the
    bass's doubled —, the lowest bass pitch class sounding there or -1)."""
    chroma, bass_pc, low = np.zeros(12), -1, 1e9
    for stem, notes in notes_by_stem.items():
        w = BASS_WEIGHT if stem == "bass" else 1.0
        for n in notes:
            overlap = min(n.end, b) - max(n.start, a)
            if overlap <= 0:
                continue
            chroma[n.pitch % 12] += w * overlap * max(n.amplitude, 0.1)
            if stem == "bass" and n.pitch < low:
                low, bass_pc = n.pitch, n.pitch % 12
    return chroma, bass_pc


def estimate_chords(given_audio: Mapping[str, np.ndarray], beats: Sequence[float], sr: int = 22050,
                    stickiness: float = 0.05, bass_bonus: float = 0.1) -> list[dict]:
    """One chord per beat from the transcriptions of the given pitched stems (drums ignored).

    Per beat the pitch-class weights of the sounding notes (`beat_chroma`) are matched
    (cosine) against the triad and seventh templates; a template rooted on the bass's
    lowest note gains `bass_bonus`, the previous beat's chord `stickiness`, and seventh
    chords pay `SEVENTH_PENALTY`. Beats without notes repeat the previous chord. Returns
    annotation-schema dicts: time, root_pc, quality, pitch_classes, name.
    """
    notes = {s: stem_notes(a, sr) for s, a in given_audio.items() if s in PITCHED_STEMS}
    n_samples = max((len(a) for a in given_audio.values()), default=0)
    times = [float(t) for t in beats]
    ends = times[1:] + [max(n_samples / sr, times[-1] if times else 0.0)]
    templates, chords, prev = _templates(), [], None
    for t, e in zip(times, ends):
        chroma, bass_pc = beat_chroma(notes, t, e)
        if chroma.sum() > 0:
            c = chroma / np.linalg.norm(chroma)
            scores = [float(c @ tpl) + bass_bonus * (root == bass_pc) + stickiness * ((root, q) == prev)
                      - SEVENTH_PENALTY * (len(CHORD_QUALITIES[q]) > 3) for root, q, tpl in templates]
            root, q, _ = templates[int(np.argmax(scores))]
            prev = (root, q)
        if prev is not None:
            root, q = prev
            chords.append({"time": t, "root_pc": root, "quality": q,
                           "pitch_classes": [(root + k) % 12 for k in CHORD_QUALITIES[q]],
                           "name": PC_NAMES[root] + _SUFFIX[q]})
    return chords
