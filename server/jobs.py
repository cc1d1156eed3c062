"""The job queue and the one worker thread that owns the inference sessions.

Front ends (ZeroMQ, OSC) validate requests, wrap them in a `Job` with a `Sink` (where the
job's messages go) and `submit` them. The worker runs jobs one at a time: convert the
given stems to the model rate, `windowing.generate_region` (its `resample` is RePaint's
passes per step), convert each decoded piece to the output sample rate (streaming soxr)
and hand it to the sink as soon as it exists.

Cancel: `cancel()` sets the job's event; the sampler callback checks it after every step
(raising `sampling.Cancelled`), so a running job stops within one step.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Hashable, Protocol

import numpy as np

from msldm.sampling import Cancelled
from plugin_bridge.protocol import ErrorCode, ProtocolError
from server.audio import StreamRateConverter, convert_rate, fit_length
from server.fit import Scorer, rank, take_score
from server.requests import REDO_FADE_SECONDS, JobRequest, Limits, beat_seconds
from server.runtime import Bundle
from server.windowing import EncodeCache, Timings, WindowPlan, default_overlap, generate_region

log = logging.getLogger(__name__)


class Sink(Protocol):
    """Where a job's output goes. Called from the worker thread only."""

    def progress(self, job: "Job", step: int, total: int, window: int, windows: int, eta: float) -> None: ...
    def chunk(self, job: "Job", stem: str, offset: int, audio: np.ndarray, window: int, final: bool,
              take: int = 0) -> None: ...
    def done(self, job: "Job", info: dict[str, Any]) -> None: ...
    def error(self, job: "Job", code: ErrorCode, message: str) -> None: ...


@dataclass(eq=False)
class Job:
    """One generation job of one client (`client` is any hashable key of the front end)."""

    client: Hashable
    request: JobRequest
    sink: Sink
    submitted: float = field(default_factory=time.perf_counter)
    state: str = "queued"
    step: int = 0
    total: int = 0
    cancel_code: ErrorCode | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event)

    @property
    def job_id(self) -> str:
        return self.request.job_id

    def cancel(self, code: ErrorCode = ErrorCode.CANCELLED) -> None:
        self.cancel_code = self.cancel_code or code
        self.cancel_event.set()

    def check(self) -> None:
        if self.cancel_event.is_set():
            raise Cancelled()


