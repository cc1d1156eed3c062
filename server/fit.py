"""How well a take's generated stems fit the given ones, estimated in the daemon (numpy only).

Used to rank the takes of a multi-take job (`done.takes[i].fit`, `rank`): a musician who asks
for four takes auditions the likeliest keeper first. It is an estimate from the audio alone,
cheaper and cruder than the evaluation's ruler (`msldm.eval`: librosa onsets and beats, Basic
Pitch notes, chords from the annotation), and it never changes what is generated.

- **Onsets**: half-wave rectified log-magnitude spectral flux (`N_FFT` 1024, `HOP` 256 = 11.6
  ms at 22.05 kHz), peaks above a tenth of the stem's largest, at least `MIN_GAP_S` apart.
- **Grid** of the context (the given stems; in total generation the other generated stems):
  the region's beat when the request's `region.tempo` gives it, counted from the region start
  (which a DAW cuts at a bar line). Otherwise the beat is the autocorrelation peak of their
  summed onset envelope between 60 and 200 bpm (weighted towards 120 bpm by an octave-wide
  prior), then fitted to their onsets by least squares so that it does not drift. Either way
  the subdivision (4: 16ths, or 3: triplets), and without a tempo the phase, are those on which
  the context's onsets land most above chance.
- **Rhythm** of a stem: sqrt(grid x metric), where grid is the share of its onset strength
  within `TOLERANCE_S` of a grid point and metric the (non-negative) correlation of its
  onset-strength profile over the positions of a 4-beat cycle with the context's profile.
- **Harmony** of a pitched stem (not drums), over `SEGMENT_S` segments weighted by its energy
  (by its amplitude against a bass), against the given pitched stems: the mean of what each kind
  of given stem tells.
  - Given guitar or piano: the cosine between the stem's chroma and theirs (a `CHROMA_FFT`-point
    STFT, bins between 130 Hz and 4 kHz, each into its nearest pitch class).
  - Given bass: the share of the stem's chroma on the tones a chord on the bass's root may hold
    (`CHORD_ON_ROOT`: root, either third, fifth, half for the minor seventh). The root is the
    pitch class of the bass's fundamentals (`BASS_FFT`-point STFT, `BASS_RANGE_HZ`), whose
    chroma above 130 Hz holds its overtones more than its notes. A cosine against that
    chroma could not tell the takes given bass and drums apart (below).
  None when no pitched stem is given.
- **Score** of a stem: the mean of its rhythm and harmony (those that exist); of a take: the
  mean over its generated stems. A silent stem scores 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

N_FFT = 1024
HOP = 256
CHROMA_FFT = 4096  # 5.4 Hz bins: a semitone is 1.4 bins at the range's 130 Hz floor
CHROMA_HOP = 1024
MIN_GAP_S = 0.05
TOLERANCE_S = 0.025
SEGMENT_S = 0.5
PITCH_RANGE_HZ = (130.0, 4000.0)  # C3 up: a bass is heard by its harmonics there
UNPITCHED = frozenset({"drums"})
SILENT_RMS = 1e-4  # -80 dBFS: below it a stem has no onsets and no chroma
BASS_FFT = 8192  # 2.7 Hz bins: a bass's fundamentals, a semitone apart from 46 Hz (F#1) up
BASS_RANGE_HZ = (35.0, 330.0)  # a bass's fundamentals (B0 to E4)
CHORD_ON_ROOT = np.array([1.0, 0, 0, 1.0, 1.0, 0, 0, 1.0, 0, 0, 0.5, 0])
"""Weights of the pitch classes above a given bass's root that a chord on it may hold (root,
minor and major third, fifth; the minor seventh half). Measured on the bundled model's takes
given bass and drums (2026-12-06, docs/eval/model-history.md, "Nineteenth session"): over 4 eval draws
of the 24 test clips, the within-clip correlation of the harmony estimate with the ruler's
(Basic Pitch notes on the annotated chords) rose from 0.27 / 0.21 (guitar / piano; the cosine
against the bass's chroma above 130 Hz) to 0.31 / 0.43; on 4 takes of the seventeenth session's
sampler, the take ranked first by harmony had 0.676 of its note time on the chord, against
0.639 by the cosine, 0.598 for an average take and 0.726 for the best."""
BLOCK_FRAMES = 512


@dataclass(frozen=True)
class StemFit:
    """One generated stem's estimated fit (each in [0, 1]; harmony None without a pitched given stem)."""

    rhythm: float | None
    harmony: float | None

    @property
    def score(self) -> float:
        parts = [v for v in (self.rhythm, self.harmony) if v is not None]
        return float(np.mean(parts)) if parts else 0.0

    def as_dict(self) -> dict:
        r = None if self.rhythm is None else round(self.rhythm, 4)
        h = None if self.harmony is None else round(self.harmony, 4)
        return {"rhythm": r, "harmony": h, "score": round(self.score, 4)}


@dataclass(frozen=True)
class Grid:
    """A grid of points every `unit` frames from `phase` (frames), `per_beat` points a beat."""

    unit: float
    phase: float
    per_beat: int


# ----------------------------------------------------------------------------- features

def magnitude(x: np.ndarray, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """Magnitude STFT `[T, n_fft // 2 + 1]` of mono `x` (frame t centred on sample t * hop,
    zero-padded), Hann window."""
    x = np.asarray(x, np.float32).reshape(-1)
    pad = np.pad(x, (n_fft // 2, n_fft // 2))
    if len(pad) < n_fft:
        pad = np.pad(pad, (0, n_fft - len(pad)))
    frames = np.lib.stride_tricks.sliding_window_view(pad, n_fft)[::hop]  # a view: nothing copied yet
    window = np.hanning(n_fft + 1)[:-1].astype(np.float32)
    out = np.empty((len(frames), n_fft // 2 + 1), np.float32)
    for i in range(0, len(frames), BLOCK_FRAMES):  # blocks: a 10-minute region stays a few MB at a time
        out[i:i + BLOCK_FRAMES] = np.abs(np.fft.rfft(frames[i:i + BLOCK_FRAMES] * window, axis=1))
    return out


def onset_envelope(mag: np.ndarray) -> np.ndarray:
    """Rectified log-magnitude flux `[T]` (frame 0 is 0), scaled to a maximum of 1 (all 0 when flat)."""
    peak = float(mag.max()) if mag.size else 0.0
    if peak <= 0:
        return np.zeros(len(mag))
    log = np.log1p(1000.0 * mag / peak)
    flux = np.concatenate([[0.0], np.maximum(np.diff(log, axis=0), 0.0).sum(axis=1)])
    top = float(flux.max())
    return flux / top if top > 0 else flux


def onsets(env: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Peaks of `env` (frames, strengths): local maxima over a tenth of the largest, strongest
    first kept, none closer than `MIN_GAP_S` to a stronger one."""
    if len(env) < 3 or env.max() <= 0:
        return np.zeros(0, int), np.zeros(0)
    t = np.arange(1, len(env) - 1)
    peak = (env[t] > env[t - 1]) & (env[t] >= env[t + 1]) & (env[t] >= 0.1 * env.max())
    cand = t[peak][np.argsort(-env[t[peak]], kind="stable")]
    gap = MIN_GAP_S * sr / HOP
    kept: list[int] = []
    for c in cand:
        if all(abs(c - k) >= gap for k in kept):
            kept.append(int(c))
    kept.sort()
    frames = np.array(kept, int)
    return frames, env[frames]


def chroma(x: np.ndarray, sr: int, n_fft: int = CHROMA_FFT,
           band: tuple[float, float] = PITCH_RANGE_HZ) -> np.ndarray:
    """Chroma `[T, 12]` (pitch class 0 = C) of mono `x`: power of the `n_fft`-point STFT
    (hop `CHROMA_HOP`) in `band`, each bin into its nearest pitch class."""
    mag = magnitude(x, n_fft, CHROMA_HOP)
    freqs = np.arange(mag.shape[1]) * sr / n_fft
    lo, hi = band
    use = (freqs >= lo) & (freqs <= hi)
    pc = np.round(12.0 * np.log2(freqs[use] / 440.0) + 69.0).astype(int) % 12
    basis = np.zeros((int(use.sum()), 12))
    basis[np.arange(len(pc)), pc] = 1.0
    return mag[:, use] ** 2 @ basis


def bass_chroma(x: np.ndarray, sr: int) -> np.ndarray:
    """Chroma `[T, 12]` of a bass's fundamentals: as `chroma`, from a `BASS_FFT`-point STFT in
    `BASS_RANGE_HZ` (hop `CHROMA_HOP`, so its frames are `chroma`'s)."""
    return chroma(x, sr, BASS_FFT, BASS_RANGE_HZ)


def chord_tones(root_chroma: np.ndarray) -> np.ndarray:
    """Per frame `[T, 12]`, the weight of each pitch class as a tone of a chord on the root that
    `root_chroma` `[T, 12]` names (`CHORD_ON_ROOT`, rolled to each root and mixed by the share of
    the frame's energy on it), scaled so that the frame's likeliest chord tone weighs 1; all 0
    in a silent frame."""
    rolled = np.stack([np.roll(CHORD_ON_ROOT, r) for r in range(12)])  # [root, pitch class]
    tones = np.asarray(root_chroma, np.float64) @ rolled
    top = tones.max(axis=1, keepdims=True)
    return np.divide(tones, top, out=np.zeros_like(tones), where=top > 0)


# ----------------------------------------------------------------------------- grid

def estimate_grid(context: np.ndarray, sr: int) -> Grid | None:
    """The context envelope's beat period, subdivision and phase (module docstring); None when
    it has no periodicity to read."""
    frame_s = HOP / sr
    c = context - context.mean()
    if len(c) < 4 or not np.any(c):
        return None
    lags = np.arange(max(1, int(0.3 / frame_s)), min(len(c) - 1, int(1.0 / frame_s) + 1))
    if len(lags) < 3:
        return None
    ac = np.array([float(np.dot(c[:-lag], c[lag:])) / (len(c) - lag) for lag in lags])
    prior = np.exp(-0.5 * (np.log2(lags * frame_s / 0.5)) ** 2)
    i = int(np.argmax(ac * prior))
    if ac[i] <= 0:
        return None
    period = float(lags[i])
    if 0 < i < len(ac) - 1:  # parabolic refinement
        a, b, d = ac[i - 1], ac[i], ac[i + 1]
        den = a - 2 * b + d
        if den < 0:
            period += 0.5 * (a - d) / den
    grid = _subdivide(context, sr, period, None)
    return _refine(context, sr, grid) if grid is not None else None


def _refine(context: np.ndarray, sr: int, grid: Grid, rounds: int = 2) -> Grid:
    """The grid's unit and phase fitted to the context's onsets that sit on it (least squares,
    weighted by strength): an autocorrelation peak is a fraction of a frame off, which over a
    12 s region drifts the grid by more than the onset tolerance."""
    frames, strengths = onsets(context, sr)
    tol = min(TOLERANCE_S * sr / HOP, grid.unit / 4)
    for _ in range(rounds):
        on = _distance(frames, grid) <= tol
        if on.sum() < 3:
            break
        k = np.round((frames[on] - grid.phase) / grid.unit)
        if np.ptp(k) == 0:
            break
        slope, intercept = np.polyfit(k, frames[on], 1, w=np.sqrt(strengths[on]))
        if not slope > 0:
            break
        new = Grid(float(slope), float(intercept % slope), grid.per_beat)
        if _on_grid_share(frames, strengths, new, sr) < _on_grid_share(frames, strengths, grid, sr):
            break
        grid = new
    return grid


def grid_from_beat(context: np.ndarray, sr: int, beat_seconds: float, start_seconds: float = 0.0) -> Grid | None:
    """The grid of a known beat (a DAW's tempo) through the region start (a region cut at a bar
    line), for audio that begins `start_seconds` after it; only the subdivision is read from
    the context."""
    return _subdivide(context, sr, beat_seconds * sr / HOP, anchor=-start_seconds * sr / HOP)


def _subdivide(context: np.ndarray, sr: int, period: float, anchor: float | None) -> Grid | None:
    """The subdivision (4 or 3 points a beat of `period` frames) on which the context's onsets
    land most above chance, its grid through frame `anchor` (the region start), or with the
    phase that does the same when `anchor` is None."""
    frames, strengths = onsets(context, sr)
    if not len(frames) or period <= 0:
        return None
    tol = TOLERANCE_S * sr / HOP
    best: tuple[float, Grid] | None = None
    for per_beat in (4, 3):
        unit = period / per_beat
        chance = min(1.0, 2 * min(tol, unit / 4) / unit)
        phases = np.linspace(0.0, unit, 24, endpoint=False) if anchor is None else [anchor % unit]
        for ph in phases:
            grid = Grid(unit, float(ph), per_beat)
            share = _on_grid_share(frames, strengths, grid, sr)
            if best is None or share - chance > best[0]:
                best = (share - chance, grid)
    return best[1] if best else None


def _distance(frames: np.ndarray, grid: Grid) -> np.ndarray:
    r = np.mod(frames - grid.phase, grid.unit)
    return np.minimum(r, grid.unit - r)


def _on_grid_share(frames: np.ndarray, strengths: np.ndarray, grid: Grid, sr: int) -> float:
    if not len(frames) or strengths.sum() <= 0:
        return 0.0
    tol = min(TOLERANCE_S * sr / HOP, grid.unit / 4)
    return float(strengths[_distance(frames, grid) <= tol].sum() / strengths.sum())


def profile(frames: np.ndarray, strengths: np.ndarray, grid: Grid) -> np.ndarray:
    """Onset strength summed per position of a 4-beat cycle of the grid `[4 * per_beat]`."""
    n = 4 * grid.per_beat
    pos = np.round((frames - grid.phase) / grid.unit).astype(int) % n
    out = np.zeros(n)
    np.add.at(out, pos, strengths)
    return out


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() <= 0 or b.std() <= 0:
        return 0.0
    return max(0.0, float(np.corrcoef(a, b)[0, 1]))


# ----------------------------------------------------------------------------- fit

def _silent(x: np.ndarray) -> bool:
    return float(np.sqrt(np.mean(np.square(np.asarray(x, np.float64))))) < SILENT_RMS if len(x) else True


@dataclass(frozen=True)
class Context:
    """What a stem's rhythm is judged against: the context envelope's length (frames), its grid
    and its onsets (frames, strengths)."""

    frames: int
    grid: Grid | None
    onset_frames: np.ndarray
    strengths: np.ndarray

    def profile(self, n: int) -> np.ndarray:
        """The context's accent profile over its first `n` frames (`profile`)."""
        keep = self.onset_frames < n
        return profile(self.onset_frames[keep], self.strengths[keep], self.grid)


class Scorer:
    """Scores takes against one set of given stems (their features computed once).
    Audio: mono `[N]` at `sr`. `beat_seconds`: the region's beat when the DAW sent its tempo
    (`region.tempo`; the grid then runs through the region start, `start_seconds` before the
    audio's first sample: a redo's span starts inside the region), else the grid is estimated."""

    def __init__(self, given: Mapping[str, np.ndarray], sr: int, beat_seconds: float | None = None,
                 start_seconds: float = 0.0) -> None:
        self.sr, self.given, self.beat, self.start = sr, list(given), beat_seconds, start_seconds
        # a given bass's chroma is that of its fundamentals (`bass_chroma`): it names the roots
        self.feats = {s: self._features(s, a, root=s == "bass") for s, a in given.items()}
        self.pitched = [s for s in given if s not in UNPITCHED and not self.feats[s][0]]
        self.seg = max(1, int(round(SEGMENT_S * sr / CHROMA_HOP)))
        chords = [s for s in self.pitched if s != "bass"]
        self.ctx_chroma = self._seg_chroma([self.feats[s][2] for s in chords]) if chords else None
        self.bass_tones = chord_tones(self._seg_chroma([self.feats["bass"][2]])) \
            if "bass" in self.pitched else None  # [segments, 12]
        self.context: Context | None = None  # the given stems' envelope, grid and onsets, once

    def _features(self, stem: str, a: np.ndarray, root: bool = False) -> tuple[bool, np.ndarray, np.ndarray | None]:
        """(silent, onset envelope, chroma or None for drums) of one stem; with `root`, the chroma
        of its fundamentals (`bass_chroma`)."""
        a = np.asarray(a, np.float32).reshape(-1)
        pitch = None if stem in UNPITCHED else bass_chroma(a, self.sr) if root else chroma(a, self.sr)
        return _silent(a), onset_envelope(magnitude(a)), pitch

    def _seg_chroma(self, chromas: Sequence[np.ndarray]) -> np.ndarray:
        n = min(len(c) for c in chromas)
        c = sum(c[:n] for c in chromas)
        seg = min(self.seg, n)
        return c[: n // seg * seg].reshape(-1, seg, 12).sum(axis=1)

    def _context(self, envs: Sequence[np.ndarray]) -> Context:
        n = min(len(e) for e in envs)
        env = sum(e[:n] for e in envs)
        grid = grid_from_beat(env, self.sr, self.beat, self.start) if self.beat else estimate_grid(env, self.sr)
        return Context(len(env), grid, *onsets(env, self.sr))

    def __call__(self, generated: Mapping[str, np.ndarray]) -> dict[str, StemFit]:
        """The estimated fit of each generated stem (module docstring): its context is the
        given stems, or in total generation the other generated ones."""
        feats = {s: self._features(s, a) for s, a in generated.items()}
        heard = [s for s in self.given if not self.feats[s][0]]
        out: dict[str, StemFit] = {}
        for stem, (silent, env, chr_) in feats.items():
            judged = bool(self.pitched) and stem not in UNPITCHED  # drums have no harmony to judge
            no_harmony = 0.0 if judged else None
            if silent:
                out[stem] = StemFit(0.0, no_harmony)
                continue
            if heard:
                if self.context is None:
                    self.context = self._context([self.feats[s][1] for s in heard])
                ctx = self.context
            else:
                others = [feats[s][1] for s in generated if s != stem and not feats[s][0]]
                ctx = self._context(others) if others else None
            rhythm = None
            if ctx is not None and ctx.grid is not None:
                n = min(len(env), ctx.frames)
                f, w = onsets(env[:n], self.sr)
                share = _on_grid_share(f, w, ctx.grid, self.sr)
                rhythm = math.sqrt(share * _correlation(profile(f, w, ctx.grid), ctx.profile(n)))
            harmony = self._harmony(self._seg_chroma([chr_])) if judged else None
            out[stem] = StemFit(rhythm, harmony)
        return out

    def _harmony(self, mine: np.ndarray) -> float:
        """A stem's harmony (module docstring) from its segment chroma `[segments, 12]`: the mean
        of its cosine against the given guitar and piano and its share on the given bass's chord
        tones, those that are given."""
        parts = []
        if self.ctx_chroma is not None:
            n = min(len(mine), len(self.ctx_chroma))
            a, b = mine[:n], self.ctx_chroma[:n]
            na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
            ok = (na > 0) & (nb > 0)
            parts.append(float(np.average((a[ok] * b[ok]).sum(axis=1) / (na[ok] * nb[ok]), weights=na[ok]))
                         if ok.any() else 0.0)
        if self.bass_tones is not None:
            n = min(len(mine), len(self.bass_tones))
            a, tones = mine[:n], self.bass_tones[:n]
            energy = a.sum(axis=1)
            ok = (energy > 0) & (tones.sum(axis=1) > 0)
            # weighted by the segment's amplitude (the root of its energy): by its energy, the
            # ranking given bass and drums fell to 0.646 (the module docstring's 0.676)
            parts.append(float(np.average((a[ok] * tones[ok]).sum(axis=1) / energy[ok],
                                          weights=np.sqrt(energy[ok]))) if ok.any() else 0.0)
        return float(np.mean(parts))


def stem_fits(generated: Mapping[str, np.ndarray], given: Mapping[str, np.ndarray], sr: int,
              beat_seconds: float | None = None, start_seconds: float = 0.0) -> dict[str, StemFit]:
    """The estimated fit of each generated stem to `given` (`Scorer`, once)."""
    return Scorer(given, sr, beat_seconds, start_seconds)(generated)


def take_score(fits: Mapping[str, StemFit]) -> float:
    """A take's score: the mean of its generated stems' scores."""
    return float(np.mean([f.score for f in fits.values()])) if fits else 0.0


def rank(scores: Sequence[float]) -> list[int]:
    """1-based rank of each score, the highest first (ties keep the take order)."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    ranks = [0] * len(scores)
    for r, i in enumerate(order, 1):
        ranks[i] = r
    return ranks
