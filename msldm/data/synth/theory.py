"""Music theory for the synthetic corpus: pitch classes, keys, chords and progression families.

Pure Python (no numpy, no torch). A progression family is a list of bars written in roman
numerals relative to the tonic (major-scale reference, `b` lowers a degree by a semitone;
upper case = major triad, lower case = minor triad, suffix `7` = dominant / minor seventh,
`maj7`, `o` = diminished, `ø7` = half-diminished seventh, quality "m7b5"). A bar may hold
two chords separated by a space (half a bar each).
"""

from __future__ import annotations

from dataclasses import dataclass

PITCH_NAMES: tuple[str, ...] = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
FLAT_NAMES: tuple[str, ...] = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
SHARP_NAMES: tuple[str, ...] = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
#: Tonic pitch classes whose keys are written with flats (major; minor keys use their relative major).
_FLAT_MAJOR_TONICS = frozenset({1, 3, 5, 8, 10})

#: Chord quality -> intervals above the root (semitones).
QUALITIES: dict[str, tuple[int, ...]] = {
    "maj": (0, 4, 7),
    "min": (0, 3, 7),
    "dim": (0, 3, 6),
    "7": (0, 4, 7, 10),
    "maj7": (0, 4, 7, 11),
    "min7": (0, 3, 7, 10),
    "m7b5": (0, 3, 6, 10),
}
_SUFFIX: dict[str, str] = {"maj": "", "min": "m", "dim": "dim", "7": "7", "maj7": "maj7", "min7": "m7",
                           "m7b5": "m7b5"}
#: (numeral suffix, upper-case numeral) -> chord quality.
_NUMERAL_QUALITY: dict[tuple[str, bool], str] = {
    ("", True): "maj", ("", False): "min", ("o", True): "dim", ("o", False): "dim",
    ("7", True): "7", ("7", False): "min7", ("maj7", True): "maj7", ("maj7", False): "maj7",
    ("ø7", True): "m7b5", ("ø7", False): "m7b5",
}

SCALES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
}
#: Common borrowed tones: bVII (mixolydian) in major, the leading tone (harmonic minor) in minor.
BORROWED: dict[str, tuple[int, ...]] = {"major": (10,), "minor": (11,)}

_DEGREES: dict[str, int] = {"I": 0, "II": 2, "III": 4, "IV": 5, "V": 7, "VI": 9, "VII": 11}


@dataclass(frozen=True)
class Key:
    """A key: tonic pitch class (0 = C) and mode ("major" | "minor")."""

    tonic_pc: int
    mode: str

    @property
    def name(self) -> str:
        """Returns e.g. "A minor" (tonic spelled like the key signature: "Db major", "F# minor")."""
        return f"{self.tonic_name} {self.mode}"

    @property
    def tonic_name(self) -> str:
        """Returns the tonic's letter name spelled for the key signature."""
        return (FLAT_NAMES if self.uses_flats else SHARP_NAMES)[self.tonic_pc]

    @property
    def midi_name(self) -> str:
        """Returns the mido key-signature name, e.g. "Am" or "Eb"."""
        return self.tonic_name + ("m" if self.mode == "minor" else "")

    @property
    def uses_flats(self) -> bool:
        """Returns True when the key signature has flats (spell chords with flats)."""
        major_tonic = self.tonic_pc if self.mode == "major" else (self.tonic_pc + 3) % 12
        return major_tonic in _FLAT_MAJOR_TONICS

    def scale_pcs(self) -> frozenset[int]:
        """Returns the pitch classes of the (natural) scale."""
        return frozenset((self.tonic_pc + i) % 12 for i in SCALES[self.mode])

    def allowed_pcs(self) -> frozenset[int]:
        """Returns scale pitch classes plus the mode's common borrowed tones."""
        extra = {(self.tonic_pc + i) % 12 for i in BORROWED[self.mode]}
        return self.scale_pcs() | extra

    def to_dict(self) -> dict:
        """Returns the annotation.json form {"tonic_pc", "mode", "name"}."""
        return {"tonic_pc": self.tonic_pc, "mode": self.mode, "name": self.name}