class Worker:
    """The job queue plus the worker thread. Thread-safe `submit`, `cancel`, `snapshot`."""

    def __init__(self, bundle: Bundle, limits: Limits, encode_cache_bytes: int = 64 << 20):
        self.bundle, self.limits = bundle, limits
        self.cache = EncodeCache(encode_cache_bytes)  # given stems of earlier jobs (re-rolls)
        self.queue: deque[Job] = deque()
        self.running: Job | None = None
        self.cond = threading.Condition()
        self.stopping = False
        self.completed = 0
        self.thread = threading.Thread(target=self._loop, name="msldm-worker", daemon=True)

    # ------------------------------------------------------------------ control (any thread)

    def start(self) -> None:
        self.thread.start()

    def submit(self, job: Job) -> int:
        """Queue `job`; returns the number of jobs ahead of it. Raises ProtocolError
        (SHUTTING_DOWN, DUPLICATE_JOB, QUEUE_FULL)."""
        with self.cond:
            if self.stopping:
                raise ProtocolError(ErrorCode.SHUTTING_DOWN, "the daemon is shutting down", job.job_id)
            if self._find(job.client, job.job_id) is not None:
                raise ProtocolError(ErrorCode.DUPLICATE_JOB, f"job {job.job_id!r} is already live", job.job_id)
            self._check_room(job)
            self.queue.append(job)
            self.cond.notify_all()
            return len(self.queue) - 1 + (self.running is not None)

    def _check_room(self, job: Job) -> None:
        """Raise QUEUE_FULL when the queue (all clients) or this client's share of it is full."""
        if len(self.queue) >= self.limits.max_queue:
            raise ProtocolError(ErrorCode.QUEUE_FULL, f"{len(self.queue)} jobs are waiting, the most the "
                                "daemon queues (max_queue, all clients); retry later", job.job_id)
        mine = sum(1 for j in self.queue if j.client == job.client)
        if mine >= self.limits.per_client:
            raise ProtocolError(ErrorCode.QUEUE_FULL, f"this client already has {mine} jobs waiting, the "
                                "most per client (max_queue_per_client); retry when one has started",
                                job.job_id)

    def cancel(self, client: Hashable, job_id: str, code: ErrorCode = ErrorCode.CANCELLED) -> bool:
        """Cancel one live job of `client`; False if it has none by that id."""
        with self.cond:
            job = self._find(client, job_id)
            if job is None:
                return False
            self._cancel_locked(job, code)
            return True

    def cancel_client(self, client: Hashable) -> int:
        """Cancel every live job of a client that went away; returns how many."""
        with self.cond:
            jobs = [j for j in self._live() if j.client == client]
            for j in jobs:
                self._cancel_locked(j, ErrorCode.CANCELLED)
            return len(jobs)

    def snapshot(self, client: Hashable | None = None) -> list[dict[str, Any]]:
        """[{job_id, state, position, step, total}] of `client`'s live jobs (all if None)."""
        with self.cond:
            out = []
            for pos, j in enumerate(self._live()):
                if client is None or j.client == client:
                    out.append({"job_id": j.job_id, "state": j.state, "position": pos,
                                "step": j.step, "total": j.total})
            return out

    def live_clients(self) -> dict[Hashable, list[dict[str, str]]]:
        """client -> [{job_id, state}] for every client with a live job."""
        with self.cond:
            out: dict[Hashable, list[dict[str, str]]] = {}
            for j in self._live():
                out.setdefault(j.client, []).append({"job_id": j.job_id, "state": j.state})
            return out

    def counts(self) -> tuple[int, int]:
        with self.cond:
            return len(self.queue), int(self.running is not None)

    def stop(self, timeout: float = 10.0) -> None:
        """Refuse new jobs, cancel queued and running ones (SHUTTING_DOWN), join the thread."""
        with self.cond:
            self.stopping = True
            for j in list(self._live()):
                self._cancel_locked(j, ErrorCode.SHUTTING_DOWN)
            self.cond.notify_all()
        if self.thread.is_alive():
            self.thread.join(timeout)

    # ------------------------------------------------------------------ internals

    def _live(self) -> list[Job]:
        return ([self.running] if self.running else []) + list(self.queue)

    def _find(self, client: Hashable, job_id: str) -> Job | None:
        return next((j for j in self._live() if j.client == client and j.job_id == job_id), None)

    def _cancel_locked(self, job: Job, code: ErrorCode) -> None:
        job.cancel(code)
        if job in self.queue:  # never started: finish it here
            self.queue.remove(job)
            _safe(job.sink.error, job, code, _cancel_message(code))

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.queue and not self.stopping:
                    self.cond.wait()
                if not self.queue:
                    return
                job = self.queue.popleft()
                job.state, self.running = "running", job
            terminal = run_job(self.bundle, job, self.cache)
            with self.cond:  # no longer live before its terminal message goes out, so a
                self.running = None  # cancel that arrives after it gets `unknown_job`
                self.completed += 1
            _end(job, terminal)


def _cancel_message(code: ErrorCode) -> str:
    return "cancelled by the daemon shutting down" if code is ErrorCode.SHUTTING_DOWN else "cancelled by the client"


def _end(job: Job, terminal: tuple[Any, ...]) -> None:
    """Make the job's terminal sink call; if that fails (a result that cannot be sent),
    the job still ends: with `error` code `internal`, the failure logged with its traceback."""
    fn, *args = terminal
    try:
        fn(*args)
        return
    except Exception as e:  # noqa: BLE001 (a bug; the client must still hear the job end)
        log.exception("job %s: its terminal message could not be sent", job.job_id)
        if fn == job.sink.error and args[1] is ErrorCode.INTERNAL:
            return  # the fallback below is what just failed
        failure = f"{type(e).__name__}: {e}"
    _safe(job.sink.error, job, ErrorCode.INTERNAL, f"internal error: the job's result could not be sent "
          f"({failure})")


