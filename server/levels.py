"""The level of generated stems against the given ones: a gain stage after the decoder.

Each stem of the training corpora carries a random gain of +-6 dB (`msldm.data.synth.augment`),
drawn apart from the other stems', so the denoiser learns no balance between stems: on the
held-out-soundfont test split its generated stems' levels hardly follow the real parts' (per clip,
r between -0.4 and 0.4, 24 clips a request), and their mean drifts with the given stems' timbre
(a guitar given the bass and piano 3.1 dB under real guitars over four draws, one given a
held-out composer's drums and piano 11 dB over). What real parts do keep is a typical balance
against the others: the median of a stem's level minus the given stems' level, per set of given
stems, over windows of the training corpus (`measure_balance`, `scripts/level_balance.py`; the
same figures within 2 dB on the test and validation splits, rendered with another soundfont).
The bundle's manifest carries that table (`level_balance`); with it, the daemon scales each
generated stem of a take, window by window, so that over the windows so far where it and a given
stem sound it sits at the table's figure against the given stems (`RunningBalance`: one gain per
window, crossfaded into the next with the audio; the dynamics within a window stay the model's).
A request asks for the model's own level with `level: "model"`; total generation (nothing given)
and a redo (the kept audio sets the level) always have it.

Levels are RMS over a span (`msldm.eval.dsp.level_db`, as the evaluation measures loudness);
the given stems' level is the power mean of those that sound there (a silent given stem says
nothing about the balance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Iterable, Sequence

import numpy as np

from msldm.eval.density import EMPTY_FRACTION, FRAME, HOP, is_empty
from msldm.eval.dsp import frame_rms_db, level_db

MAX_GAIN_DB = 12.0
"""The largest gain (either way) the stage applies: past it the generated part is not a part at
the wrong level but a wrong part (the daemon's burial and silence checks judge it, not this)."""
HEADROOM_DBFS = -7.0
"""A gain never lifts a frame of its window above this RMS (the daemon's `BLOWN_DBFS` less its
taming margin): balance never makes a burst."""
LEVELS = ("balance", "model")
"""A request's `level`: "balance" (the default; the manifest's table, where the bundle has one)
or "model" (the decoder's output as it is)."""


def given_key(given: Sequence[str], stems: Sequence[str]) -> str:
    """The table's key of a set of given stems: their names in the model's stem order, joined by '+'."""
    return "+".join(s for s in stems if s in given)


def power_mean_db(levels_db: Sequence[float]) -> float | None:
    """The power mean of levels in dB (None for none)."""
    return 10.0 * math.log10(float(np.mean([10.0 ** (x / 10.0) for x in levels_db]))) if levels_db else None


def given_level_db(given: Sequence[np.ndarray]) -> float | None:
    """The power mean (dBFS) of the RMS levels of the given stems that sound (`[n]` each); None
    when none does."""
    return power_mean_db([level_db(a) for a in given if not is_empty(a, min_fraction=EMPTY_FRACTION)])


@dataclass(frozen=True)
class LevelBalance:
    """A bundle's balance table: `offsets[stem][given_key]` = median dB of `stem`'s level minus
    the given stems' level (`given_level_db`) in real windows."""

    offsets: dict[str, dict[str, float]]
    source: str = ""

    @classmethod
    def from_manifest(cls, block: Any, stems: Sequence[str]) -> "LevelBalance":
        """Parse and check the manifest's `level_balance` block; raises ValueError with the field."""
        if not isinstance(block, dict) or not isinstance(block.get("offsets_db"), dict):
            raise ValueError("level_balance must be an object with an 'offsets_db' object")
        offsets: dict[str, dict[str, float]] = {}
        for stem, row in block["offsets_db"].items():
            if stem not in stems or not isinstance(row, dict):
                raise ValueError(f"level_balance.offsets_db.{stem}: not a stem of this model, or not an object")
            valid = {given_key(c, stems) for n in range(1, len(stems)) for c in combinations(
                [s for s in stems if s != stem], n)}
            for key, v in row.items():
                if key not in valid:
                    raise ValueError(f"level_balance.offsets_db.{stem}.{key}: not a set of the other stems "
                                     f"(names in model order joined by '+')")
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise ValueError(f"level_balance.offsets_db.{stem}.{key}: not a finite number")
            offsets[stem] = {k: float(v) for k, v in row.items()}
        return cls(offsets, str(block.get("source", "")))

    def offset_db(self, stem: str, given: Sequence[str], stems: Sequence[str]) -> float | None:
        """The table's figure for `stem` beside the set `given`; None without a row for it."""
        return self.offsets.get(stem, {}).get(given_key(given, stems))


class RunningBalance:
    """One generated stem of one take, window by window: its level and the given stems' over the
    spans so far where both sound, and the gain that brings the one to the table's `offset_db`
    against the other. The first window where both sound sets the gain, each later one refines it
    (the model plays its first window of a region about 2.5 dB quieter against the given stems than
    its later ones: a gain held from the first window alone left the guitar given drums and piano
4.0 dB over real guitars on a test draw, 7.4 on validation)."""

    def __init__(self, offset_db: float):
        self.offset_db = offset_db
        self.generated = self.given = 0.0  # power x samples
        self.samples = 0
        self.gain_db: float | None = None

    def update(self, generated: np.ndarray, given_db: float | None) -> float | None:
        """Add a window's new span of the stem (`generated`, as decoded) and the given stems' level
        there (`given_level_db`; None: none sounds); the gain (dB) for that window, within
        +-`MAX_GAIN_DB` and never lifting one of its frames above `HEADROOM_DBFS` (None: the stem
        has not sounded beside a given one yet)."""
        if given_db is not None and not is_empty(generated, min_fraction=EMPTY_FRACTION):
            n = len(generated)
            self.generated += float(np.mean(np.square(generated, dtype=np.float64))) * n
            self.given += 10.0 ** (given_db / 10.0) * n
            self.samples += n
            target = 10.0 * math.log10(self.given / self.samples) + self.offset_db
            level = 10.0 * math.log10(max(self.generated / self.samples, 1e-12))
            self.gain_db = float(np.clip(target - level, -MAX_GAIN_DB, MAX_GAIN_DB))
        if self.gain_db is None or self.gain_db <= 0 or not len(generated):
            return self.gain_db
        loudest = float(np.max(frame_rms_db(generated, FRAME, HOP)))
        return min(self.gain_db, HEADROOM_DBFS - loudest)


def apply_gain(audio: np.ndarray, gain_db: float | None) -> np.ndarray:
    """`audio` scaled by `gain_db` (unchanged for None or 0)."""
    if not gain_db:
        return audio
    return (audio * np.float32(10.0 ** (gain_db / 20.0))).astype(audio.dtype, copy=False)


def measure_balance(tracks: Iterable[dict[str, np.ndarray]], stems: Sequence[str], window: int,
                    hop: int) -> dict[str, dict[str, tuple[float, int]]]:
    """The balance table of real tracks (stem -> `[n]` mono each; read one at a time, so a
    generator keeps one track in memory): for every stem and every set of the other stems,
    (median of the stem's level minus the set's `given_level_db`, windows) over the windows
    (`window` samples every `hop`) where the stem and some stem of the set sound."""
    diffs: dict[str, dict[str, list[float]]] = {s: {} for s in stems}
    for track in tracks:
        n = min(len(track[s]) for s in stems)
        for start in range(0, max(1, n - window + 1), hop):
            part = {s: track[s][start:start + window] for s in stems}
            sounds = {s: not is_empty(a, min_fraction=EMPTY_FRACTION) for s, a in part.items()}
            levels = {s: level_db(a) for s, a in part.items()}
            for stem in stems:
                if not sounds[stem]:
                    continue
                others = [s for s in stems if s != stem]
                for k in range(1, len(others) + 1):
                    for given in combinations(others, k):
                        g_db = power_mean_db([levels[g] for g in given if sounds[g]])
                        if g_db is not None:
                            diffs[stem].setdefault(given_key(given, stems), []).append(levels[stem] - g_db)
    return {s: {k: (float(np.median(v)), len(v)) for k, v in row.items()} for s, row in diffs.items()}
