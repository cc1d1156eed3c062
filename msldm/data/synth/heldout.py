"""The held-out composer: music unlike the training corpus, for evaluation (`--composer heldout`).

Harmony is all seventh chords (maj7, m7, dominant 7, m7b5): jazz ii-V-I progressions in major
and minor, 12-bar blues on dominant sevenths, modal vamps (dorian, mixolydian: one or two chords
for several bars) and bossa changes with tritone substitutes. Four grooves:

- `swing`: swung eighths (the offbeat eighth at 2/3 of the beat, triplet grid), ride-cymbal
  pattern with hi-hat on 2 and 4, walking (or two-feel) bass, shell-voiced comping.
- `bossa`: straight sixteenth grid, rim-click clave and surdo kick, root-fifth bass, nylon
  guitar with thumb bass, syncopated rootless keys.
- `six_eight`: compound meter written as 6 eighth-note beats per bar: annotation meter [6, 8],
  `beats` every eighth note, `downbeats` every 6 beats, `tempo` in eighth notes per minute.
- `slow_blues`: slow 12/8 shuffle feel in 4/4 (triplet grid), piano triplet chords.

The output is a `compose.Song` like the training composer's, so the corpus layout and the
annotation.json schema are the same. Everything derives from
`numpy.random.default_rng([seed, index, HELDOUT_STREAM])`: a track depends on (seed, index) only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...config import STEMS
from .arrange import arrange, drum_plan
from .compose import TIMING_JITTER, Song, humanise
from .drums import drum_part
from .heldout_parts import HELDOUT_BASS, HELDOUT_GUITAR, HELDOUT_PIANO
from .notes import BarContext, Note, PartFactory
from .styles import HAT, KICK, PEDAL_HAT, RIDE, SIDESTICK, SNARE, Style
from .theory import Chord, Key, Progression

HELDOUT_STREAM = 6029
"""Third seed word of the held-out composer's generator (keeps it apart from the training composer's)."""

_PARTS: dict[str, dict[str, PartFactory]] = {
    "bass": HELDOUT_BASS, "guitar": HELDOUT_GUITAR, "piano": HELDOUT_PIANO}


def _prog(name: str, mode: str, bars: str) -> tuple[str, Progression]:
    """Returns (name, Progression) from bars written as `numerals | numerals | ...`."""
    return name, Progression(name, mode, tuple(b.strip() for b in bars.split("|")))


#: Registry of held-out progression families (name -> Progression); numerals as in `theory`.
HELDOUT_PROGRESSIONS: dict[str, Progression] = dict([
    _prog("ii_V_I", "major", "ii7 | V7 | Imaj7 | Imaj7"),
    _prog("ii_V_I_turnaround", "major", "iii7 VI7 | ii7 V7 | Imaj7 | Imaj7"),
    _prog("rhythm_ii_V", "major", "Imaj7 vi7 | ii7 V7 | iii7 VI7 | ii7 V7"),
    _prog("minor_ii_V_i", "minor", "iiø7 | V7 | i7 | i7"),
    _prog("minor_ii_V_i_long", "minor", "i7 | iv7 | iiø7 | V7"),
    _prog("jazz_blues", "major", "I7 | IV7 | I7 | I7 | IV7 | IV7 | I7 | VI7 | ii7 | V7 | I7 VI7 | ii7 V7"),
    _prog("blues_dom7", "major", "I7 | I7 | I7 | I7 | IV7 | IV7 | I7 | I7 | V7 | IV7 | I7 | V7"),
    _prog("blues_quick_four", "major", "I7 | IV7 | I7 | I7 | IV7 | IV7 | I7 | I7 | V7 | IV7 | I7 | V7"),
    _prog("minor_blues7", "minor", "i7 | iv7 | i7 | i7 | iv7 | iv7 | i7 | i7 | bVI7 | V7 | i7 | V7"),
    _prog("dorian_vamp", "minor", "i7 | i7 | IV7 | i7"),
    _prog("dorian_shift", "minor", "i7 | i7 | i7 | i7 | bii7 | bii7 | i7 | i7"),
    _prog("mixolydian_vamp", "major", "I7 | I7 | v7 | I7"),
    _prog("bossa_changes", "major", "Imaj7 | Imaj7 | II7 | II7 | ii7 | bII7 | Imaj7 | bII7"),
    _prog("minor_bossa", "minor", "i7 | i7 | iv7 | iv7 | iiø7 | V7 | i7 | V7"),
    _prog("six8_minor", "minor", "i7 | iv7 | iiø7 | V7"),
    _prog("six8_major", "major", "Imaj7 | IVmaj7 | iii7 VI7 | ii7 V7"),
])


@dataclass(frozen=True)
class HeldoutStyle:
    """A held-out groove: a `styles.Style` (tempo, grid, grooves, families, progressions, programs)
    plus its meter. `beats_per_bar` annotated beats of 1/meter[1] each make one bar."""

    style: Style
    beats_per_bar: int = 4
    meter: tuple[int, int] = (4, 4)

    @property
    def name(self) -> str:
        """Returns the style name (the annotation's `style`)."""
        return self.style.name


def _programs(bass: tuple[int, ...], drums: tuple[int, ...], guitar: tuple[int, ...],
              piano: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Returns the GM program choices per stem (drum kits for "drums")."""
    return {"bass": bass, "drums": drums, "guitar": guitar, "piano": piano}


_SWING_RIDE = "x..X.xx..X.x"        # ding, ding-ga ding, ding-ga (swung: the "ga" at 2/3 of the beat)
_TWO_AND_FOUR = "...x.....x.."
_SIX8_EIGHTHS = "X.x.x.X.x.x."      # every eighth, accents on 1 and 4

_SWING = Style(
    "swing", (120.0, 200.0), 3,
    ({RIDE: _SWING_RIDE, PEDAL_HAT: _TWO_AND_FOUR, KICK: "o..o..o..o.."},
     {RIDE: _SWING_RIDE, PEDAL_HAT: _TWO_AND_FOUR, SIDESTICK: ".........x..", KICK: "o.....o....."}),
    ("jazz_walking", "jazz_walking", "two_feel"), ("four_to_bar", "swing_comp"), ("swing_shells", "rootless_comp"),
    ("ii_V_I", "ii_V_I_turnaround", "rhythm_ii_V", "minor_ii_V_i", "minor_ii_V_i_long", "jazz_blues",
     "dorian_vamp", "dorian_shift"),
    _programs((32, 33), (32, 40, 0), (26, 27, 25), (0, 1, 4)))
_BOSSA = Style(
    "bossa", (112.0, 150.0), 4,
    ({SIDESTICK: "x..x..x...x..x..", KICK: "x..ox..ox..ox..o", HAT: "xoxoxoxoxoxoxoxo"},
     {SIDESTICK: "..x..x...x..x...", KICK: "x..ox..ox..ox..o", RIDE: "x.x.x.x.x.x.x.x.",
      PEDAL_HAT: "....x.......x..."}),
    ("bossa_root_fifth",), ("bossa_nylon",), ("bossa_keys",),
    ("bossa_changes", "minor_bossa", "ii_V_I", "dorian_vamp", "mixolydian_vamp"),
    _programs((32, 33), (40, 32, 0), (24, 25), (0, 4, 5)))
_SIX_EIGHT = Style(
    "six_eight", (132.0, 192.0), 2,
    ({KICK: "x...........", SNARE: "......X.....", HAT: _SIX8_EIGHTHS},
     {KICK: "x.........x.", SIDESTICK: "......x.....", RIDE: _SIX8_EIGHTHS, PEDAL_HAT: "......x....."}),
    ("six8_bass",), ("six8_arpeggio", "six8_strum"), ("six8_keys",),
    ("six8_minor", "six8_major", "minor_ii_V_i", "dorian_vamp", "mixolydian_vamp"),
    _programs((32, 33, 35), (0, 32, 8), (24, 25, 26, 27), (0, 1, 4, 5)))
_SLOW_BLUES = Style(
    "slow_blues", (60.0, 80.0), 3,
    ({KICK: "x.....x.....", SNARE: "...X.....X..", HAT: "xooxooxooxoo"},
     {KICK: "x....ox....o", SNARE: "...X.....X.o", RIDE: "x.xx.xx.xx.x", PEDAL_HAT: _TWO_AND_FOUR}),
    ("blues_shuffle", "jazz_walking"), ("blues_comp",), ("blues_triplets",),
    ("blues_dom7", "blues_quick_four", "minor_blues7"),
    _programs((33, 32, 34), (0, 32, 8), (26, 27, 29), (0, 1, 3, 16)))

#: Registry of held-out styles (name -> HeldoutStyle).
HELDOUT_STYLES: dict[str, HeldoutStyle] = {s.name: s for s in (
    HeldoutStyle(_SWING), HeldoutStyle(_BOSSA), HeldoutStyle(_SIX_EIGHT, 6, (6, 8)), HeldoutStyle(_SLOW_BLUES),
)}


def _choice(rng: np.random.Generator, options: tuple | list) -> object:
    """Returns one element of `options` drawn uniformly."""
    return options[int(rng.integers(len(options)))]


def progression_chords(progression: Progression, tonic_pc: int, n_bars: int, beats_per_bar: int,
                       offset_bars: int = 0) -> list[Chord]:
    """Returns one Chord per beat for `n_bars` bars of `progression`, starting `offset_bars` bars in."""
    chords = progression.chords_per_beat(tonic_pc, offset_bars + n_bars, beats_per_bar)
    return chords[offset_bars * beats_per_bar:]


def _write_bars(factory: PartFactory, rng: np.random.Generator, subdiv: int, chords: list[Chord],
                n_bars: int, beats_per_bar: int) -> list[Note]:
    """Returns the notes (beats) of one pitched part over all bars (`chords` holds one extra bar)."""
    writer = factory(rng, subdiv)
    notes: list[Note] = []
    for bar in range(n_bars):
        beat0 = bar * beats_per_bar
        ctx = BarContext(bar, tuple(chords[beat0:beat0 + beats_per_bar]), chords[beat0 + beats_per_bar],
                         subdiv, beats_per_bar)
        notes += writer(ctx)
    return notes


def compose_heldout(seed: int, index: int, seconds: float = 15.0) -> Song:
    """Returns the held-out song for track `index` of the corpus with `seed` (deterministic).

    The draw order is fixed: style, tempo, progression, phrase offset, key, programs, part
    families, arrangement, parts, drums, humanisation. Long forms (12-bar blues, 8-bar
    changes) start at a random 4-bar phrase so short tracks still hear their changes.
    """
    rng = np.random.default_rng([seed, index, HELDOUT_STREAM])
    held = HELDOUT_STYLES[str(_choice(rng, sorted(HELDOUT_STYLES)))]
    style, bpb = held.style, held.beats_per_bar
    tempo = float(rng.integers(int(style.tempo[0]), int(style.tempo[1]) + 1))
    progression = HELDOUT_PROGRESSIONS[str(_choice(rng, style.progressions))]
    offset = 4 * int(rng.integers(math.ceil(len(progression.bars) / 4)))
    key = Key(int(rng.integers(12)), progression.mode)
    programs = {stem: int(_choice(rng, style.programs[stem])) for stem in STEMS}
    parts = {"bass": str(_choice(rng, style.bass)), "drums": style.name,
             "guitar": str(_choice(rng, style.guitar)), "piano": str(_choice(rng, style.piano))}
    beat_s = 60.0 / tempo
    n_bars = max(1, math.ceil(seconds / (bpb * beat_s) - 1e-9))
    chords = progression_chords(progression, key.tonic_pc, n_bars + 1, bpb, offset)
    active = arrange(rng, n_bars, STEMS)
    song = Song(index, style.name, tempo, key, progression.name, n_bars, float(seconds),
                chords[: n_bars * bpb], programs, parts, active, beats_per_bar=bpb, meter=held.meter)
    raw: dict[str, list[Note]] = {}
    for stem, registry in _PARTS.items():
        raw[stem] = _write_bars(registry[parts[stem]], rng, style.subdiv, chords, n_bars, bpb)
    raw["drums"] = drum_part(style, drum_plan(rng, style, active, n_bars), bpb, rng)
    for stem in STEMS:
        song.notes[stem] = humanise(raw[stem], beat_s, active[stem], song.duration, rng,
                                    TIMING_JITTER[stem], bpb)
    return song
