"""Compose one multi-track song: style, tempo, key, progression, parts, arrangement, humanisation.

Everything derives from `numpy.random.default_rng([seed, index])`, so a track depends on
(seed, track index) only. No torch, no audio: numpy + the pure-Python theory module.

Arrangement rule (the contract for `active_bars`): a stem is *active* in a bar when it plays
there. Notes only start in active bars and are cut at the start of the next inactive bar, so an
inactive bar holds at most the release tail of the previous bar's notes; the renderer gates that
tail to exact silence after `RELEASE_ALLOWANCE` seconds (see `render.gate_inactive`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ...config import STEMS
from .arrange import arrange, drum_plan
from .bass import BASS_FAMILIES
from .comping import GUITAR_FAMILIES, PIANO_FAMILIES
from .drums import drum_part
from .notes import BarContext, Note, PartFactory
from .styles import STYLES, Style
from .theory import PROGRESSIONS, Chord, Key, Progression

BEATS_PER_BAR = 4
RELEASE_ALLOWANCE = 0.25  # seconds of release tail allowed after a stem drops out
TIMING_JITTER = {"drums": 0.004, "bass": 0.006, "guitar": 0.008, "piano": 0.008}  # seconds (std)
MAX_JITTER = 0.02  # seconds
VELOCITY_JITTER = 5.0
_PART_REGISTRY: dict[str, dict[str, PartFactory]] = {
    "bass": BASS_FAMILIES, "guitar": GUITAR_FAMILIES, "piano": PIANO_FAMILIES}


@dataclass(frozen=True)
class TimedNote:
    """A humanised note in seconds."""

    start: float
    end: float
    pitch: int
    vel: int


@dataclass
class Song:
    """A composed track: musical metadata and per-stem humanised notes (seconds)."""

    index: int
    style: str
    tempo: float
    key: Key
    progression: str
    n_bars: int
    duration: float
    chords: list[Chord]                      # one per beat, n_bars * beats_per_bar
    programs: dict[str, int]                 # GM program per stem (drum kit for "drums")
    parts: dict[str, str]                    # part family per stem
    active_bars: dict[str, list[bool]]
    notes: dict[str, list[TimedNote]] = field(default_factory=dict)
    beats_per_bar: int = BEATS_PER_BAR       # annotated beats per bar (6 for 6/8: eighth-note beats)
    meter: tuple[int, int] = (BEATS_PER_BAR, 4)  # time signature; `tempo` counts beats of 1/meter[1]

    @property
    def beat_seconds(self) -> float:
        """Returns the length of one beat in seconds."""
        return 60.0 / self.tempo

    def bar_times(self) -> list[float]:
        """Returns the start time of every bar (all < duration)."""
        return [b * self.beats_per_bar * self.beat_seconds for b in range(self.n_bars)]

    def annotation(self, track: str, sample_rate: int) -> dict:
        """Returns the annotation.json dictionary (schema in docs/data.md)."""
        beat_times = [i * self.beat_seconds for i in range(len(self.chords))]
        keep = [t for t in beat_times if t < self.duration - 1e-9]
        return {
            "track": track, "sample_rate": sample_rate, "duration": self.duration,
            "style": self.style, "tempo": self.tempo, "meter": list(self.meter),
            "key": self.key.to_dict(), "progression": self.progression,
            "beats": [round(t, 6) for t in keep],
            "downbeats": [round(t, 6) for t in self.bar_times()],
            "chords": [c.to_dict(t, self.key) for c, t in zip(self.chords, keep)],
            "programs": dict(self.programs), "active_bars": {k: list(v) for k, v in self.active_bars.items()},
            "bar_times": [round(t, 6) for t in self.bar_times()],
            "parts": dict(self.parts), "release_allowance": RELEASE_ALLOWANCE,
        }


def _choice(rng: np.random.Generator, options: tuple | list) -> object:
    """Returns one element of `options` drawn uniformly."""
    return options[int(rng.integers(len(options)))]


def _write_part(factory: PartFactory, rng: np.random.Generator, style: Style,
                chords: list[Chord], n_bars: int) -> list[Note]:
    """Returns the notes (beats) of one pitched part over all bars."""
    writer = factory(rng, style.subdiv)
    notes: list[Note] = []
    for bar in range(n_bars):
        beat0 = bar * BEATS_PER_BAR
        ctx = BarContext(bar, tuple(chords[beat0:beat0 + BEATS_PER_BAR]), chords[beat0 + BEATS_PER_BAR],
                         style.subdiv, BEATS_PER_BAR)
        notes += writer(ctx)
    return notes


def humanise(notes: list[Note], beat_s: float, active: list[bool], duration: float,
             rng: np.random.Generator, jitter: float, beats_per_bar: int = BEATS_PER_BAR) -> list[TimedNote]:
    """Returns notes in seconds with seeded timing/velocity jitter, cut to the active bars.

    Notes starting in inactive bars are dropped; a note is cut at the start of the next
    inactive bar and at `duration`; repeated pitches never overlap (the earlier is shortened).
    Bars are `beats_per_bar` beats of `beat_s` seconds.
    """
    bar_s = beats_per_bar * beat_s
    out: list[TimedNote] = []
    for note in notes:
        shift = float(np.clip(rng.normal(0.0, jitter), -MAX_JITTER, MAX_JITTER))
        vel = int(np.clip(round(note.vel + rng.normal(0.0, VELOCITY_JITTER)), 1, 127))
        bar = int(math.floor(note.start / beats_per_bar + 1e-9))
        if bar >= len(active) or not active[bar]:
            continue
        limit = next((b * bar_s for b in range(bar + 1, len(active)) if not active[b]), duration)
        start = max(0.0, note.start * beat_s + shift)
        end = min(start + note.dur * beat_s, limit, duration)
        if end - start > 0.01:
            out.append(TimedNote(start, end, note.pitch, vel))
    return _resolve_overlaps(out)


def _resolve_overlaps(notes: list[TimedNote]) -> list[TimedNote]:
    """Returns notes sorted by start where same-pitch notes never overlap (duplicates dropped)."""
    by_pitch = sorted(notes, key=lambda n: (n.pitch, n.start, -n.vel))
    out: list[TimedNote] = []
    for note in by_pitch:
        prev = out[-1] if out and out[-1].pitch == note.pitch else None
        if prev is not None and note.start - prev.start < 0.02:
            continue  # a duplicate onset of the same pitch
        if prev is not None and prev.end > note.start - 0.005:
            out[-1] = TimedNote(prev.start, note.start - 0.005, prev.pitch, prev.vel)
        out.append(note)
    return sorted(out, key=lambda n: (n.start, n.pitch))


def compose_song(seed: int, index: int, seconds: float = 15.0,
                 moves: dict[str, dict[str, float]] | None = None,
                 families: dict[str, Progression] | None = None,
                 registries: dict[str, dict[str, PartFactory]] | None = None) -> Song:
    """Returns the song for track `index` of the corpus with `seed` (deterministic).

    `moves` is the arrangement's move table (default `arrange.MOVES`; "synth-full" passes
    `arrange.FULL_MOVES`). `families`: the progression is drawn from these (uniformly) instead
    of from the style's own (the "synth-changes" and "synth-sevenths" composers). `registries`:
    a stem's part families are written by these factories instead (same names; the
    "synth-voicings" composer), so the song is the same but for how those parts are voiced.

    The draw order is fixed: style, tempo, progression, key, programs, part families,
    arrangement, parts, drums, humanisation.
    """
    rng = np.random.default_rng([seed, index])
    style = STYLES[str(_choice(rng, sorted(STYLES)))]
    tempo = float(rng.integers(int(style.tempo[0]), int(style.tempo[1]) + 1))
    progression = families[str(_choice(rng, sorted(families)))] if families \
        else PROGRESSIONS[str(_choice(rng, style.progressions))]
    key = Key(int(rng.integers(12)), progression.mode)
    programs = {stem: int(_choice(rng, style.programs[stem])) for stem in STEMS}
    parts = {"bass": str(_choice(rng, style.bass)), "drums": style.name,
             "guitar": str(_choice(rng, style.guitar)), "piano": str(_choice(rng, style.piano))}
    beat_s = 60.0 / tempo
    n_bars = max(1, math.ceil(seconds / (BEATS_PER_BAR * beat_s) - 1e-9))
    chords = progression.chords_per_beat(key.tonic_pc, n_bars + 1, BEATS_PER_BAR)
    active = arrange(rng, n_bars, STEMS, moves)
    song = Song(index, style.name, tempo, key, progression.name, n_bars, float(seconds),
                chords[: n_bars * BEATS_PER_BAR], programs, parts, active)
    raw: dict[str, list[Note]] = {}
    for stem, registry in _PART_REGISTRY.items():
        registry = (registries or {}).get(stem, registry)
        raw[stem] = _write_part(registry[parts[stem]], rng, style, chords, n_bars)
    raw["drums"] = drum_part(style, drum_plan(rng, style, active, n_bars), BEATS_PER_BAR, rng)
    for stem in STEMS:
        song.notes[stem] = humanise(raw[stem], beat_s, active[stem], song.duration, rng, TIMING_JITTER[stem])
    return song
