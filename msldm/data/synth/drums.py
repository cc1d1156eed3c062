"""Drum part: style grooves on GM channel 10, fills at phrase ends, crashes on section downbeats."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .notes import Note
from .styles import CRASH, KICK, SNARE, STEP_VELOCITY, TOMS, Groove, Style

DRUM_DUR = 0.2  # beats; percussion ignores note-off in GM kits but MIDI wants one


@dataclass(frozen=True)
class DrumBar:
    """What the drummer is told for one bar."""

    bar: int
    groove: int        # index into style.grooves
    fill: bool         # play a fill at the end of this bar
    crash: bool        # crash cymbal (with kick) on the downbeat
    fill_beats: int = 1


def _groove_notes(groove: Groove, start: float, subdiv: int, until_step: int) -> list[Note]:
    """Returns the groove's hits from step 0 up to (not including) `until_step`."""
    notes = []
    for pitch, pattern in groove.items():
        for step, char in enumerate(pattern[:until_step]):
            if char in STEP_VELOCITY:
                notes.append(Note(start + step / subdiv, DRUM_DUR, pitch, STEP_VELOCITY[char]))
    return notes


def _fill_notes(kind: int, start: float, first_step: int, steps: int, subdiv: int) -> list[Note]:
    """Returns a fill over grid steps [first_step, steps): snare roll, tom run or snare-to-toms."""
    notes = []
    count = steps - first_step
    for i, step in enumerate(range(first_step, steps)):
        if kind == 0:
            pitch = SNARE
        elif kind == 1:
            pitch = TOMS[min(i * len(TOMS) // count, len(TOMS) - 1)]
        else:
            pitch = SNARE if i < count // 2 else TOMS[min((i - count // 2) * 2, len(TOMS) - 1)]
        vel = int(70 + 45 * (i + 1) / count)
        notes.append(Note(start + step / subdiv, DRUM_DUR, pitch, vel))
    notes.append(Note(start + first_step / subdiv, DRUM_DUR, KICK, 96))
    return notes


def drum_part(style: Style, bars: list[DrumBar], beats_per_bar: int = 4,
              rng: np.random.Generator | None = None) -> list[Note]:
    """Returns the drum notes (beats) for the given bars of `style`.

    The fill replaces the last `fill_beats` beats of a bar's groove; a crash (with a kick)
    marks the downbeat of a section. The fill kind is drawn once per track from `rng`.
    """
    kind = int(rng.integers(3)) if rng is not None else 0
    subdiv = style.subdiv
    steps = beats_per_bar * subdiv
    notes: list[Note] = []
    for spec in bars:
        start = float(spec.bar * beats_per_bar)
        groove = style.grooves[spec.groove]
        until = steps - spec.fill_beats * subdiv if spec.fill else steps
        bar_notes = _groove_notes(groove, start, subdiv, until)
        if spec.fill:
            bar_notes += _fill_notes(kind, start, until, steps, subdiv)
        if spec.crash:
            bar_notes = [n for n in bar_notes if not (n.start == start and n.pitch != KICK)]
            bar_notes += [Note(start, DRUM_DUR, CRASH, 112)]
            if not any(n.start == start and n.pitch == KICK for n in bar_notes):
                bar_notes.append(Note(start, DRUM_DUR, KICK, 110))
        notes += bar_notes
    return notes
