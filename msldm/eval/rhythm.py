"""Rhythmic fit of a stem to the metrical grid of the region (onsets and beats by librosa).

Onsets (`stem_onsets`): `librosa.onset.onset_strength` (hop 128 = 5.8 ms at 22.05 kHz,
512-point mel frames; 2048 for the bass) peak-picked by `librosa.onset.onset_detect`, an
onset's strength being the envelope there over its maximum. (Basic Pitch's note onsets
were tried instead for pitched stems: at 86 frames per second they separated real from
mismatched stems far less, gaps 0.03-0.11 against 0.27-0.43 on the held-out set.)
Onsets within `END_GUARD_S` of the end (a cut is no onset) are dropped.

Grid: `subdivisions` points per beat (annotation beats, or `estimate_grid` of the given
stems: `librosa.beat.beat_track` on their summed onset envelope, downbeat = the beat phase
with the strongest onsets), bar positions counted from the first downbeat. The subdivision
(4: straight 16ths, or 3: triplets and swung 8ths) is the one on which the given stems'
onsets land most above chance (`choose_subdivision`).

`RhythmicFit` of a stem with onsets o_j (strengths w_j):
- `grid` = fraction of onsets within `tol` of a grid point, tol = min(25 ms, 1/4 of a
  subdivision). Chance level (uniform onsets) is 2 tol / subdivision, e.g. 0.4 at 120 bpm.
- `metric` = max(0, Pearson correlation) between the stem's metrical profile (onset
  strength summed per grid position in the bar) and the context's profile (the mean of
  the given stems' normalised profiles). An 8th-note shift keeps every onset on a 16th
  grid, so `grid` cannot see it; `metric` does (the accents move to other positions).
- `score` = sqrt(grid x metric), the geometric mean, when a context profile exists, else
  grid. (The plain product separated real from mismatched bass lines by 0.28 on the
  held-out set; the geometric mean, by more: see `msldm fit-check`.)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import numpy as np

from msldm.eval.dsp import as_mono

HOP = 128
N_FFT = 512  # 23 ms: onsets within a few ms
STEM_N_FFT: dict[str, int] = {"bass": 2048}
LEAD_FRAMES = 16  # 93 ms of silence put in front of a clip before onset detection
SUBDIVISIONS: tuple[int, ...] = (4, 3)

TOLERANCE_S = 0.025
END_GUARD_S = 0.05


@dataclass(frozen=True)
class Grid:
    """Beat grid of a region: beat times (s), downbeat times (s), beats per bar."""

    beats: np.ndarray  # [B]
    downbeats: np.ndarray  # [D]
    beats_per_bar: int = 4
    subdivisions: int = 4  # grid points per beat

    @property
    def tempo(self) -> float:
        """Tempo in bpm from the median beat period."""
        return 60.0 / float(np.median(np.diff(self.beats))) if len(self.beats) > 1 else float("nan")

    def points(self, duration: float) -> np.ndarray:
        """Grid times `[subdivisions * B']` covering [0, duration] (beats extended both ways
        by the median period)."""
        b = np.asarray(self.beats, dtype=np.float64)
        period = float(np.median(np.diff(b)))
        n_before = int(np.ceil(max(0.0, b[0]) / period))
        n_extra = int(np.ceil(max(0.0, duration - b[-1]) / period)) + 1
        b = np.concatenate([b[0] - period * np.arange(n_before, 0, -1), b,
                            b[-1] + period * np.arange(1, n_extra + 1)])
        s = self.subdivisions
        sub = b[:-1, None] + np.diff(b)[:, None] * np.arange(s)[None] / s  # [B-1, s]
        return sub.reshape(-1)

    def first_point_offset(self, duration: float) -> int:
        """Index in `points(duration)` of the first downbeat (0 without downbeats)."""
        pts = self.points(duration)
        ref = self.downbeats[0] if len(self.downbeats) else self.beats[0]
        return int(np.argmin(np.abs(pts - ref)))



@dataclass(frozen=True)
class RhythmicFit:
    """Rhythmic fit of a stem; NaN scores when it has no onsets."""

    score: float
    grid: float
    metric: float
    onsets: int


_ONSET_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
_CACHE_SIZE = 256


def detect_onsets(x: np.ndarray, sr: int, n_fft: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Onset times (s) `[O]` and strengths `[O]` of `x [N]` (see module docstring).
    Memoised on the audio's bytes (the harness scores the same real stems many times)."""
    a = np.ascontiguousarray(as_mono(x), dtype=np.float32)
    key = (hashlib.sha1(a.tobytes()).hexdigest(), len(a), sr, n_fft)
    if key not in _ONSET_CACHE:
        if len(_ONSET_CACHE) >= _CACHE_SIZE:
            _ONSET_CACHE.pop(next(iter(_ONSET_CACHE)))
        _ONSET_CACHE[key] = _detect_onsets(a, sr, n_fft)
    return _ONSET_CACHE[key]