def _safe(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except Exception:  # a broken sink must not take the worker down
        log.exception("sink call failed")


def run_job(bundle: Bundle, job: Job, cache: EncodeCache | None = None) -> tuple[Any, ...]:
    """Run one job, streaming its progress and chunks; never raises. Returns its terminal
    sink call `(fn, *args)` (done or error), for the caller to make once the job is no
    longer live. `cache`: encoded given windows to reuse (the worker's)."""
    try:
        return (job.sink.done, job, _generate(bundle, job, cache))
    except Cancelled:
        code = job.cancel_code or ErrorCode.CANCELLED
        return (job.sink.error, job, code, _cancel_message(code))
    except ProtocolError as e:
        return (job.sink.error, job, e.code, e.message)
    except Exception as e:
        log.exception("job %s failed", job.job_id)
        return (job.sink.error, job, ErrorCode.INTERNAL, f"internal error: {type(e).__name__}: {e}")


def _generate(bundle: Bundle, job: Job, cache: EncodeCache | None) -> dict[str, Any]:
    """Generate and stream one job; returns the `done` info (timings in seconds).

    Every take is sampled in the same batch; a take's chunks carry its index. A redo samples
    only the windows around its range (`_redo_span`) and streams the stem it composes."""
    req, t_start = job.request, time.perf_counter()
    job.check()
    given = req.model_rate_given(bundle.sample_rate)
    n = req.model_frames(bundle.sample_rate)
    span, kept = (0, n), None
    if req.redo is not None:
        span, kept = _redo_span(bundle, req, n)
        given = {s: a[span[0]:span[1]] for s, a in given.items()}
    t_prep = time.perf_counter() - t_start
    windows = len(WindowPlan(max(1, -(-(span[1] - span[0]) // bundle.D)), bundle.window_frames,
                             default_overlap(bundle.window_frames)).starts)
    job.total = windows * req.steps
    hook = _progress_hook(job, windows, time.perf_counter())
    t, t_convert = Timings(), 0.0
    # passes: the request's, else the windows' choice for its given stems (echoed from `t.passes`)
    pieces = generate_region(bundle, given, req.generate, span[1] - span[0], seed=req.seed, steps=req.steps,
                             sampler=req.sampler, schedule=req.schedule,
                             resample=req.resample if req.resample_asked else None,
                             guidance=req.guidance if req.guidance_asked else None, hook=hook,
                             timings=t, cache=cache, takes=req.takes, kept_frames=kept,
                             silent_retries=req.silent_retries, candidates=req.candidates, level=req.level)
    heard: dict[tuple[int, str], list[np.ndarray]] = {}  # each take's model-rate audio, to rank takes
    if req.redo is not None:
        t_convert, parts = _stream_redo(bundle, job, pieces, span[0])
        heard = {(b, req.redo.stem): p for b, p in parts.items()}
    else:
        converters = {(b, s): StreamRateConverter(bundle.sample_rate, req.output_sample_rate, req.output_frames)
                      for b in range(req.takes) for s in req.generate}
        offsets = {key: 0 for key in converters}
        if req.takes > 1:
            heard = {key: [] for key in converters}
        for piece in pieces:
            job.check()
            for stem, a in piece.stems.items():
                key = (piece.take, stem)
                if heard:
                    heard[key].append(a)
                t0 = time.perf_counter()
                y = converters[key].push(a, last=piece.last)
                t_convert += time.perf_counter() - t0
                if len(y) or piece.last:
                    job.sink.chunk(job, stem, offsets[key], y, piece.window, piece.last, piece.take)
                    offsets[key] += len(y)
    fits, t_rank = None, 0.0
    if req.takes > 1:
        t0 = time.perf_counter()
        try:  # a redo's takes are scored over its span against the other given stems
            context = {s: a for s, a in given.items() if req.redo is None or s != req.redo.stem}
            fits = _rank_takes(bundle, context, heard, req, span[0] / bundle.sample_rate)
        except Exception:  # an estimate must never cost the takes already streamed: done goes out unranked
            log.exception("job %s: ranking the takes failed; done is sent without ranks", job.job_id)
        t_rank = time.perf_counter() - t0
    timings = {"queue": t_start - job.submitted, "prepare": t_prep, "encode": t.encode,
               "sample": t.sample, "decode": t.decode, "convert_rate": t_convert, "rank": t_rank,
               "resample": t_convert,  # convert_rate's old name: version-1 clients read it
               "total": time.perf_counter() - job.submitted}
    info = {"stems": list(req.generate), "frames": req.output_frames, "sample_rate": req.output_sample_rate,
            "seed": req.seed, "takes": [{"take": b, "seed": s, "silent_rerolls": t.rerolls.get(b, 0),
                                         "tamed_windows": t.tamed.get(b, 0), "level_gain_db": t.level_gain.get(b, {})}
                                        for b, s in enumerate(req.seeds)],
            "level": t.level,
            "steps": req.steps, "sampler": req.sampler, "schedule": req.schedule,
            "resample": t.passes, "candidates": t.candidates, "windows": windows,
            "guidance": bundle.sampler_defaults.guidance if t.guidance is None else t.guidance,
            "silent_retries": req.silent_retries, "silent_rerolls": t.rerolls_total,
            "tamed_windows": sum(t.tamed.values()),
            "timings": {k: round(v, 6) for k, v in timings.items()}}
    if fits is not None:
        for entry, (score, place, stems) in zip(info["takes"], fits):
            entry.update(fit=round(score, 4), rank=place, stem_fit=stems)
    if req.redo is not None:
        info["redo"] = req.redo.to_dict()
    return info


def _rank_takes(bundle: Bundle, given: dict[str, np.ndarray], heard: dict[tuple[int, str], list[np.ndarray]],
                req: JobRequest, start_seconds: float = 0.0) -> list[tuple[float, int, dict[str, dict]]] | None:
    """Each take's estimated fit to the given stems (`server.fit`, at model rate, over the
    region or a redo's span), its rank (1: the likeliest keeper) and its stems' figures; None
    when no stem of any take could be judged (nothing given and one stem made, or silence)."""
    scorer = Scorer(given, bundle.sample_rate, beat_seconds(req.region), start_seconds)
    per_take = [scorer({s: np.concatenate(heard[(b, s)]) for s in req.generate}) for b in range(req.takes)]
    if not any(f.rhythm is not None or f.harmony is not None for fits in per_take for f in fits.values()):
        return None  # nothing to judge against (one stem made from nothing): the takes stay unranked
    scores = [take_score(f) for f in per_take]
    ranks = rank(scores)
    return [(sc, r, {s: f.as_dict() for s, f in fits.items()}) for sc, r, fits in zip(scores, ranks, per_take)]


def _redo_span(bundle: Bundle, req: JobRequest, n: int) -> tuple[tuple[int, int], dict[str, np.ndarray]]:
    """The model-rate samples [a, b) to sample for a redo, and its stem's kept latent frames
    over them. The span is the range's frames with context around them: one window centred
    on the range when it fits in one, else the range plus a quarter window each side."""
    D, W, rate = bundle.D, bundle.window_frames, bundle.sample_rate
    F = max(1, -(-n // D))
    r0 = min(F - 1, int(req.redo.start * rate) // D)
    r1 = max(r0 + 1, min(F, -(-int(np.ceil(req.redo.end * rate)) // D)))
    if r1 - r0 < W:
        fa = max(0, r0 - (W - (r1 - r0)) // 2)
        fb = min(F, fa + W)
        fa = max(0, fb - W)
    else:
        fa, fb = max(0, r0 - W // 4), min(F, r1 + W // 4)
    kept = np.ones(fb - fa, bool)
    kept[r0 - fa:r1 - fa] = False
    return (fa * D, min(n, fb * D)), {req.redo.stem: kept}


def _stream_redo(bundle: Bundle, job: Job, pieces: Any, span_start: int) -> tuple[float, dict[int, list[np.ndarray]]]:
    """Compose each take's redone stem: the given samples outside the range, exactly as sent;
    the new audio inside, crossfaded in and out over `REDO_FADE_SECONDS` at the range's ends.
    Streams it in chunks; returns the seconds spent converting rates and each take's sampled
    audio over the span (model rate, in pieces)."""
    req = job.request
    stem, rate = req.redo.stem, req.output_sample_rate
    kept = fit_length(np.asarray(req.given[stem], np.float32), req.output_frames)
    a, b = round(req.redo.start * rate), min(req.output_frames, round(req.redo.end * rate))
    parts: dict[int, list[np.ndarray]] = {k: [] for k in range(req.takes)}
    last_window = 0
    for piece in pieces:
        job.check()
        parts[piece.take].append(piece.stems[stem])
        last_window = piece.window
    t0 = time.perf_counter()
    offset = round(span_start * rate / bundle.sample_rate)  # the span's first sample, output rate
    L = min(round(REDO_FADE_SECONDS * rate), (b - a) // 2)
    w = np.ones(b - a, np.float32)
    if L:
        ramp = (np.arange(L, dtype=np.float32) + 0.5) / L
        w[:L], w[b - a - L:] = ramp, ramp[::-1]
    outs = []
    for take in range(req.takes):
        new = convert_rate(np.concatenate(parts[take]), bundle.sample_rate, rate)  # from output sample `offset`
        new = fit_length(np.pad(new, (max(0, offset - a), 0))[max(0, a - offset):], b - a)  # samples [a, b)
        out = kept.copy()
        out[a:b] = kept[a:b] * (1.0 - w) + new * w
        outs.append(out)
    t_convert = time.perf_counter() - t0
    step = max(1, rate * 4)  # chunks of 4 s
    for take, out in enumerate(outs):
        for o in range(0, len(out), step):
            job.check()
            job.sink.chunk(job, stem, o, out[o:o + step], last_window, o + step >= len(out), take)
    return t_convert, parts


def _progress_hook(job: Job, windows: int, t0: float):
    def hook(window: int, step: int, steps: int) -> None:
        job.step = window * steps + step
        elapsed = time.perf_counter() - t0
        eta = elapsed / job.step * (job.total - job.step) if job.step else 0.0
        job.sink.progress(job, job.step, job.total, window, windows, eta)
        job.check()
    return hook
