"""Part families of the held-out composer (`heldout`): jazz walking bass, bossa and 6/8 bass lines,
shell-voiced guitar and piano comping over seventh chords.

Families follow `notes.PartFactory`: `factory(rng, subdiv)` draws the per-track choices and
returns a bar writer `write(BarContext) -> list[Note]`. Rhythm templates use
`notes.realize_template` over one bar of `beats_per_bar * subdiv` steps (a template that does
not fit the bar is a ValueError). On the triplet grid (subdiv 3) step 2 of a beat is the swung
offbeat eighth, at 2/3 of the beat.

Bass symbols: `R` root, `3` third, `5` fifth, `7` seventh, `8` octave, `N` the next bar's root
(anticipation), `A` a chromatic approach to the next bar's root. Comping symbols: `X` accent,
`x` normal, `o` soft ghost. Every comping voicing is made of chord tones and holds the third
and the seventh (shells: root-7-3 / root-3-7; rootless: 3-5-7 voice-led; close: all four).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .notes import BarContext, BarWriter, Note, PartFactory, realize_template
from .theory import Chord, nearest_pitch, voice_lead

BASS_LOW, BASS_HIGH = 28, 50   # walking range E1..D3
ROOT_LOW = 28                  # template bass roots E1..D#2 (as in `bass.py`)
STRUM_GAP = 0.02               # beats between the strings of a guitar chord

#: A voicer turns a chord (and the previous voicing, for voice leading) into MIDI pitches.
Voicer = Callable[[Chord, "tuple[int, ...] | None"], tuple[int, ...]]
#: A low part (piano left hand, guitar thumb) written once per bar.
LowPart = Callable[[BarContext], list[Note]]


def bar_steps(ctx: BarContext) -> int:
    """Returns the number of grid steps in the bar of `ctx`."""
    return ctx.beats_per_bar * ctx.subdiv


def fit_template(template: str, ctx: BarContext) -> None:
    """Raises ValueError unless `template` has exactly one character per grid step of the bar."""
    if len(template) != bar_steps(ctx):
        raise ValueError(f"template {template!r} does not fit a bar of {bar_steps(ctx)} steps")


def metric_accent(step: int, ctx: BarContext, base: int) -> int:
    """Returns `base` velocity lifted on beats (+8) and on the strong half-bar points (+6 more).

    The strong points are the downbeat and the middle of the bar: beat 3 in 4/4, eighth 4 in 6/8.
    """
    vel = base + (8 if step % ctx.subdiv == 0 else 0)
    if step % max(1, bar_steps(ctx) // 2) == 0:
        vel += 6
    return min(vel, 127)


def place(pc: int, near: int, low: int = BASS_LOW, high: int = BASS_HIGH) -> int:
    """Returns the MIDI pitch of pitch class `pc` in [low, high] closest to `near` (lower on ties)."""
    options = [p for p in range(low, high + 1) if p % 12 == pc % 12]
    return min(options, key=lambda p: (abs(p - near), p))


def close_voicing(pcs: Sequence[int], previous: tuple[int, ...] | None, low: int,
                  high: int) -> tuple[int, ...]:
    """Returns the close-position inversion of `pcs` within [low, high] nearest `previous` (voice leading).

    Ties go to the lower voicing; raises ValueError when no inversion fits the range.
    """
    centre = sum(previous) / len(previous) if previous else (low + high) / 2
    best: tuple[int, ...] | None = None
    best_cost = float("inf")
    for inversion in range(len(pcs)):
        order = list(pcs[inversion:]) + list(pcs[:inversion])
        for base in range(low, high + 1):
            if base % 12 != order[0] % 12:
                continue
            notes = [base]
            for pc in order[1:]:
                notes.append(notes[-1] + ((pc - notes[-1]) % 12 or 12))
            cost = abs(sum(notes) / len(notes) - centre)
            if notes[-1] <= high and cost < best_cost:
                best, best_cost = tuple(notes), cost
    if best is None:
        raise ValueError(f"no voicing of {list(pcs)} in [{low}, {high}]")
    return best


def guitar_shell(chord: Chord, previous: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """Returns a three-string shell: root-7th-3rd from a low root (E2..A2), root-3rd-7th from a higher one."""
    root = nearest_pitch(chord.root_pc, 40)
    if root <= 45:
        return root, root + chord.seventh, root + 12 + chord.third
    return root, root + chord.third, root + chord.seventh


def rootless(low: int, high: int) -> Voicer:
    """Returns a voicer of the 3rd, 5th and 7th (no root), voice-led within [low, high]."""

    def voicer(chord: Chord, previous: tuple[int, ...] | None) -> tuple[int, ...]:
        return close_voicing(chord.pitch_classes[1:], previous, low, high)

    return voicer


def close_four(low: int, high: int) -> Voicer:
    """Returns a voicer of all chord tones in close position, voice-led within [low, high]."""

    def voicer(chord: Chord, previous: tuple[int, ...] | None) -> tuple[int, ...]:
        return voice_lead(chord, previous, low, high)

    return voicer


def guitar_arp_voicing(chord: Chord) -> tuple[int, ...]:
    """Returns a four-note guitar voicing for arpeggios: root (E2..D#3), fifth, seventh, third an octave up."""
    root = nearest_pitch(chord.root_pc, 40)
    return root, root + chord.fifth, root + chord.seventh, root + 12 + chord.third


# --- bass -------------------------------------------------------------------------------------


def _approach(target_pc: int, previous: int, rng: np.random.Generator) -> int:
    """Returns a note leading into `target_pc`: a semitone below or above it, or its fifth."""
    target = place(target_pc, previous)
    fifth = target + 7 if target + 7 <= BASS_HIGH else target - 5
    options = [p for p in (target - 1, target + 1, fifth) if BASS_LOW <= p <= BASS_HIGH]
    return int(options[int(rng.integers(len(options)))])


def _chord_tone(pcs: Sequence[int], previous: int, rng: np.random.Generator) -> int:
    """Returns a chord tone (one of `pcs`) near `previous` (within a fourth when possible), not repeating it."""
    options = sorted({place(pc, previous) for pc in pcs} - {previous}) or [previous]
    near = [p for p in options if abs(p - previous) <= 5] or options
    return int(near[int(rng.integers(len(near)))])


def _walk_step(chord: Chord, before: Chord | None, after: Chord, previous: int | None, downbeat: bool,
               rng: np.random.Generator) -> int:
    """Returns the walking-bass pitch of one beat.

    A chord change gets the root; a downbeat without a change gets root, third or fifth; the beat
    before a change approaches the next root; other beats take chord tones.
    """
    if previous is None or chord != before:
        return place(chord.root_pc, 36 if previous is None else previous)
    if downbeat:
        return _chord_tone(chord.pitch_classes[:3], previous, rng)
    if after != chord:
        return _approach(after.root_pc, previous, rng)
    return _chord_tone(chord.pitch_classes, previous, rng)


@dataclass
class _WalkState:
    """The walking bass's memory across bars: its last pitch and chord."""

    pitch: int | None = None
    chord: Chord | None = None


def _jazz_walking(rng: np.random.Generator, subdiv: int) -> BarWriter:
    """Walking bass in quarter notes; on the swing grid a swung skip note (at 2/3) ends some bars."""
    skip = float(rng.uniform(0.15, 0.4)) if subdiv == 3 else 0.0
    state = _WalkState()

    def write(ctx: BarContext) -> list[Note]:
        notes: list[Note] = []
        for beat in range(ctx.beats_per_bar):
            chord = ctx.chords[beat]
            after = ctx.chords[beat + 1] if beat + 1 < ctx.beats_per_bar else ctx.next_chord
            pitch = _walk_step(chord, state.chord, after, state.pitch, beat == 0, rng)
            vel = 84 if beat == 0 else 78
            last = beat == ctx.beats_per_bar - 1
            if last and rng.random() < skip:
                notes += [Note(ctx.start + beat, 0.6, pitch, vel), Note(ctx.start + beat + 2 / 3, 0.3, pitch, 54)]
            else:
                notes.append(Note(ctx.start + beat, 0.92, pitch, vel))
            state.pitch, state.chord = pitch, chord
        return notes

    return write


def _two_feel(rng: np.random.Generator, subdiv: int) -> BarWriter:
    """Two-feel: half notes on the root and the fifth (or the new root), a swung pickup before some bars."""
    pickup = float(rng.uniform(0.3, 0.6)) if subdiv == 3 else 0.0

    def write(ctx: BarContext) -> list[Note]:
        half = ctx.beats_per_bar // 2
        first, second = ctx.chords[0], ctx.chords[half]
        root = place(first.root_pc, 36)
        pc = second.root_pc if second != first else (first.root_pc + first.fifth) % 12
        other = place(pc, root)
        length = ctx.beats_per_bar - half
        if rng.random() < pickup:
            tail = _approach(ctx.next_chord.root_pc, other, rng)
            return [Note(ctx.start, half * 0.95, root, 84), Note(ctx.start + half, length - 0.45, other, 78),
                    Note(ctx.start + ctx.beats_per_bar - 1 / 3, 0.3, tail, 70)]
        return [Note(ctx.start, half * 0.95, root, 84), Note(ctx.start + half, length * 0.95, other, 78)]

    return write


def _bass_symbol(symbol: str, chord: Chord, ctx: BarContext, rng: np.random.Generator) -> int:
    """Returns the MIDI pitch of one bass template symbol over `chord` (module docstring)."""
    root = nearest_pitch(chord.root_pc, ROOT_LOW)
    following = nearest_pitch(ctx.next_chord.root_pc, ROOT_LOW)
    if symbol == "A":  # a semitone below (not under E1) or above the next root
        return following - 1 if rng.random() < 0.5 and following > ROOT_LOW else following + 1
    table = {"R": root, "3": root + chord.third, "5": root + chord.fifth, "6": root + 9,
             "7": root + chord.seventh, "8": root + 12, "N": following}
    return table[symbol]


def template_bass(templates: tuple[str, ...], gate: float) -> PartFactory:
    """Returns a bass family that picks one of `templates` per track and plays it every bar."""

    def factory(rng: np.random.Generator, subdiv: int) -> BarWriter:
        template = templates[int(rng.integers(len(templates)))]
        runs = realize_template(template)

        def write(ctx: BarContext) -> list[Note]:
            fit_template(template, ctx)
            return [Note(ctx.beat_of(step), length * gate / ctx.subdiv,
                         _bass_symbol(symbol, ctx.chord_at(step), ctx, rng), metric_accent(step, ctx, 76))
                    for step, length, symbol in runs]

        return write

    return factory


# --- comping ----------------------------------------------------------------------------------


def piano_shell_lh(ctx: BarContext) -> list[Note]:
    """Returns the piano left hand: root (C2..B2) + seventh on every chord change, held until the next."""
    notes: list[Note] = []
    beat = 0
    while beat < ctx.beats_per_bar:
        chord, end = ctx.chords[beat], beat + 1
        while end < ctx.beats_per_bar and ctx.chords[end] == chord:
            end += 1
        root = nearest_pitch(chord.root_pc, 36)
        dur = (end - beat) * 0.92
        notes += [Note(ctx.start + beat, dur, root, 64), Note(ctx.start + beat, dur, root + chord.seventh, 58)]
        beat = end
    return notes


def nylon_thumb(ctx: BarContext) -> list[Note]:
    """Returns the bossa guitar thumb: root on the downbeat, fifth (or the new root) at mid-bar."""
    half = ctx.beats_per_bar // 2
    first, second = ctx.chords[0], ctx.chords[half]
    root = nearest_pitch(first.root_pc, 40)
    other = nearest_pitch(second.root_pc, 40) if second != first else root + first.fifth
    return [Note(ctx.start, half * 0.9, root, 70), Note(ctx.start + half, half * 0.9, other, 64)]


def _hit(ctx: BarContext, step: int, length: int, symbol: str, voicing: tuple[int, ...], gate: float,
         base: int, strum: float) -> list[Note]:
    """Returns the notes of one comping hit (`X` accent, `x` normal, `o` ghost), strummed by `strum` beats."""
    ghost = symbol == "o"
    dur = (0.3 if ghost else gate * length) / ctx.subdiv
    vel = max(1, base - 26) if ghost else metric_accent(step, ctx, base + (12 if symbol == "X" else 0))
    start = ctx.beat_of(step)
    return [Note(start + i * strum, max(0.05, dur - i * strum), p, vel - 2 * i) for i, p in enumerate(voicing)]


def comp_family(templates: tuple[str, ...], voicer: Voicer, gate: float, base: int,
                low: LowPart | None = None, strum: float = 0.0) -> PartFactory:
    """Returns a comping family: one rhythm template per track, voice-led chords, optional low part."""

    def factory(rng: np.random.Generator, subdiv: int) -> BarWriter:
        template = templates[int(rng.integers(len(templates)))]
        runs = realize_template(template)
        state: list[tuple[int, ...] | None] = [None]

        def write(ctx: BarContext) -> list[Note]:
            fit_template(template, ctx)
            notes = low(ctx) if low is not None else []
            for step, length, symbol in runs:
                state[0] = voicer(ctx.chord_at(step), state[0])
                notes += _hit(ctx, step, length, symbol, state[0], gate, base, strum)
            return notes

        return write

    return factory


def arpeggio_family(orders: tuple[tuple[int, ...], ...], ring: float, base: int) -> PartFactory:
    """Returns a fingerpicked arpeggio family: one note per beat (`guitar_arp_voicing`), ringing `ring` beats."""

    def factory(rng: np.random.Generator, subdiv: int) -> BarWriter:
        order = orders[int(rng.integers(len(orders)))]

        def write(ctx: BarContext) -> list[Note]:
            notes = []
            for beat in range(ctx.beats_per_bar):
                voicing = guitar_arp_voicing(ctx.chords[beat])
                pitch = voicing[order[beat % len(order)]]
                notes.append(Note(ctx.start + beat, ring, pitch, metric_accent(beat * ctx.subdiv, ctx, base)))
            return notes

        return write

    return factory


def _shell(chord: Chord, previous: tuple[int, ...] | None) -> tuple[int, ...]:
    """Voicer adapter for `guitar_shell` (no voice leading: the shell follows the root)."""
    return guitar_shell(chord)


def _arp4(chord: Chord, previous: tuple[int, ...] | None) -> tuple[int, ...]:
    """Voicer adapter for `guitar_arp_voicing` (strummed in 6/8)."""
    return guitar_arp_voicing(chord)


# Rhythm templates (one bar). Swing/blues: 4 beats x 3 triplet steps; bossa: 4 x 4; 6/8: 6 eighths x 2.
SWING_COMP = ("X....x......", "...x.....x..", ".....x.....x", "x.....x....x", "..x.....x...")
BLUES_COMP = ("...X.....X..", "...X.x...X.x", "X.....x..X.x")
BLUES_TRIPLETS = ("XxxXxxXxxXxx", "X.xX.xX.xX.x", "...X.x...X.x")
BOSSA_COMP = ("x..x..x...x..x..", "..x..x..x..x..x.", "x.x..x.x..x..x..")
BOSSA_KEYS = ("x..x..x...x..x..", "..x..x....x..x..", "x-.x-..x-.x-..x.")
SIX8_KEYS = ("X-----x-----", "X-x-x-X-x-x-", "X---x-X---x-")
SIX8_STRUM = ("X---x-X---x-", "X-x-x-X-x-x-", "X-----X-x-x-")

#: Registry of held-out bass families (name -> factory).
HELDOUT_BASS: dict[str, PartFactory] = {
    "jazz_walking": _jazz_walking,
    "two_feel": _two_feel,
    "bossa_root_fifth": template_bass(("R-----5-5-----R-", "R-----5-5-----N-", "R-----5-R-----5-"), 0.9),
    "six8_bass": template_bass(("R-----5-----", "R-----5---A-", "R---5-R---5-", "R-----R---5-"), 0.92),
    "blues_shuffle": template_bass(("R.35.67.65.3", "R.35.58.75.A", "R..R.35..5.A"), 0.9),
}

#: Registry of held-out guitar families (name -> factory).
HELDOUT_GUITAR: dict[str, PartFactory] = {
    "four_to_bar": comp_family(("x..X..x..X..",), _shell, 0.45, 64),
    "swing_comp": comp_family(SWING_COMP, _shell, 0.5, 70),
    "bossa_nylon": comp_family(BOSSA_COMP, rootless(55, 72), 0.75, 62, low=nylon_thumb),
    "six8_arpeggio": arpeggio_family(((0, 1, 2, 3, 2, 1), (0, 2, 3, 1, 3, 2), (0, 1, 3, 2, 3, 1)), 1.8, 66),
    "six8_strum": comp_family(SIX8_STRUM, _arp4, 0.9, 64, strum=STRUM_GAP),
    "blues_comp": comp_family(BLUES_COMP, _shell, 0.6, 72, strum=STRUM_GAP),
}

#: Registry of held-out piano families (name -> factory).
HELDOUT_PIANO: dict[str, PartFactory] = {
    "swing_shells": comp_family(SWING_COMP, rootless(55, 74), 0.6, 70, low=piano_shell_lh),
    "rootless_comp": comp_family(SWING_COMP, rootless(52, 72), 0.45, 72),
    "bossa_keys": comp_family(BOSSA_KEYS, rootless(55, 74), 0.8, 64),
    "six8_keys": comp_family(SIX8_KEYS, close_four(55, 77), 0.9, 66, low=piano_shell_lh),
    "blues_triplets": comp_family(BLUES_TRIPLETS, close_four(57, 79), 0.7, 60, low=piano_shell_lh),
}
