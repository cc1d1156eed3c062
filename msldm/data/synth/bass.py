"""Bass-line families: every line follows the chord roots, with style-specific rhythm.

Template symbols (see `notes.realize_template`): `R` root, `3` the chord's third, `5` fifth,
`6` major sixth, `7` seventh, `8` octave, `g` ghost (dead) note on the root, `A` approach note
to the next bar's root (a semitone below or a whole tone above it).
Roots sit in E1..D#2 (MIDI 28..39), so every line stays in a bass register.
"""

from __future__ import annotations

import numpy as np

from .notes import BarContext, BarWriter, Note, PartFactory, accent, realize_template, scale_template
from .theory import Chord, nearest_pitch

BASS_LOW = 28

_TEMPLATES: dict[str, tuple[str, ...]] = {
    "root_eighths": ("R.R.R.R.R.R.R.R.", "R.R.R.R.R.R.R.A.", "R.R.R.R.R.R.5.8."),
    "root_fifth": ("R---R---5---R---", "R---5---8---5---", "R-------5-------", "R---R.R.5---R.A."),
    "octave_pops": ("R.8.R.8.R.8.R.8.", "R.8gR.8.R.8gR.85", "R-8.R-8.R-8.R.8A"),
    "pop_sync": ("R--R--R-R---R-5-", "R--R--R---R.R-A.", "R---..R-R-R-5-R-"),
    "funk_sync": ("R..gR.8.R.7.R5g8", "R.gR..R8.gR.7.5.", "R..R..g.R.8.7.5g", "R--g.8R.R.7.8..g"),
    "sustained": ("R---------------", "R-------5-------", "R-----------5---"),
    "boogie": ("R.R3.35.56.6", "R.35.67.65.3", "R.R5.56.65.5"),
}
_GATE: dict[str, float] = {"funk_sync": 0.6, "octave_pops": 0.7, "root_eighths": 0.8, "sustained": 0.97}


def _symbol_pitch(symbol: str, chord: Chord, ctx: BarContext, rng: np.random.Generator) -> int:
    """Returns the MIDI pitch for one template symbol over `chord`."""
    root = nearest_pitch(chord.root_pc, BASS_LOW)
    if symbol == "A":
        target = nearest_pitch(ctx.next_chord.root_pc, BASS_LOW)
        return target - 1 if rng.random() < 0.6 else target + 2
    offsets = {"R": 0, "g": 0, "3": chord.third, "5": chord.fifth, "6": 9, "7": chord.seventh, "8": 12}
    return root + offsets[symbol]


def _template_family(name: str) -> PartFactory:
    """Returns a factory that picks one of the family's templates per track and repeats it."""

    def factory(rng: np.random.Generator, subdiv: int) -> BarWriter:
        options = [t for t in _TEMPLATES[name] if len(t) == 4 * subdiv]
        if not options:  # a straight template on a triplet grid: fall back to quarter roots
            options = ["R.." * 4]
        template = scale_template(options[int(rng.integers(len(options)))], subdiv)
        runs = realize_template(template)
        gate = _GATE.get(name, 0.9)

        def write(ctx: BarContext) -> list[Note]:
            notes = []
            for step, length, symbol in runs:
                pitch = _symbol_pitch(symbol, ctx.chord_at(step), ctx, rng)
                if symbol == "g":
                    notes.append(Note(ctx.beat_of(step), 0.4 / subdiv, pitch, 48))
                    continue
                dur = length * gate / subdiv
                notes.append(Note(ctx.beat_of(step), dur, pitch, accent(step, subdiv, 82)))
            return notes

        return write

    return factory


def _walking(rng: np.random.Generator, subdiv: int) -> BarWriter:
    """Walking bass: quarter notes, root on chord changes, chord tones, approach into the next root."""

    def tone(chord: Chord, previous: int) -> int:
        root = nearest_pitch(chord.root_pc, BASS_LOW)
        candidates = [root + i for i in (chord.third, chord.fifth, 12, chord.seventh, 2)]
        candidates = [p for p in candidates if abs(p - previous) <= 9] or candidates
        return int(candidates[int(rng.integers(len(candidates)))])

    def write(ctx: BarContext) -> list[Note]:
        notes: list[Note] = []
        previous = nearest_pitch(ctx.chords[0].root_pc, BASS_LOW)
        for beat in range(ctx.beats_per_bar):
            chord = ctx.chords[beat]
            changed = beat == 0 or chord != ctx.chords[beat - 1]
            if changed:
                pitch = nearest_pitch(chord.root_pc, BASS_LOW)
            elif beat == ctx.beats_per_bar - 1:
                pitch = _symbol_pitch("A", chord, ctx, rng)
            else:
                pitch = tone(chord, previous)
            notes.append(Note(ctx.start + beat, 0.92, pitch, accent(beat * subdiv, subdiv, 84)))
            previous = pitch
        return notes

    return write


#: Registry of bass families (name -> factory).
BASS_FAMILIES: dict[str, PartFactory] = {name: _template_family(name) for name in _TEMPLATES}
BASS_FAMILIES["walking"] = _walking
