"""Shared note types for the composer: notes in beats, per-bar context and step templates.

A *step template* is a string with one character per grid step of a bar (see `styles.Style`):
a symbol starts a note, `-` holds the previous note, `.` is a rest. The meaning of the symbols
is up to the part family; `realize_template` turns it into (step, length, symbol) runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .theory import Chord


@dataclass(frozen=True)
class Note:
    """A note in musical time: `start` and `dur` in beats (quarter notes), MIDI pitch, velocity."""

    start: float
    dur: float
    pitch: int
    vel: int


@dataclass(frozen=True)
class BarContext:
    """What a part family sees when it writes one bar."""

    bar: int
    chords: tuple[Chord, ...]  # one per beat of this bar
    next_chord: Chord          # the chord on the first beat of the next bar
    subdiv: int                # grid steps per beat
    beats_per_bar: int = 4

    @property
    def start(self) -> float:
        """Returns the bar's start in beats."""
        return float(self.bar * self.beats_per_bar)

    def chord_at(self, step: int) -> Chord:
        """Returns the chord sounding at grid step `step` of this bar."""
        return self.chords[min(step // self.subdiv, len(self.chords) - 1)]

    def beat_of(self, step: float) -> float:
        """Returns the absolute beat of grid step `step` (may be fractional)."""
        return self.start + step / self.subdiv


#: A part writer: called once per bar, in bar order, returns that bar's notes.
BarWriter = Callable[[BarContext], list[Note]]
#: A part family: draws its per-track choices from `rng` and returns a bar writer.
PartFactory = Callable[[np.random.Generator, int], BarWriter]


def realize_template(template: str) -> list[tuple[int, int, str]]:
    """Returns (step, length_in_steps, symbol) for each note-starting symbol of `template`.

    The length counts the symbol's own step plus the `-` holds that follow it.
    """
    runs: list[tuple[int, int, str]] = []
    for step, char in enumerate(template):
        if char == "-":
            if runs and runs[-1][0] + runs[-1][1] == step:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1, runs[-1][2])
        elif char != ".":
            runs.append((step, 1, char))
    return runs


def scale_template(template: str, subdiv: int) -> str:
    """Returns `template` unchanged if it fits a bar of 4*subdiv steps, else raises ValueError."""
    if len(template) != 4 * subdiv:
        raise ValueError(f"template {template!r} does not fit {4 * subdiv} steps")
    return template


def accent(step: int, subdiv: int, base: int) -> int:
    """Returns `base` velocity lifted on beats (+10) and on the half bar (+6 more)."""
    vel = base
    if step % subdiv == 0:
        vel += 10
    if step % (2 * subdiv) == 0:
        vel += 6
    return min(vel, 127)
