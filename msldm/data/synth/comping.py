"""Guitar and piano parts: strums, arpeggios, power chords, chops, block and syncopated comping.

Rhythm templates use `notes.realize_template` symbols: `X`/`x` hit (accented / normal),
`D`/`U` down / up strum, `o` muted ghost chop, `y` the alternate shape (shuffle comp).
Piano right-hand voicings are voice-led (`theory.voice_lead`) from chord to chord.
"""

from __future__ import annotations

import functools

import numpy as np

from .notes import BarContext, BarWriter, Note, PartFactory, accent, realize_template
from .theory import Chord, nearest_pitch, voice_lead

STRUM_GAP = 0.025  # beats between strings of a strum


def guitar_voicing(chord: Chord, inverted: bool = False) -> list[int]:
    """Returns a five-string barre-like voicing: root (E2..D#3), fifth, octave/7th, third, fifth.
    `inverted`: the first inversion instead, no root on the bottom string: the third (E2..D#3),
    then the fifth, root and third above it and the seventh (or fifth) on top."""
    upper = chord.seventh if chord.quality in ("7", "min7", "maj7") else 12
    if inverted:
        third = nearest_pitch((chord.root_pc + chord.third) % 12, 40)
        fifth = nearest_pitch((chord.root_pc + chord.fifth) % 12, third + 1)
        root = nearest_pitch(chord.root_pc, fifth + 1)
        top = chord.root_pc + (chord.fifth if upper == 12 else upper)
        return [third, fifth, root, third + 12, nearest_pitch(top % 12, third + 13)]
    root = nearest_pitch(chord.root_pc, 40)
    return [root, root + chord.fifth, root + upper, root + 12 + chord.third, root + 12 + chord.fifth]


def _pick(rng: np.random.Generator, options: tuple[str, ...], subdiv: int) -> list[tuple[int, int, str]]:
    """Returns the runs of one template (chosen by `rng`) that fits the grid."""
    fitting = [t for t in options if len(t) == 4 * subdiv]
    template = fitting[int(rng.integers(len(fitting)))]
    return realize_template(template)


def _strum(rng: np.random.Generator, subdiv: int, inverted: bool = False) -> BarWriter:
    """Open strumming: down strums low->high on all strings, lighter up strums on the top three
    (`inverted`: on `guitar_voicing`'s first inversion)."""
    runs = _pick(rng, ("D---D-U---U-D-U-", "D---D---D-U-D-U-", "D-------D---D-U-", "D-------D-------",
                       "D--U--D--U-U", "D-----D--D-U"), subdiv)

    def write(ctx: BarContext) -> list[Note]:
        notes = []
        for step, length, symbol in runs:
            voicing = guitar_voicing(ctx.chord_at(step), inverted)
            strings = voicing if symbol == "D" else voicing[:-4:-1]
            base = accent(step, subdiv, 78 if symbol == "D" else 62)
            for i, pitch in enumerate(strings):
                start = ctx.beat_of(step) + i * STRUM_GAP
                notes.append(Note(start, length / subdiv * 0.95 - i * STRUM_GAP, pitch, base - 2 * i))
        return notes

    return write


def _power_chords(rng: np.random.Generator, subdiv: int) -> BarWriter:
    """Power chords (root, fifth, octave): palm-muted chugs `x`, ringing accents `X`."""
    runs = _pick(rng, ("X.x.x.x.X.x.x.x.", "X.xxX.x.X.xxX.x.", "X-------X---x.x.", "X---x.x.X---x.x."), subdiv)

    def write(ctx: BarContext) -> list[Note]:
        notes = []
        for step, length, symbol in runs:
            chord = ctx.chord_at(step)
            root = nearest_pitch(chord.root_pc, 40)
            dur = length / subdiv * (0.95 if symbol == "X" else 0.45)
            vel = 104 if symbol == "X" else 84
            notes += [Note(ctx.beat_of(step), dur, p, vel) for p in (root, root + 7, root + 12)]
        return notes

    return write