@dataclass(frozen=True)
class Chord:
    """A chord: root pitch class and quality (a key of `QUALITIES`)."""

    root_pc: int
    quality: str

    @property
    def intervals(self) -> tuple[int, ...]:
        """Returns semitone intervals above the root."""
        return QUALITIES[self.quality]

    @property
    def pitch_classes(self) -> list[int]:
        """Returns the chord's pitch classes, root first."""
        return [(self.root_pc + i) % 12 for i in self.intervals]

    @property
    def name(self) -> str:
        """Returns e.g. "Am7" (neutral spelling; see `spelled`)."""
        return PITCH_NAMES[self.root_pc] + _SUFFIX[self.quality]

    def spelled(self, flats: bool) -> str:
        """Returns the chord name spelled with flats or sharps, e.g. "Gb" vs "F#"."""
        return (FLAT_NAMES if flats else SHARP_NAMES)[self.root_pc] + _SUFFIX[self.quality]

    @property
    def third(self) -> int:
        """Returns the interval of the third (3 or 4)."""
        return self.intervals[1]

    @property
    def fifth(self) -> int:
        """Returns the interval of the fifth (6 or 7)."""
        return self.intervals[2]

    @property
    def seventh(self) -> int:
        """Returns the seventh interval (the chord's own, else a minor seventh)."""
        return self.intervals[3] if len(self.intervals) > 3 else 10

    def to_dict(self, time: float, key: Key | None = None) -> dict:
        """Returns the annotation.json chord entry at `time` seconds, spelled for `key` if given."""
        name = self.spelled(key.uses_flats) if key is not None else self.name
        return {"time": round(time, 6), "root_pc": self.root_pc, "quality": self.quality,
                "pitch_classes": self.pitch_classes, "name": name}


def parse_numeral(numeral: str, tonic_pc: int) -> Chord:
    """Parses a roman numeral ("bVII", "ii7", "Imaj7", "viio") into a Chord in the key of `tonic_pc`."""
    text = numeral
    flat = text.startswith("b")
    text = text[1:] if flat else text
    letters = "".join(ch for ch in text if ch.upper() in "IV")
    suffix = text[len(letters):]
    upper = letters.isupper()
    offset = _DEGREES[letters.upper()] - (1 if flat else 0)
    quality = _NUMERAL_QUALITY.get((suffix, upper))
    if quality is None:
        raise ValueError(f"unknown chord suffix in {numeral!r}")
    return Chord((tonic_pc + offset) % 12, quality)