def stem_onsets(x: np.ndarray, sr: int, stem: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`detect_onsets` with the stem's analysis frame (`STEM_N_FFT`: longer for the bass, whose
    partials a 512-point frame cannot tell apart)."""
    return detect_onsets(x, sr, STEM_N_FFT.get(stem or "", N_FFT))


def onset_envelope(x: np.ndarray, sr: int, n_fft: int = 512) -> np.ndarray:
    """librosa's onset strength of `x [N]` at hop `HOP` `[frames]` (zeros for silence)."""
    import librosa

    if not np.any(x):
        return np.zeros(1 + len(x) // HOP)
    return librosa.onset.onset_strength(y=np.asarray(x, np.float32), sr=sr, hop_length=HOP, n_fft=n_fft)


def _detect_onsets(x: np.ndarray, sr: int, n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    import librosa

    lead = LEAD_FRAMES * HOP  # silence in front, so a note at t = 0 is a peak the picker can see
    env = onset_envelope(np.concatenate([np.zeros(lead, np.float32), np.asarray(x, np.float32)]), sr, n_fft)
    if env.size < 3 or env.max() <= 0:
        return np.zeros(0), np.zeros(0)
    idx = librosa.onset.onset_detect(onset_envelope=env, sr=sr, hop_length=HOP, units="frames")
    times = librosa.frames_to_time(idx, sr=sr, hop_length=HOP) - lead / sr
    keep = (times < len(x) / sr - END_GUARD_S) & (times > -0.5 * LEAD_FRAMES * HOP / sr)
    return np.maximum(times[keep], 0.0), env[idx[keep]] / env.max()


def grid_from_annotation(beats: Sequence[float], downbeats: Sequence[float],
                         meter: Sequence[int] = (4, 4), subdivisions: int = 4) -> Grid:
    """A `Grid` from annotation beat / downbeat times (already relative to the region); beats
    per bar from the meter's numerator."""
    return Grid(np.asarray(beats, dtype=np.float64), np.asarray(downbeats, dtype=np.float64),
                int(meter[0]), int(subdivisions))


def estimate_grid(given_audio: Mapping[str, np.ndarray] | np.ndarray, sr: int,
                  beats_per_bar: int = 4) -> Grid:
    """Beats of the given stems (their sum) by `librosa.beat.beat_track` on the onset envelope
    (prior centred on 120 bpm); the downbeat is the beat phase (of `beats_per_bar`) with the
    largest mean onset strength; the subdivision by `choose_subdivision`. Returns a `Grid`."""
    import librosa

    mix = sum(as_mono(a) for a in given_audio.values()) if isinstance(given_audio, Mapping) \
        else as_mono(given_audio)
    mix = np.asarray(mix, np.float32)
    env = onset_envelope(mix, sr)
    _, frames = librosa.beat.beat_track(onset_envelope=env, sr=sr, hop_length=HOP, start_bpm=120.0,
                                        trim=False)
    beats = librosa.frames_to_time(frames, sr=sr, hop_length=HOP)
    if len(beats) < 2:  # no pulse found: a 120 bpm grid from 0, so scores stay defined
        beats = np.arange(0.0, max(len(mix) / sr, 1.0), 0.5)
    strength = np.interp(beats * sr / HOP, np.arange(len(env)), env)
    bar_phase = int(np.argmax([strength[k::beats_per_bar].mean() for k in range(beats_per_bar)]))
    grid = Grid(np.asarray(beats, np.float64), np.asarray(beats[bar_phase::beats_per_bar], np.float64),
                beats_per_bar)
    sources = given_audio if isinstance(given_audio, Mapping) else {"mix": given_audio}
    return choose_subdivision(grid, sources, sr)


def _tolerance(points: np.ndarray, tolerance_s: float = TOLERANCE_S) -> float:
    return min(tolerance_s, float(np.median(np.diff(points))) / 4.0)


def _on_grid(onsets: np.ndarray, points: np.ndarray, tol: float) -> np.ndarray:
    return np.min(np.abs(onsets[:, None] - points[None]), axis=1) <= tol


def choose_subdivision(grid: Grid, given: Mapping[str, np.ndarray], sr: int,
                       options: Sequence[int] = SUBDIVISIONS) -> Grid:
    """`grid` with the subdivision on which the given stems' onsets (`stem_onsets`) land most
    above chance (hit rate - 2 tol / subdivision period); unchanged when they have no onsets."""
    onsets = [stem_onsets(as_mono(x), sr, stem)[0] for stem, x in given.items()]
    onsets = [o for o in onsets if o.size]
    if not onsets or len(grid.beats) < 2:
        return grid
    duration = max(len(as_mono(x)) for x in given.values()) / sr
    best, best_gain = grid, -np.inf
    for s in options:
        g = replace(grid, subdivisions=int(s))
        pts = g.points(duration)
        tol = _tolerance(pts)
        hits = np.mean(np.concatenate([_on_grid(o, pts, tol) for o in onsets]))
        gain = hits - min(1.0, 2 * tol / float(np.median(np.diff(pts))))
        if gain > best_gain + 1e-9:
            best, best_gain = g, gain
    return best


def metrical_profile(onsets: np.ndarray, strengths: np.ndarray, grid: Grid,
                     duration: float) -> np.ndarray:
    """Onset strength summed per grid position in the bar `[subdivisions * beats_per_bar]`."""
    pts = grid.points(duration)
    steps = grid.subdivisions * grid.beats_per_bar
    prof = np.zeros(steps)
    if onsets.size == 0:
        return prof
    idx = np.argmin(np.abs(onsets[:, None] - pts[None]), axis=1)
    pos = np.mod(idx - grid.first_point_offset(duration), steps)
    np.add.at(prof, pos, strengths)
    return prof


def profile_correlation(profile: np.ndarray, context: np.ndarray) -> float:
    """max(0, Pearson correlation) of two metrical profiles `[S]`; NaN when either is
    constant (undefined)."""
    if np.std(profile) == 0 or np.std(context) == 0:
        return float("nan")
    return max(0.0, float(np.corrcoef(profile, context)[0, 1]))


def rhythmic_fit(audio: np.ndarray, sr: int, grid: Grid, context_profile: np.ndarray | None = None,
                 tolerance_s: float = TOLERANCE_S, stem: str | None = None) -> RhythmicFit:
    """Rhythmic fit of `audio [N]` (a `stem`: onsets by `stem_onsets`) to `grid` (see the
    module docstring for definitions). `context_profile`: of the given stems (None: grid only).
    """
    x = as_mono(audio)
    duration = len(x) / sr
    onsets, strengths = stem_onsets(x, sr, stem)
    if onsets.size == 0 or len(grid.beats) < 2:
        nan = float("nan")
        return RhythmicFit(nan, nan, nan, int(onsets.size))
    pts = grid.points(duration)
    grid_score = float(np.mean(_on_grid(onsets, pts, _tolerance(pts, tolerance_s))))
    metric = float("nan")
    if context_profile is not None:
        prof = metrical_profile(onsets, strengths, grid, duration)
        metric = profile_correlation(prof, context_profile)
    score = float(np.sqrt(grid_score * metric)) if np.isfinite(metric) else grid_score
    return RhythmicFit(score, grid_score, metric, int(onsets.size))


def context_profile(given_audio: Mapping[str, np.ndarray], sr: int, grid: Grid) -> np.ndarray | None:
    """Metrical profile of the context `[4 * beats_per_bar]`: the mean over the given stems
    of each stem's own profile normalised to sum 1 (a mix would merge simultaneous onsets
    of different stems into one and flatten the accents). None when nothing is given or
    no given stem has onsets."""
    profiles = []
    for stem, audio in given_audio.items():
        x = as_mono(audio)
        onsets, strengths = stem_onsets(x, sr, stem)
        prof = metrical_profile(onsets, strengths, grid, len(x) / sr)
        if prof.sum() > 0:
            profiles.append(prof / prof.sum())
    return np.mean(profiles, axis=0) if profiles else None