def _arpeggio_guitar(rng: np.random.Generator, subdiv: int, inverted: bool = False) -> BarWriter:
    """Fingerpicked arpeggio over the barre voicing (`inverted`: its first inversion); picked
    notes ring for a beat and a half."""
    orders = ((0, 2, 3, 4, 3, 2, 1, 2), (0, 3, 2, 4, 1, 3, 2, 4), (0, 1, 2, 3, 4, 3, 2, 1))
    order = orders[int(rng.integers(len(orders)))]
    step_len = max(1, subdiv // 2) if subdiv % 2 == 0 else subdiv

    def write(ctx: BarContext) -> list[Note]:
        notes = []
        for k, step in enumerate(range(0, 4 * subdiv, step_len)):
            voicing = guitar_voicing(ctx.chord_at(step), inverted)
            pitch = voicing[order[k % len(order)]]
            notes.append(Note(ctx.beat_of(step), 1.5, pitch, accent(step, subdiv, 70)))
        return notes

    return write


def _chops(options: tuple[str, ...], top: int, low: int) -> PartFactory:
    """Short chord chops on the top `top` notes of a voicing placed from MIDI `low` up."""

    def factory(rng: np.random.Generator, subdiv: int) -> BarWriter:
        runs = _pick(rng, options, subdiv)

        def write(ctx: BarContext) -> list[Note]:
            notes = []
            for step, length, symbol in runs:
                chord = ctx.chord_at(step)
                voicing = voice_lead(chord, None, low, low + 16)[-top:]
                ghost = symbol == "o"
                dur = (0.3 if ghost else 0.6 * length) / subdiv
                vel = 44 if ghost else accent(step, subdiv, 88)
                notes += [Note(ctx.beat_of(step), dur, p, vel) for p in voicing]
            return notes

        return write

    return factory


def _shuffle_comp(rng: np.random.Generator, subdiv: int) -> BarWriter:
    """Boogie comp: root+fifth (`x`) alternating with root+sixth (`y`) on the shuffle grid."""
    runs = _pick(rng, ("x.xy.yx.xy.y", "x-.y-.x-.y-.", "x-xy-yx-xy-y"), subdiv) if subdiv == 3 else \
        _pick(rng, ("x.x.y.y.x.x.y.y.",), subdiv)

    def write(ctx: BarContext) -> list[Note]:
        notes = []
        for step, length, symbol in runs:
            root = nearest_pitch(ctx.chord_at(step).root_pc, 40)
            upper = root + (7 if symbol == "x" else 9)
            vel = accent(step, subdiv, 80)
            notes += [Note(ctx.beat_of(step), length / subdiv * 0.8, p, vel) for p in (root, upper)]
        return notes

    return write


def _piano_family(options: tuple[str, ...], arpeggio: bool = False, gate: float = 0.92,
                  left_hand: bool = True) -> PartFactory:
    """Piano: left-hand root octave on chord changes + right-hand voice-led voicings (or arpeggio);
    without `left_hand`, the right hand alone (its lowest note is the root only in root position)."""

    def factory(rng: np.random.Generator, subdiv: int) -> BarWriter:
        runs = _pick(rng, options, subdiv)
        state: dict[str, tuple[int, ...] | None] = {"rh": None}

        def write(ctx: BarContext) -> list[Note]:
            notes = _left_hand(ctx) if left_hand else []
            for k, (step, length, symbol) in enumerate(runs):
                chord = ctx.chord_at(step)
                state["rh"] = voice_lead(chord, state["rh"], 57, 79)
                vel = accent(step, subdiv, 84 if symbol == "X" else 72)
                if arpeggio:
                    cycle = list(state["rh"]) + [state["rh"][0] + 12] + list(state["rh"][-2:0:-1])
                    notes.append(Note(ctx.beat_of(step), 1.2, cycle[k % len(cycle)], vel - 8))
                else:
                    dur = length / subdiv * gate
                    notes += [Note(ctx.beat_of(step), dur, p, vel) for p in state["rh"]]
            return notes

        return write

    return factory


def _left_hand(ctx: BarContext) -> list[Note]:
    """Returns the left hand: root + octave (C2..B2 register) held until the next chord change."""
    notes: list[Note] = []
    beat = 0
    while beat < ctx.beats_per_bar:
        chord = ctx.chords[beat]
        end = beat + 1
        while end < ctx.beats_per_bar and ctx.chords[end] == chord:
            end += 1
        root = nearest_pitch(chord.root_pc, 36)
        dur = (end - beat) * 0.95
        notes += [Note(ctx.start + beat, dur, root, 70), Note(ctx.start + beat, dur, root + 12, 64)]
        beat = end
    return notes


#: Registry of guitar families (name -> factory).
GUITAR_FAMILIES: dict[str, PartFactory] = {
    "strum": _strum,
    "power_chords": _power_chords,
    "arpeggio": _arpeggio_guitar,
    "skank": _chops(("..x...x...x...x.", "..x...x...x..xx.", "..x-..x-..x-..x-"), 3, 60),
    "funk_scratch": _chops(("x.oxo.x.oxo.x.ox", "xoox.ox.xoox.oxo", "o.x.oox.o.x.oox."), 3, 62),
    "shuffle_comp": _shuffle_comp,
}

#: The guitar families with `inverted` voicings (the "synth-voicings" probe composer): strums
#: and arpeggios on first inversions; the other families keep theirs (power chords are roots
#: and fifths, chops and the shuffle comp are already voiced above the bass or on root and fifth).
GUITAR_FAMILIES_INVERTED: dict[str, PartFactory] = {
    **GUITAR_FAMILIES, "strum": functools.partial(_strum, inverted=True),
    "arpeggio": functools.partial(_arpeggio_guitar, inverted=True)}

# Piano/keys families: name -> (rhythm templates, options of `_piano_family`).
_PIANO_SPECS: dict[str, tuple[tuple[str, ...], dict]] = {
    "block_quarters": (("X---x---X---x---", "x--.x--.x--.x--.", "X--x--x--x-x"), {}),
    "block_half": (("X-------x-------", "X-----x-----", "X-----------x---"), {}),
    "sync_comp": (("x--x--x-....x-x-", "x-.x-.-x..x-.x.-", "x..x-.x..x-.", "..x-..x-..x-..x-"), {}),
    "arpeggio": (("x.x.x.x.x.x.x.x.", "x.xx.xx.xx.x"), {"arpeggio": True}),
    "stabs": (("x..x..x...x.x...", ".x.x..x..x.x..x.", "x..x..x..x.x"), {"gate": 0.45}),
    "shuffle_comp": (("...x.x...x.x", "x..x.xx..x.x", "....x-......x---"), {"gate": 0.7}),
}

#: Registry of piano/keys families (name -> factory).
PIANO_FAMILIES: dict[str, PartFactory] = {
    name: _piano_family(options, **kw) for name, (options, kw) in _PIANO_SPECS.items()}

#: The same families played by the right hand alone (the "synth-voicings" probe composer).
PIANO_FAMILIES_RIGHT_HAND: dict[str, PartFactory] = {
    name: _piano_family(options, left_hand=False, **kw) for name, (options, kw) in _PIANO_SPECS.items()}
