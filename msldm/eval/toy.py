"""A tiny numpy-synthesised corpus in the contract's data layout, for tests and demos.

Each track: a 4/4 chord progression (one chord per bar) in a key at a tempo, with
- bass: harmonic tones (3 partials) on the chord root / fifth, pattern 1, 2&, 3, 4;
- guitar: 8th-note arpeggios of the chord tones (octave 3-4);
- piano: block triads (octave 4) on beats 1 and 3;
- drums: kick (pitch-swept sine) on 1 and 3, snare (noise burst) on 2 and 4, hi-hat
  (high-passed noise tick) on every 8th.
Annotations follow the contract's `annotation.json` schema (chords one per beat).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from msldm.config import STEMS

MAJOR_PROG = ((0, "maj"), (7, "maj"), (9, "min"), (5, "maj"))  # I V vi IV
MINOR_PROG = ((0, "min"), (8, "maj"), (3, "maj"), (10, "maj"))  # i VI III VII
QUALITY = {"maj": (0, 4, 7), "min": (0, 3, 7)}
NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def _tone(midi: float, dur: float, sr: int, partials: int, decay: float, amp: float) -> np.ndarray:
    t = np.arange(int(dur * sr)) / sr
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    y = sum(np.sin(2 * np.pi * f0 * k * t) / k ** 1.5 for k in range(1, partials + 1) if f0 * k < sr / 2)
    release = np.clip((dur - t) / 0.02, 0.0, 1.0)  # 20 ms fade: no click at the note end
    env = np.exp(-t / decay) * np.minimum(1.0, t / 0.004) * release
    return amp * y * env


def _add(out: np.ndarray, y: np.ndarray, start: float, sr: int) -> None:
    i = int(round(start * sr))
    if i >= len(out):
        return
    n = min(len(y), len(out) - i)
    out[i:i + n] += y[:n]


def _drum(kind: str, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(0.25 * sr)) / sr
    if kind == "kick":
        phase = 2 * np.pi * np.cumsum(50 + 100 * np.exp(-t / 0.03)) / sr
        return 0.8 * np.sin(phase) * np.exp(-t / 0.12)
    noise = rng.standard_normal(t.size)
    if kind == "snare":
        return 0.35 * noise * np.exp(-t / 0.05)
    hat = np.diff(noise, prepend=0.0)
    return 0.08 * hat * np.exp(-t / 0.015)


def synth_track(tempo: float, tonic_pc: int, mode: str, seconds: float, sr: int = 22050,
                seed: int = 0) -> tuple[dict[str, np.ndarray], dict]:
    """Stems {name: float32 [N]} and an annotation dict (contract schema) of one toy track."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    stems = {s: np.zeros(n) for s in STEMS}
    beat = 60.0 / tempo
    prog = MAJOR_PROG if mode == "major" else MINOR_PROG
    beats = np.arange(0.0, seconds - 1e-9, beat)
    chords = []
    for i, b in enumerate(beats):
        deg, q = prog[(i // 4) % len(prog)]
        root = (tonic_pc + deg) % 12
        pcs = [(root + k) % 12 for k in QUALITY[q]]
        chords.append({"time": float(b), "root_pc": root, "quality": q, "pitch_classes": pcs,
                       "name": NAMES[root] + ("m" if q == "min" else "")})
        _render_beat(stems, i % 4, float(b), beat, root, pcs, sr, rng)
    stems = {k: v.astype(np.float32) for k, v in stems.items()}
    ann = {"track": "", "sample_rate": sr, "duration": seconds, "style": "toy", "tempo": tempo,
           "meter": [4, 4], "key": {"tonic_pc": tonic_pc, "mode": mode,
                                    "name": f"{NAMES[tonic_pc]} {mode}"},
           "progression": "I-V-vi-IV" if mode == "major" else "i-VI-III-VII",
           "beats": [float(b) for b in beats], "downbeats": [float(b) for b in beats[::4]],
           "chords": chords, "programs": {"bass": 33, "drums": 0, "guitar": 27, "piano": 0},
           "active_bars": {s: [True] * len(beats[::4]) for s in STEMS},
           "bar_times": [float(b) for b in beats[::4]]}
    return stems, ann


def _render_beat(stems: dict[str, np.ndarray], pos: int, b: float, beat: float, root: int,
                 pcs: list[int], sr: int, rng: np.random.Generator) -> None:
    bass_midi = 36 + root
    bass_notes = {0: [(0.0, bass_midi)], 1: [(0.5, bass_midi)], 2: [(0.0, bass_midi + 7)],
                  3: [(0.0, bass_midi)]}[pos]
    for off, m in bass_notes:
        _add(stems["bass"], _tone(m, 0.9 * beat, sr, 3, 0.4, 0.35), b + off * beat, sr)
    for j in range(2):
        pc = pcs[(2 * pos + j) % 3]
        _add(stems["guitar"], _tone(52 + (pc - 4) % 12, 0.5 * beat, sr, 4, 0.15, 0.2),
             b + j * beat / 2, sr)
    if pos in (0, 2):
        for pc in pcs:
            _add(stems["piano"], _tone(60 + pc, 1.8 * beat, sr, 3, 0.5, 0.12), b, sr)
    _add(stems["drums"], _drum("kick" if pos in (0, 2) else "snare", sr, rng), b, sr)
    for j in range(2):
        _add(stems["drums"], _drum("hat", sr, rng), b + j * beat / 2, sr)


TOY_TRACKS: tuple[tuple[float, int, str], ...] = (
    (120.0, 0, "major"), (97.0, 6, "major"), (140.0, 9, "minor"), (108.0, 3, "minor"),
    (126.0, 7, "major"), (90.0, 1, "minor"))
"""(tempo, tonic pc, mode) of the toy tracks, consecutive ones in different keys and tempi."""


def write_toy_corpus(root: str | Path, n_tracks: int = 4, seconds: float = 8.0, sr: int = 22050,
                     split: str = "test", seed: int = 0) -> list[Path]:
    """Write `n_tracks` toy tracks under `root/split/TrackNNNNN/` (stems, mixture,
    annotation.json). Returns the track folders."""
    import soundfile as sf

    out = []
    for i in range(n_tracks):
        tempo, tonic, mode = TOY_TRACKS[i % len(TOY_TRACKS)]
        stems, ann = synth_track(tempo, (tonic + 5 * (i // len(TOY_TRACKS))) % 12, mode, seconds, sr,
                                 seed + i)
        d = Path(root) / split / f"Track{i + 1:05d}"
        d.mkdir(parents=True, exist_ok=True)
        ann["track"] = d.name
        for s, a in stems.items():
            sf.write(d / f"{s}.wav", a, sr, subtype="FLOAT")
        sf.write(d / "mixture.wav", sum(stems.values()).astype(np.float32), sr, subtype="FLOAT")
        (d / "annotation.json").write_text(json.dumps(ann, indent=1))
        out.append(d)
    return out