@dataclass(frozen=True)
class Progression:
    """A chord-progression family: a name, the mode it lives in and its bars of numerals."""

    name: str
    mode: str
    bars: tuple[str, ...]

    def chords_per_beat(self, tonic_pc: int, n_bars: int, beats_per_bar: int = 4) -> list[Chord]:
        """Returns one Chord per beat for `n_bars` bars, looping the family.

        A bar with two numerals splits at half the bar (beats_per_bar must be even then).
        """
        out: list[Chord] = []
        for bar in range(n_bars):
            numerals = self.bars[bar % len(self.bars)].split()
            per = beats_per_bar // len(numerals)
            for beat in range(beats_per_bar):
                numeral = numerals[min(beat // per, len(numerals) - 1)]
                out.append(parse_numeral(numeral, tonic_pc))
        return out


def _prog(name: str, mode: str, bars: str) -> tuple[str, Progression]:
    return name, Progression(name, mode, tuple(b.strip() for b in bars.split("|")))


#: Registry of progression families (name -> Progression).
PROGRESSIONS: dict[str, Progression] = dict([
    _prog("axis", "major", "I | V | vi | IV"),
    _prog("doo_wop", "major", "I | vi | IV | V"),
    _prog("sensitive", "major", "vi | IV | I | V"),
    _prog("three_chord", "major", "I | IV | I | V"),
    _prog("mixolydian", "major", "I | bVII | IV | I"),
    _prog("canon", "major", "I V | vi iii | IV I | IV V"),
    _prog("turnaround", "major", "Imaj7 | vi7 | ii7 | V7"),
    _prog("blues12", "major", "I | I | I | I | IV | IV | I | I | V7 | IV | I | V7"),
    _prog("aeolian", "minor", "i | bVI | bIII | bVII"),
    _prog("andalusian", "minor", "i | bVII | bVI | V"),
    _prog("minor_cadence", "minor", "i | iv | V | i"),
    _prog("minor_vamp", "minor", "i7 | i7 | iv7 | bVII"),
    _prog("epic", "minor", "i | bVI | bVII | i"),
    _prog("minor_blues", "minor", "i | i | i | i | iv | iv | i | i | V7 | iv | i | V7"),
])

#: Progression families that change chord every half bar (the "synth-changes" composer's): the
#: training composer's triads and keys, at twice its usual harmonic rhythm. Kept apart from
#: PROGRESSIONS so that the "synth" composer's songs stay what they were for every seed.
CHANGES_PROGRESSIONS: dict[str, Progression] = dict([
    _prog("pop_split", "major", "I V | vi IV"),
    _prog("plagal_split", "major", "I IV | I V"),
    _prog("sensitive_split", "major", "vi IV | I V"),
    _prog("climb_split", "major", "I iii | IV V"),
    _prog("royal_split", "major", "IV V | iii vi"),
    _prog("aeolian_split", "minor", "i bVII | bVI bVII"),
    _prog("minor_plagal_split", "minor", "i iv | bVII bIII"),
    _prog("minor_cadence_split", "minor", "i bVI | iv V"),
])

#: Progression families of seventh chords at the training composer's harmonic rhythm (a chord a
#: bar; the "synth-sevenths" composer's), also kept apart from PROGRESSIONS.
SEVENTHS_PROGRESSIONS: dict[str, Progression] = dict([
    _prog("maj7_cadence", "major", "Imaj7 | IVmaj7 | Imaj7 | V7"),
    _prog("maj7_axis", "major", "Imaj7 | vi7 | IVmaj7 | V7"),
    _prog("maj7_sensitive", "major", "vi7 | IVmaj7 | Imaj7 | V7"),
    _prog("dominant_rock", "major", "I7 | IV7 | I7 | V7"),
    _prog("min7_cadence", "minor", "i7 | iv7 | bVImaj7 | V7"),
    _prog("min7_descent", "minor", "i7 | bVII7 | bVImaj7 | V7"),
])


def nearest_pitch(pc: int, low: int) -> int:
    """Returns the lowest MIDI pitch >= `low` with pitch class `pc`."""
    return low + (pc - low) % 12


def voice_lead(chord: Chord, previous: tuple[int, ...] | None, low: int, high: int) -> tuple[int, ...]:
    """Returns a close voicing of `chord` within [low, high] nearest to `previous` (voice leading).

    Candidates are all inversions of the chord in close position whose notes fit the range;
    the one with the smallest summed distance to the previous voicing's centre wins.
    """
    pcs = chord.pitch_classes
    best: tuple[int, ...] | None = None
    best_cost = float("inf")
    centre = sum(previous) / len(previous) if previous else (low + high) / 2
    for inversion in range(len(pcs)):
        order = pcs[inversion:] + pcs[:inversion]
        for base in range(low, high + 1):
            if base % 12 != order[0]:
                continue
            notes = [base]
            for pc in order[1:]:
                notes.append(notes[-1] + (pc - notes[-1]) % 12 or 12)
            if notes[-1] > high:
                continue
            cost = abs(sum(notes) / len(notes) - centre)
            if cost < best_cost:
                best, best_cost = tuple(notes), cost
    if best is None:
        raise ValueError(f"no voicing of {chord.name} in [{low}, {high}]")
    return best
