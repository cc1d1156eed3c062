"""Groove styles: tempo range, grid, drum grooves, part families, GM programs, progressions.

A drum groove is a mapping GM drum note -> step string over one 4/4 bar on the style's grid
(`subdiv` steps per beat: 4 = straight sixteenths, 3 = triplets for shuffle). Step characters:
`X` accent, `x` normal hit, `o` ghost note, `.` rest.
"""

from __future__ import annotations

from dataclasses import dataclass

# General MIDI percussion notes (channel 10).
KICK, SIDESTICK, SNARE, CLAP = 36, 37, 38, 39
HAT, PEDAL_HAT, OPEN_HAT = 42, 44, 46
CRASH, RIDE = 49, 51
TOMS: tuple[int, ...] = (50, 48, 47, 45, 43)  # high -> low

#: Step character -> MIDI velocity before humanisation.
STEP_VELOCITY: dict[str, int] = {"X": 118, "x": 96, "o": 58}

Groove = dict[int, str]


@dataclass(frozen=True)
class Style:
    """One groove style: everything the composer needs to pick per track."""

    name: str
    tempo: tuple[float, float]
    subdiv: int
    grooves: tuple[Groove, ...]
    bass: tuple[str, ...]
    guitar: tuple[str, ...]
    piano: tuple[str, ...]
    progressions: tuple[str, ...]
    programs: dict[str, tuple[int, ...]]


def _programs(bass: tuple[int, ...], drums: tuple[int, ...], guitar: tuple[int, ...],
              piano: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    return {"bass": bass, "drums": drums, "guitar": guitar, "piano": piano}


_EIGHTH_HATS = "x.x.x.x.x.x.x.x."
_BACKBEAT = "....X.......X..."

#: Registry of styles (name -> Style).
STYLES: dict[str, Style] = {s.name: s for s in (
    Style("rock", (100.0, 150.0), 4,
          ({KICK: "x.......x.x.....", SNARE: _BACKBEAT, HAT: "X.x.X.x.X.x.X.x."},
           {KICK: "x.....x.x.......", SNARE: _BACKBEAT, RIDE: _EIGHTH_HATS}),
          ("root_eighths", "root_fifth", "octave_pops"), ("power_chords", "strum"),
          ("block_quarters", "block_half"),
          ("axis", "three_chord", "mixolydian", "aeolian", "epic", "andalusian"),
          _programs((33, 34, 35), (0, 8, 16), (29, 30, 27), (0, 1, 16, 18))),
    Style("pop", (88.0, 128.0), 4,
          ({KICK: "x.....x...x.....", SNARE: _BACKBEAT, HAT: "xoxoxoxoxoxoxoxo"},
           {KICK: "x.......x.x.....", CLAP: _BACKBEAT, HAT: "x.x.x.x.x.x.x.x.",
            OPEN_HAT: "..............x."}),
          ("root_eighths", "root_fifth", "pop_sync"), ("strum", "arpeggio", "skank"),
          ("sync_comp", "arpeggio", "block_half"),
          ("axis", "doo_wop", "sensitive", "canon", "aeolian"),
          _programs((33, 34, 38), (0, 8, 24), (25, 27, 24), (0, 4, 5, 2))),
    Style("funk", (92.0, 118.0), 4,
          ({KICK: "x..x..x...x..x..", SNARE: "....X..o.o..X..o", HAT: "xoxoxoxoxoxoxoxo"},
           {KICK: "x.x...x..x.x....", SNARE: "....X.o..o..X.o.", HAT: "x.xox.xox.xox.x.",
            OPEN_HAT: "..............x."}),
          ("funk_sync", "octave_pops"), ("funk_scratch", "skank"), ("stabs", "sync_comp"),
          ("minor_vamp", "turnaround", "aeolian", "mixolydian"),
          _programs((36, 37, 33, 38, 39), (0, 8), (27, 28), (7, 4, 16))),
    Style("ballad", (70.0, 88.0), 4,
          ({KICK: "x.......x.......", SIDESTICK: _BACKBEAT, HAT: "x.o.x.o.x.o.x.o."},
           {KICK: "x.....x.x.......", SNARE: _BACKBEAT, RIDE: "x.o.x.o.x.o.x.o."}),
          ("sustained", "root_fifth"), ("arpeggio", "strum"), ("arpeggio", "block_half"),
          ("axis", "canon", "sensitive", "doo_wop", "minor_cadence", "epic"),
          _programs((32, 33, 35), (0, 32, 40), (24, 25, 26), (0, 1, 4, 5))),
    Style("shuffle", (96.0, 150.0), 3,
          ({KICK: "x.....x.....", SNARE: "...X.....X..", HAT: "x.xX.xx.xX.x"},
           {KICK: "x.....x..x..", SNARE: "...X.....X.o", RIDE: "x.xx.xx.xx.x"}),
          ("walking", "boogie"), ("shuffle_comp", "strum"), ("shuffle_comp", "block_half"),
          ("blues12", "minor_blues", "three_chord", "turnaround"),
          _programs((32, 33, 34), (0, 32, 8), (26, 27, 29), (0, 3, 16, 17))),
    Style("halftime", (130.0, 170.0), 4,
          ({KICK: "x.........x.....", SNARE: "........X.......", HAT: _EIGHTH_HATS},
           {KICK: "x.....x...x.....", SNARE: "........X.......", RIDE: "x...x...x...x..."}),
          ("sustained", "root_eighths"), ("power_chords", "strum"), ("block_half", "arpeggio"),
          ("aeolian", "epic", "andalusian", "sensitive"),
          _programs((34, 33, 38), (16, 0), (30, 29, 27), (0, 4, 1))),
    Style("disco", (110.0, 130.0), 4,
          ({KICK: "x...x...x...x...", SNARE: _BACKBEAT, HAT: "x...x...x...x...",
            OPEN_HAT: "..x...x...x...x."},
           {KICK: "x...x...x...x...", CLAP: _BACKBEAT, HAT: "xo.oxo.oxo.oxo.o",
            OPEN_HAT: "..x...x...x...x."}),
          ("octave_pops", "funk_sync"), ("skank", "funk_scratch"), ("sync_comp", "stabs"),
          ("minor_vamp", "aeolian", "axis", "sensitive"),
          _programs((33, 38, 39, 36), (0, 24, 25), (27, 28, 26), (4, 5, 2, 0))),
)}
