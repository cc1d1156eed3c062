"""Regions of any length: overlapping windows, continuation by imputation in time, crossfades.

A region of N samples (model rate) is F = ceil(N/D) latent frames. It is cut into windows
of W frames (the model's window) starting every H = W - O frames (O frames of overlap).
Window 0 is sampled with the given stems imposed (imputation across stems). Every later
window is sampled with the given stems imposed *and* its first O frames of the generated
stems imposed from the previous window's last O generated frames (imputation in time),
so the stems continue. The decoded windows are crossfaded linearly over the O*D overlap
samples and the result is cut to exactly N samples. A decoder that carries phase (the
spectral SourceVAE's) starts each window at the phase the previous window's decode had
there, so the crossfades join two signals in phase. `generate_region` yields the stems
piece by piece as soon as each window is decoded (time to first audio = one window).

A requested stem that comes out silent over a window's new frames, where a given stem
sounds or where nothing is given (total generation), is a failed take, not a rest: the model
was trained on windows where every part plays. So is one that comes out buried: further under
the loudest given stem over those frames than real parts go in all but 1 window in 100
(`BURIED_DB`); the model can answer some given parts with a part the listener cannot hear in
the mix. So is one that comes out blown: a frame far
louder than any real stem's (`BLOWN_DBFS`, 3 dB under a full-scale sine); the decoder, fed a
latent far from any it was trained on, can return a burst tens of dB over full scale. Such a
window is sampled again for that take from the take's own noise stream, with churn at every
noise level (`REROLL_S_TMIN`), up to `silent_retries` times, keeping the best attempt (not
blown before not silent before not buried, then the one whose quietest requested stem sounds
most), before anything of it is streamed; `Timings.rerolls` counts the extra samplings per
take. Where stems are given, a silent or buried window is sampled again with the pulling
sampler (the manifest's `pull_resample` times the RePaint passes over `pull_steps` of the steps: about the
same cost, a stronger pull towards the given stems), and so is every later window of that
take at its first attempt (`PULL_STICKY`); a blown one, and any in total generation, as the
request asks. Where every
attempt came out blown, the blown window's generated stems are scaled down until their
loudest frame is `TAME_MARGIN_DB` under `BLOWN_DBFS` (`_tamed`): a quiet take is a bad take,
a burst on a DAW's track is a hazard.

Where the bass is among the given stems, every window is sampled with reconstruction guidance
from the error of the given stems with notes (the manifest's `bass_given_reconstruction` and
`bass_given_resample`, `PITCHED_STEMS`, `bass_given_sampler`; given the bass and drums alone
only from sigma `bass_drums_reconstruction_tmin` down, with `bass_drums_select` candidates per
take down to that level, of which the one whose estimate of the given bass misses it least goes
on: `best_of`): with imputation alone the bundled model read a given bass weakly, playing parts
in the key but not on its chords, or too quiet beside it.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

from msldm.config import MAX_SELECT
from msldm.eval.density import AUDIBLE_DBFS, EMPTY_FRACTION, FRAME, HOP, is_empty
from msldm.eval.dsp import frame_rms_db, level_db
from server.levels import LEVELS, LevelBalance, RunningBalance, apply_gain, given_level_db
from server.runtime import Bundle

StepHook = Callable[[int, int, int], None]
"""`hook(window, step, steps)` after every sampler step; may raise `sampling.Cancelled`."""


@dataclass(frozen=True)
class WindowPlan:
    """Window starts (in frames) covering F frames with windows of W frames and O frames overlap."""

    frames: int  # F
    window: int  # W
    overlap: int  # O

    @property
    def hop(self) -> int:
        return self.window - self.overlap

    @property
    def starts(self) -> list[int]:
        starts = [0]
        while starts[-1] + self.window < self.frames:
            starts.append(starts[-1] + self.hop)
        return starts

    @property
    def padded_frames(self) -> int:
        return self.starts[-1] + self.window


def default_overlap(window_frames: int) -> int:
    """O = W / 4 frames (at least 1, and 0 for a 1-frame window)."""
    return max(1, window_frames // 4) if window_frames > 1 else 0


@dataclass
class Piece:
    """Consecutive audio of the requested stems of one take: samples [start, start + len) at
    model rate."""

    window: int
    start: int
    stems: dict[str, np.ndarray]  # stem -> [n] float32
    last: bool
    take: int = 0


class TakeNoise:
    """Noise for a batch of takes: row b of every draw comes from take b's own generator.

    `standard_normal((B, ...))` stacks one `(...)`-shaped draw per generator, so take b sees
    exactly the numbers a one-take run seeded like it draws: a take of a batch is the take a
    request with its seed alone makes (up to the float rounding of batched inference)."""

    def __init__(self, seeds: Sequence[int]):
        self.generators = [np.random.default_rng(s) for s in seeds]

    def standard_normal(self, shape: tuple[int, ...], dtype: type = np.float64) -> np.ndarray:
        if shape[0] != len(self.generators):
            raise ValueError(f"noise for {shape[0]} rows asked of {len(self.generators)} takes")
        return np.stack([g.standard_normal(tuple(shape[1:]), dtype=dtype) for g in self.generators])

    def subset(self, rows: Sequence[int]) -> "TakeNoise":
        """The same generators of `rows` only (drawing from it advances those takes' streams)."""
        sub = TakeNoise([])
        sub.generators = [self.generators[b] for b in rows]
        return sub


@dataclass
class Timings:
    encode: float = 0.0
    sample: float = 0.0
    decode: float = 0.0
    rerolls: dict[int, int] = field(default_factory=dict)  # take -> extra samplings (a silent, buried or blown stem)
    tamed: dict[int, int] = field(default_factory=dict)  # take -> windows blown at every attempt, scaled down
    passes: int = 0  # RePaint passes per step the request was sampled with (the bundle's, the request's or
    # the given bass's sampler: `bass_given_sampler`), set when the region's generation starts
    candidates: int = 1  # candidates per take and window (`best_of`; 1 unless the bass and drums alone are
    # given), set with `passes`
    guidance: float | None = None  # the given-part guidance the region was sampled with (None: the manifest's
    # `guidance`; `harmony_given_sampler`), set with `passes`
    level_gain: dict[int, dict[str, list[float]]] = field(default_factory=dict)  # take -> stem -> the balance
    # gain (dB) of each window of its generated stem (`server.levels`; 0 before it first sounds beside a
    # given stem; a stem not listed kept the model's level)
    level: str = "model"  # "balance" where the balance table set the generated stems' level, else "model"

    @property
    def rerolls_total(self) -> int:
        """Extra samplings of a window for a silent, buried or blown stem, over every take."""
        return sum(self.rerolls.values())


SILENT_RETRIES = 2
"""Default extra samplings of a window of a take whose requested stem is silent (0: never)."""
SILENT_SHARE = EMPTY_FRACTION
"""A stem is silent over a span when under this share (5%) of its frames is audible: the
evaluation's empty-stem rule (`msldm.eval.density`: frame RMS above -50 dBFS)."""
REROLL_S_TMIN = 0.0
"""A window sampled again adds its churn at every noise level (EDM's S_tmin 0), whatever the
bundle's S_tmin: on the model bundled until 2026-12-05 that setting never left a guitar given drums and piano
empty (0 of 24 clips; S_tmin 0.3, the default for its tighter rhythm, left 1), and on the one
clip where the default gave a silent guitar three times it gave a sounding one three times."""
BLOWN_DBFS = -6.0
"""A stem is blown over a span when a frame's RMS (the density frames) reaches this: 3 dB under
a full-scale sine's, 7.7 dB over the loudest frame of any real stem in 120 tracks of the
10-hour corpus's validation split (0.1 s frames: -13.7 dBFS, drums; bass -19, guitar -17, piano -15; the
corpus's random gain included). A denoiser fine-tuned for 1427 steps on a new VAE's latents
gave 2 of 24 guitars bursts of +6 to +10 dBFS, and after 3750 steps frames at -5 dBFS
(2026-12-05)."""
TAME_MARGIN_DB = 1.0
"""Where every attempt at a window is blown, its blown stems are scaled to this many dB under
`BLOWN_DBFS` (`_tamed`)."""
BURIED_DB = {"bass": -20.0, "drums": -16.0, "guitar": -21.0, "piano": -22.0}
"""A requested stem is buried over a span when its RMS there is more than this many dB under the
loudest given stem's RMS there (judged where a given stem sounds; total generation has none).
Each figure is the 1st percentile of that stem's margin under the loudest of the other three
real stems in 3.7 s windows of the training corpora (`scripts/level_margins.py`, 500 tracks of
the 10-hour corpus and 500 of the plays-through one, FluidR3: bass -20.3 / -19.9, drums -16.3 /
-15.2, guitar -21.3 / -19.7, piano -22.0 / -22.1), so a real part fails it in under 1 window
in 100, fewer still against the given stems alone. The model shipped on 2026-12-06 answered
some test songs' drums and piano with guitars 25 dB under the piano (docs/eval/model-history.md,
"Sixteenth session")."""
PULL_STICKY = True
"""Once a take's window was sampled again for a silent or buried part, that take's later windows
are sampled with the pulling sampler at once (the same cost as the request's): the model
answered these given stems with a buried part, and a window that continues the pulled one
would be pulled again."""
PITCHED_STEMS = ("bass", "guitar", "piano")
"""Given stems whose reconstruction error guides a request given the bass (`bass_given_sampler`):
the ones with notes, not the drums (whose error pulled the generated parts' level about)."""
BURIED_DEFAULT_DB = -20.0
"""`BURIED_DB` for a stem name it does not list."""
MIN_CHECK_SECONDS = 0.5
"""Spans shorter than this (the region's end in a last window) are not judged for silence
(a short rest may be right); a burst is judged however short."""


class EncodeCache:
    """Latents of recently encoded given-stem windows, keyed by a digest of their audio.

    A musician auditioning takes sends the same given stems again with a new seed; the
    encoder is deterministic, so their windows need not be encoded twice. Least recently
    used entries go first once `max_bytes` is exceeded; `max_bytes` 0 turns it off. One
    cache belongs to one bundle and one thread (the worker)."""

    def __init__(self, max_bytes: int = 64 << 20):
        self.max_bytes, self.bytes, self.hits, self.misses = max_bytes, 0, 0, 0
        self.store: OrderedDict[bytes, np.ndarray] = OrderedDict()

    def encode(self, bundle: Bundle, audio: np.ndarray) -> np.ndarray:
        """`bundle.encode(audio)` for `[G,1,N]`, encoding only the rows not cached."""
        if self.max_bytes <= 0:
            self.misses += len(audio)
            return bundle.encode(audio)
        keys = [hashlib.blake2b(np.ascontiguousarray(a).tobytes(), digest_size=16,
                                person=str(a.shape[-1]).encode()[:16]).digest() for a in audio]
        out: list[np.ndarray | None] = [self.store.get(k) for k in keys]
        for k in keys:
            if k in self.store:
                self.store.move_to_end(k)
        todo = [g for g, z in enumerate(out) if z is None]
        if todo:
            z = bundle.encode(audio[todo])
            for j, g in enumerate(todo):
                out[g] = z[j].copy()
                self._put(keys[g], out[g])
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        return np.stack(out)

    def _put(self, key: bytes, z: np.ndarray) -> None:
        old = self.store.pop(key, None)
        if old is not None:
            self.bytes -= old.nbytes
        self.store[key] = z
        self.bytes += z.nbytes
        while self.bytes > self.max_bytes and len(self.store) > 1:
            self.bytes -= self.store.popitem(last=False)[1].nbytes


class Crossfader:
    """Joins decoded windows `[W*D]` per stem: linear crossfade over `L = O*D` samples."""

    def __init__(self, overlap_samples: int, hop_samples: int):
        self.L, self.H = overlap_samples, hop_samples
        self.tails: dict[str, np.ndarray] = {}
        ramp = (np.arange(self.L, dtype=np.float32) + 0.5) / max(self.L, 1)
        self.fade_in, self.fade_out = ramp, 1.0 - ramp

    def join(self, stem: str, audio: np.ndarray, last: bool) -> np.ndarray:
        """Output for this window: crossfaded head + body up to the next window's start (or
        the whole rest if `last`); keeps the tail for the next call."""
        a = audio.copy()
        if stem in self.tails and self.L:
            a[: self.L] = self.tails.pop(stem) * self.fade_out + a[: self.L] * self.fade_in
        if last:
            return a
        self.tails[stem] = audio[self.H: self.H + self.L].copy()
        return a[: self.H]


@dataclass(frozen=True)
class SamplerArgs:
    """A request's sampler settings (None: the bundle's default)."""

    steps: int | None = None
    sampler: str | None = None
    schedule: str | None = None
    resample: int | None = None
    churn: float | None = None
    guidance: float | None = None
    reconstruction: float | None = None
    reconstruction_stems: tuple[str, ...] | None = None  # given stems whose error guides (None: all)
    reconstruction_tmin: float | None = None  # its lowest noise level (None: the manifest's)
    select: int = 1  # candidates per take above that level, the best going on (`best_of`; 1: off)


def bass_given_sampler(bundle: Bundle, given: Sequence[str], resample: int | None,
                       guidance: float | None) -> tuple[int | None, float | None, tuple[str, ...] | None,
                                                        float | None]:
    """(RePaint passes, reconstruction guidance weight, the given stems whose error guides, its
    lowest noise level) for a request. Where the bass is among the given stems, the request asks
    no given-part guidance and the manifest's `bass_given_reconstruction` is set: the manifest's
    `bass_given_resample` passes (unless the request or that field leaves them to `resample`),
    that weight, the given stems among `PITCHED_STEMS`, and where the given stems are the bass
    and drums alone `bass_drums_reconstruction_tmin` (None: the manifest's `reconstruction_tmin`).
    Otherwise the request's passes, None (the manifest's `reconstruction`), None (the whole
    imposed part's error) and None.

    The bundled model reads a given bass weakly: with imputation alone, given the bass and drums
    it played guitar and piano parts in the key but not on the bass's chords (harmonic fit
    0.41-0.43 of real parts'); given bass and piano its guitar came out 5.6-5.9 dB under real
    ones. Its manifest's weight 4 with 2 passes gives 0.59-0.65 / 0.63-0.67 given bass and drums
    on five test draws, from sigma 1 down there (77 denoiser calls a window against 70 without
    guidance; from 0.3 the same harmony with the parts 1-2 dB louder), and elsewhere from sigma
    0.3 (90 calls): the guitar given bass and piano -1.9 to -4.3 dB; given the bass alone, the
    parts stopped at sigma 1 came out 1-2 dB quieter, -3.4 / -4.0 dB. The same guidance from
    every imposed frame's error, the drums' too, reached 0.47-0.53 given bass and drums and made
    the parts too loud at more weight (docs/eval/model-history.md, "Eighteenth session", "Nineteenth
    session"). Given bass and drums, `generate_region` also samples the manifest's
    `bass_drums_select` candidates per take down to that level (`best_of`)."""
    d = bundle.sampler_defaults
    if "bass" not in given or d.bass_given_reconstruction <= 0 or guidance not in (None, 1.0):
        return resample, None, None, None
    pitched = tuple(s for s in given if s in PITCHED_STEMS)
    return (resample or d.bass_given_resample or None, d.bass_given_reconstruction, pitched,
            d.bass_drums_reconstruction_tmin if bass_and_drums_only(given) else None)


def harmony_given_sampler(bundle: Bundle, given: Sequence[str], resample: int | None,
                          guidance: float | None) -> tuple[int | None, float | None]:
    """(RePaint passes, given-part guidance weight) for a request: where the given stems are a
    guitar and/or piano alone (no bass, no drums: the generated bass and drums find the groove in
    the pitched parts alone) and the request asks no guidance of its own, the manifest's
    `harmony_given_guidance` and `harmony_given_resample` passes (unless the request sets its own or
    that field leaves them to `resample`); otherwise the request's own (None: the manifest's).

    Given guitar and piano, the bundled model's bass sat on their grid at 0.55-0.66 of a real
    bass's rhythmic fit on three test draws (0.64-0.75 on validation); the given-part guidance
    pulls the generated parts towards the given stems' timing (docs/eval/model-history.md,
    "Twenty-first session")."""
    d = bundle.sampler_defaults
    if guidance is not None or not given or "bass" in given or "drums" in given or d.harmony_given_guidance == 1.0:
        return resample, guidance
    return resample or d.harmony_given_resample or None, d.harmony_given_guidance


def bass_and_drums_only(given: Sequence[str]) -> bool:
    """Whether the given stems are exactly the bass and drums: the requests with their own band of
    guidance (`bass_drums_reconstruction_tmin`) and their candidates (`bass_drums_select`)."""
    return set(given) == {"bass", "drums"}


def generate_region(bundle: Bundle, given: dict[str, np.ndarray], requested: Sequence[str],
                    n_samples: int, *, seed: int, steps: int | None = None, sampler: str | None = None,
                    schedule: str | None = None, resample: int | None = None, overlap: int | None = None,
                    churn: float | None = None, guidance: float | None = None, hook: StepHook | None = None,
                    timings: Timings | None = None, cache: EncodeCache | None = None, takes: int = 1,
                    kept_frames: dict[str, np.ndarray] | None = None,
                    silent_retries: int = SILENT_RETRIES, candidates: int | None = None,
                    level: str = "balance") -> Iterator[Piece]:
    """Generate `requested` stems for a region of `n_samples` model-rate samples.

    `given`: stem -> `[n]` mono float32 at the model rate (zero-padded / cut to the region).
    `cache`: reuse the latents of given windows encoded before (same audio, same bundle).
    `takes`: that many takes, sampled as one batch (take i from seed `seed + i`, see
    `TakeNoise`); the given stems are encoded once for all of them. `kept_frames`: for a given
    stem that is also requested (a redo), a bool `[F]` over the region's latent frames: True
    where its latents are imposed, False where they are generated (a redone stem is never
    sampled again for silence). `silent_retries`: see the module docstring. `candidates`:
    where the given stems are the bass and drums alone (and their guidance runs), candidates per
    take and window (`best_of`; None: the manifest's `bass_drums_select`); ignored elsewhere.
    `timings.candidates` says how many were sampled. `guidance` None: the manifest's, or where a
    guitar and/or piano alone are given (not in a redo) its `harmony_given_guidance`
    (`harmony_given_sampler`; `timings.guidance` says which).
    `level` "balance": each take's generated stems scaled, window by window, to the manifest's
    balance against the given stems over the windows so far (`server.levels`; where the bundle has
    a table, stems are given and it is no redo; `timings.level` and `timings.level_gain` say what
    was done); "model": the decoder's level.
    Yields, window by window, one `Piece` per take (take 0 first); each take's pieces add up
    to exactly `n_samples`."""
    D, W = bundle.D, bundle.window_frames
    F = max(1, -(-n_samples // D))
    plan = WindowPlan(F, W, default_overlap(W) if overlap is None else overlap)
    audio = np.zeros((len(given), 1, plan.padded_frames * D), np.float32)  # [G,1,N_pad]
    for g, stem in enumerate(given):
        x = given[stem][:n_samples]
        audio[g, 0, : len(x)] = x
    kept = {}
    for stem, frames in (kept_frames or {}).items():  # padded frames count as kept (silence)
        kept[stem] = np.ones(plan.padded_frames, bool)
        kept[stem][: min(F, len(frames))] = frames[:F]
    t = timings or Timings()
    if not kept_frames:  # a redo keeps the sampler it asks for
        resample, guidance = harmony_given_sampler(bundle, list(given), resample, guidance)
    resample, reconstruction, error_stems, error_tmin = bass_given_sampler(bundle, list(given), resample, guidance)
    t.guidance = guidance
    t.passes = int(resample or bundle.sampler_defaults.resample)
    # candidates only where the guidance runs and the given stems are the bass and drums alone
    if candidates is not None and not 1 <= candidates <= MAX_SELECT:
        raise ValueError(f"candidates must be in [1, {MAX_SELECT}], got {candidates}")
    select = (bundle.sampler_defaults.bass_drums_select if candidates is None else int(candidates)) \
        if reconstruction is not None and bass_and_drums_only(given) else 1
    t.candidates = select
    args = SamplerArgs(steps, sampler, schedule, resample, churn, guidance, reconstruction, error_stems, error_tmin,
                       select)
    rng = TakeNoise([seed + b for b in range(takes)])
    faders = [Crossfader(plan.overlap * D, plan.hop * D) for _ in range(takes)]
    judged = [r for r in requested if r not in kept]
    prev, emitted, phase = None, 0, None
    pulled = [False] * takes  # takes sampled with the pulling sampler from now on (PULL_STICKY)
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    balance = bundle.level_balance if level == "balance" and given and not kept else None
    t.level = "model" if balance is None else "balance"
    running: list[dict[str, RunningBalance]] = [{} for _ in range(takes)]  # balance per take and stem
    for i, s in enumerate(plan.starts):
        last = i == len(plan.starts) - 1
        win = _Window(bundle, audio[:, :, s * D:(s + W) * D], list(given), requested, prev, phase, plan, i,
                      args, {stem: m[s:s + W] for stem, m in kept.items()}, t, cache)
        rows = list(range(takes))
        z = _first_attempt(win, rng, pulled, hook)
        out, nxt = win.decode(z, rows)
        span = (0 if i == 0 else plan.overlap * D, min(W * D, n_samples - s * D))  # new, in-region samples
        if silent_retries > 0 and judged and span[1] > span[0]:
            judge_silence = span[1] - span[0] >= MIN_CHECK_SECONDS * bundle.sample_rate \
                and _given_sounds(win.audio, span)
            given_db = _loudest_given_db(win.audio, span) if judge_silence else None
            z, out, nxt, quiet = _reroll_failed(win, z, out, nxt, judged, span, judge_silence, silent_retries,
                                                rng, hook, given_db)
            for b in quiet if PULL_STICKY else ():
                pulled[b] = True
        prev, phase = z, nxt
        if balance is not None and span[1] > span[0]:
            _balance(balance, bundle, win.audio, list(given), requested, out, running, span, t)
        n = 0
        for b in range(takes):
            stems = {r: faders[b].join(r, out[b][r], last) for r in requested}
            n = max(0, min(len(next(iter(stems.values()))), n_samples - emitted))
            yield Piece(i, emitted, {r: a[:n] for r, a in stems.items()}, last, take=b)
        emitted += n


def _balance(balance: LevelBalance, bundle: Bundle, audio: np.ndarray, given: list[str], requested: Sequence[str],
             out: list[dict[str, np.ndarray]], running: list[dict[str, RunningBalance]], span: tuple[int, int],
             t: Timings) -> None:
    """Scale this window's generated stems (`out`, per take) in place by their balance gains
    (`server.levels.RunningBalance`, one per take and stem in `running`, updated with this
    window's new samples `span`), and log each gain in `t.level_gain` (0 where none applies yet)."""
    given_db = given_level_db([a[0, span[0]:span[1]] for a in audio])
    for b, take in enumerate(out):
        for r in requested:
            if r not in running[b]:
                offset = balance.offset_db(r, given, bundle.stems)
                if offset is None:
                    continue
                running[b][r] = RunningBalance(offset)
            g = running[b][r].update(take[r][span[0]:span[1]], given_db)
            take[r] = apply_gain(take[r], g)
            t.level_gain.setdefault(b, {}).setdefault(r, []).append(round(g or 0.0, 2))


@dataclass
class _Window:
    """One window of a region: sampling and decoding it for all takes, or for some of them
    (`rows`) when they are sampled again. `audio` `[G,1,W*D]` holds the given stems,
    `prev` `[takes,K*C,W]` the previous window's latents, `phase` `[takes*R,F]` the decoder's
    phase offsets where this window starts (R requested stems), `kept` a redo's frames."""

    bundle: Bundle
    audio: np.ndarray
    given: list[str]
    requested: Sequence[str]
    prev: np.ndarray | None
    phase: np.ndarray | None
    plan: WindowPlan
    index: int
    args: SamplerArgs
    kept: dict[str, np.ndarray]
    t: Timings
    cache: EncodeCache | None

    def sample(self, noise: TakeNoise, rows: list[int], hook: StepHook | None,
               S_tmin: float | None = None, pull: bool = False) -> np.ndarray:
        """Joint latents `[len(rows),K*C,W]` of the takes `rows`, from `noise` (their streams).
        `pull`: with the pulling sampler (`pulling_sampler`) instead of the request's; progress
        is still reported in the request's steps."""
        a = self.args
        steps, resample = a.steps, a.resample
        if pull:
            base_steps, (steps, resample) = self.steps(), self.pulling_sampler()
            if hook is not None:
                inner = hook

                def hook(window: int, step: int, total: int) -> None:  # the request's steps, not these
                    inner(window, round(step * base_steps / total), base_steps)
        return _sample_window(self.bundle, self.audio, self.given, self.requested,
                              None if self.prev is None else self.prev[rows], self.plan, noise, steps,
                              a.sampler, a.schedule, resample, self.index, hook, self.t,
                              self.cache, a.churn, len(rows), self.kept, S_tmin, a.guidance, a.reconstruction,
                              a.reconstruction_stems, a.reconstruction_tmin, a.select)

    def steps(self) -> int:
        """The request's sampler steps (the bundle's by default)."""
        return int(self.args.steps or self.bundle.sampler_defaults.steps)

    def pulling_sampler(self) -> tuple[int, int]:
        """(steps, RePaint passes) for a window whose generated part came out silent or buried:
        the manifest's `pull_resample` times the request's passes (at most 8) over `pull_steps` of its steps,
        about the same denoiser calls (40 x 3 -> 24 x 6 on the bundled model: 69 calls, 70)."""
        d = self.bundle.sampler_defaults
        resample = int(min(8, max(1, self.args.resample or d.resample) * d.pull_resample))
        return max(2, round(self.steps() * d.pull_steps)), resample

    def decode(self, z: np.ndarray, rows: list[int]) -> tuple[list[dict[str, np.ndarray]], np.ndarray | None]:
        """`_decode_stems` of `z` `[len(rows),K*C,W]`, each take starting at its own phase."""
        t0 = time.perf_counter()
        start = None
        if self.phase is not None:
            f = self.phase.shape[-1]
            start = self.phase.reshape(-1, len(self.requested), f)[rows].reshape(-1, f)  # [rows*R,F]
        res = _decode_stems(self.bundle, z, self.requested, start, self.plan.hop)
        self.t.decode += time.perf_counter() - t0
        return res


def _first_attempt(win: _Window, rng: TakeNoise, pulled: list[bool], hook: StepHook | None) -> np.ndarray:
    """A window's first sampling of every take `[takes,K*C,W]`: with the request's sampler, and
    the takes marked in `pulled` with the pulling one (a second call, its progress held at the
    window's end; each take draws from its own noise either way)."""
    rows = list(range(len(pulled)))
    if not any(pulled):
        return win.sample(rng, rows, hook)
    plain, pull = [b for b in rows if not pulled[b]], [b for b in rows if pulled[b]]
    groups = [(g, p) for g, p in ((plain, False), (pull, True)) if g]
    hold = None if hook is None else (lambda window, step, total: hook(window, total, total))
    z = None
    for n, (group, pull) in enumerate(groups):
        part = win.sample(rng.subset(group), group, hook if n == 0 else hold, None, pull)
        if z is None:
            z = np.zeros((len(rows),) + part.shape[1:], part.dtype)
        z[group] = part
    return z


def _given_sounds(audio: np.ndarray, span: tuple[int, int]) -> bool:
    """True for total generation, or when some given stem of the window `[G,1,W*D]` sounds
    over `span` (where the given part rests, a resting generated part may be right)."""
    return len(audio) == 0 or not all(is_empty(a[0, span[0]:span[1]], min_fraction=SILENT_SHARE) for a in audio)


def _loudest_given_db(audio: np.ndarray, span: tuple[int, int]) -> float | None:
    """The loudest given stem's RMS level (dBFS) over `span` of a window `[G,1,W*D]`; None when
    nothing is given."""
    return max((level_db(a[0, span[0]:span[1]]) for a in audio), default=None)


def _buried(stem: str, audio: np.ndarray, given_db: float | None) -> bool:
    """Whether `audio` (a requested stem over the judged span) sits further under the loudest
    given stem (`given_db`) than `BURIED_DB` allows; never when nothing given sounds (None)."""
    return given_db is not None and level_db(audio) < given_db + BURIED_DB.get(stem, BURIED_DEFAULT_DB)


def _attempt_key(stems: dict[str, np.ndarray], judged: Sequence[str], span: tuple[int, int],
                 judge_silence: bool, given_db: float | None = None) -> tuple[bool, bool, bool, float]:
    """How an attempt at a window failed, smaller is better: (blown, silent, buried, -audible
    share of the quietest `judged` stem over samples [span)). Silence counts only where
    `judge_silence` (a given stem sounds, or nothing is given); burial only against a given
    stem's level `given_db` (`_buried`). Each stem is framed once, as the evaluation's density
    measures frame it (`msldm.eval.density.audible_mask`: RMS above AUDIBLE_DBFS)."""
    parts = {r: stems[r][span[0]:span[1]] for r in judged}
    levels = [frame_rms_db(a, FRAME, HOP) for a in parts.values()]
    q = min(float(np.mean(db > AUDIBLE_DBFS)) for db in levels)
    blown = any(bool(np.any(db >= BLOWN_DBFS)) for db in levels)
    buried = any(_buried(r, a, given_db) for r, a in parts.items())
    return blown, judge_silence and q < SILENT_SHARE, buried, -q


def _reroll_failed(win: _Window, z: np.ndarray, out: list[dict[str, np.ndarray]], nxt: np.ndarray | None,
                   judged: Sequence[str], span: tuple[int, int], judge_silence: bool, retries: int,
                   rng: TakeNoise, hook: StepHook | None, given_db: float | None = None
                   ) -> tuple[np.ndarray, list[dict[str, np.ndarray]], np.ndarray | None, list[int]]:
    """Sample again, from their own noise, the takes of this window whose judged stems failed
    (a blown stem; a silent one where `judge_silence`; one buried under the loudest given stem's
    level `given_db`, `_buried`); keep per take the best attempt
    (`_attempt_key`). Progress stays at the window's end while it runs (the hook still lets a
    cancel through). Returns `z` `[takes,K*C,W]`, `out` (per take, stem -> `[W*D]`) and `nxt`
    `[takes*R,F]` (or None) with the kept attempts in place, and the takes whose first attempt
    came out silent or buried (not blown; none where nothing is given, total generation, which
    samples again as the request asks); counts each extra sampling in `win.t.rerolls`, each
    window left blown at every attempt (and so `_tamed`) in `win.t.tamed`."""
    key = [_attempt_key(o, judged, span, judge_silence, given_db) for o in out]
    quiet = [b for b, k in enumerate(key) if not k[0] and (k[1] or k[2])] if win.given else []
    R = len(win.requested)
    hold = None if hook is None else (lambda window, step, total: hook(window, total, total))
    z, nxt = z.copy(), None if nxt is None else nxt.copy()
    for _ in range(retries):
        bad = [b for b, k in enumerate(key) if k[0] or k[1] or k[2]]
        if not bad:
            break
        for b in bad:
            win.t.rerolls[b] = win.t.rerolls.get(b, 0) + 1
        # a blown attempt is sampled again as the request asks; a silent or buried one with the
        # pulling sampler (more RePaint passes, which pull the generated part towards the given
        # one and up in level)
        as_asked = [b for b in bad if key[b][0]] if win.given else bad  # nothing given: nothing to pull towards
        for group, pull in ((as_asked, False), ([b for b in bad if b not in as_asked], True)):
            if not group:
                continue
            z2 = win.sample(rng.subset(group), group, hold, REROLL_S_TMIN, pull)
            out2, nxt2 = win.decode(z2, group)
            for j, b in enumerate(group):
                k = _attempt_key(out2[j], judged, span, judge_silence, given_db)
                if k < key[b]:
                    key[b], out[b], z[b] = k, out2[j], z2[j]
                    if nxt is not None:
                        nxt[b * R:(b + 1) * R] = nxt2[j * R:(j + 1) * R]
    for b, k in enumerate(key):
        if k[0]:  # every attempt blown: never stream the burst as made
            out[b] = {r: _tamed(a, span) if r in judged else a for r, a in out[b].items()}
            win.t.tamed[b] = win.t.tamed.get(b, 0) + 1
    return z, out, nxt, quiet


def _tamed(audio: np.ndarray, span: tuple[int, int]) -> np.ndarray:
    """`audio` `[W*D]` scaled as a whole so that its loudest frame over `span` sits
    `TAME_MARGIN_DB` under `BLOWN_DBFS` (the last resort for a window whose every attempt came
    out blown; the crossfades with the windows around it smooth the change of level). A stem
    that is not blown comes back as it is."""
    loudest = float(np.max(frame_rms_db(audio[span[0]:span[1]], FRAME, HOP)))
    if loudest < BLOWN_DBFS:
        return audio
    return (audio * 10.0 ** ((BLOWN_DBFS - TAME_MARGIN_DB - loudest) / 20.0)).astype(audio.dtype)


def _sample_window(bundle: Bundle, audio: np.ndarray, given: list[str], requested: Sequence[str],
                   prev: np.ndarray | None, plan: WindowPlan, rng: np.random.Generator,
                   steps: int | None, sampler: str | None, schedule: str | None, resample: int | None,
                   window: int,
                   hook: StepHook | None, t: Timings, cache: EncodeCache | None,
                   churn: float | None = None, takes: int = 1,
                   kept: dict[str, np.ndarray] | None = None, S_tmin: float | None = None,
                   guidance: float | None = None, reconstruction: float | None = None,
                   reconstruction_stems: Sequence[str] | None = None,
                   reconstruction_tmin: float | None = None, select: int = 1) -> np.ndarray:
    """One window's joint latents `[takes,K*C,W]`: given stems imposed over all frames (a
    stem in `kept` only over its True frames), and the first O frames of the requested stems
    imposed from `prev`'s last O frames (each take continuing its own previous window).
    `reconstruction_stems`: given stems whose reconstruction error guides (None: the whole
    imposed part); `reconstruction_tmin`: its lowest noise level (None: the manifest's);
    `select` > 1 with that guidance: `best_of` so many candidates per take."""
    K, C, W, O = bundle.K, bundle.C, plan.window, plan.overlap
    z_given = np.zeros((takes, K * C, W), np.float32)
    mask = np.repeat(bundle.stem_mask(given, W), takes, axis=0)
    t0 = time.perf_counter()
    if given:
        z = cache.encode(bundle, audio) if cache is not None else bundle.encode(audio)  # [G,C,W], once
        for g, stem in enumerate(given):
            k = bundle.stems.index(stem)
            z_given[:, k * C:(k + 1) * C] = z[g, :, :W]
    t.encode += time.perf_counter() - t0
    for stem, frames in (kept or {}).items():
        k = bundle.stems.index(stem)
        mask[:, k * C:(k + 1) * C] *= frames[None, None, :W].astype(np.float32)
    if prev is not None and O > 0:
        for stem in requested:
            k = bundle.stems.index(stem)
            z_given[:, k * C:(k + 1) * C, :O] = prev[:, k * C:(k + 1) * C, W - O:]
            mask[:, k * C:(k + 1) * C, :O] = 1.0
    callback = None if hook is None else (lambda step, total, sigma, x, denoised: hook(window, step, total))
    t0 = time.perf_counter()
    kw = dict(steps=steps, sampler=sampler, schedule=schedule,
              resample=resample, guidance=guidance if given else 1.0,  # nothing given: nothing to follow
              reconstruction=reconstruction if given else None,
              reconstruction_mask=None if reconstruction_stems is None or not given
              else bundle.stem_mask(reconstruction_stems, W),
              reconstruction_tmin=reconstruction_tmin, S_churn=churn, S_tmin=S_tmin, total=not given,
              given=z_given if mask.any() else None, mask=mask if mask.any() else None, callback=callback)
    if select > 1 and given and reconstruction and isinstance(rng, TakeNoise):
        out = best_of(bundle, (takes, K * C, W), rng, select, kw)
    else:
        out = bundle.generate((takes, K * C, W), seed=0, rng=rng, **kw)
    t.sample += time.perf_counter() - t0
    return out


def best_of(bundle: Bundle, shape: tuple[int, int, int], rng: TakeNoise, k: int, kw: dict) -> np.ndarray:
    """Partial generation with reconstruction guidance (`kw`: `Bundle.generate`'s keywords, with
    `given`, `mask` and `reconstruction_tmin`), `k` candidates per take down to the guidance's
    lowest noise level: every take draws `k` seeds from its own noise and samples that many
    candidates there as one batch; the candidate whose last guided estimate of the given stems
    with notes (`reconstruction_mask`) misses them least (squared error) goes on, from the take's
    own noise, to the end. Returns `[takes,K*C,W]` like `Bundle.generate`.

    Why: given the bass and drums, the bundled model settles the parts' chords at the high noise
    levels, where it reads a given bass weakly, and its own estimate of that bass at the band's
    end tells something of which chords it settled on: the take whose estimate missed least has
    guitar and piano on the chords a little more often than the average take
    (`scripts/miss_rank_check.py`), and two candidates a window raised the harmonic fit given
    bass and drums from 0.60 / 0.65 to 0.64 / 0.66 on three test draws and from 0.52 / 0.52 to
    0.60 / 0.58 on two validation draws (docs/eval/model-history.md, "Twentieth session")."""
    sigmas = bundle.sigmas(kw["steps"], kw["schedule"])
    tmin = kw["reconstruction_tmin"]
    tmin = bundle.sampler_defaults.reconstruction_tmin if tmin is None else tmin
    j = sum(1 for s in sigmas[:-1] if s >= tmin)  # the steps that start inside the guidance's band
    n, takes = len(sigmas) - 1, shape[0]
    if not 0 < j < n:
        return bundle.generate(shape, seed=0, rng=rng, **kw)
    cand = TakeNoise([int(g.integers(2 ** 63)) for g in rng.generators for _ in range(k)])
    given, mask = np.repeat(kw["given"], k, axis=0), np.repeat(kw["mask"], k, axis=0)  # take-major rows
    last: dict[str, np.ndarray] = {}
    outer = kw["callback"]

    def grab(step: int, total: int, sigma: float, x: np.ndarray, denoised: np.ndarray) -> None:
        last["denoised"] = denoised
        if outer is not None:
            outer(step, total, sigma, x, denoised)

    x = bundle.generate((takes * k,) + tuple(shape[1:]), seed=0, rng=cand, span=(0, j),
                        **{**kw, "given": given, "mask": mask, "callback": grab})
    where = mask * (1.0 if kw["reconstruction_mask"] is None else kw["reconstruction_mask"])
    miss = np.square((given - last["denoised"]) * where).reshape(takes, k, -1).sum(-1)
    chosen = x.reshape((takes, k) + tuple(shape[1:]))[np.arange(takes), np.argmin(miss, axis=1)]
    return bundle.generate(shape, seed=0, rng=rng, span=(j, n), state=chosen, **kw)


def _decode_stems(bundle: Bundle, z: np.ndarray, requested: Sequence[str], phase: np.ndarray | None,
                  hop: int) -> tuple[list[dict[str, np.ndarray]], np.ndarray | None]:
    """Decode the requested stems' blocks of joint latents `[B,K*C,W]` (one row per take) in
    one batch -> (per take, stem -> `[W*D]`; the phase offsets `[B*R,F]` at frame `hop`,
    where the next window starts, or None).

    A phase-carrying decoder starts each window at the offsets the previous window's decode
    had at this window's first frame (`phase`), so the overlapping ends crossfade in phase
    rather than partly cancelling."""
    C, B, R = bundle.C, z.shape[0], len(requested)
    blocks = np.stack([z[b, bundle.stems.index(r) * C:(bundle.stems.index(r) + 1) * C]
                       for b in range(B) for r in requested])  # [B*R,C,W], take-major
    nxt = None
    if not bundle.phase_bins:
        audio = bundle.decode(blocks)  # [B*R,1,W*D]
    else:
        start = np.zeros((B * R, bundle.phase_bins), np.float32) if phase is None else phase
        audio, offsets = bundle.decode_carry(blocks, start)  # [B*R,1,W*D], [B*R,F,W]
        nxt = offsets[:, :, hop] if hop < offsets.shape[-1] else None
    return [{r: audio[b * R + j, 0] for j, r in enumerate(requested)} for b in range(B)], nxt
