"""`msldm bench --daemon`: the daemon's end-to-end latency against the same work in-process.

For each region length: two given stems (stereo, 44.1 kHz) -> two generated stems at
48 kHz. "In-process" runs the very job code the worker runs (`jobs.run_job`) with an
in-memory sink, in this process. "Daemon" is `msldm serve` in a process of its own, as a
DAW's bridge would find it, sent the same request over ZeroMQ on loopback TCP and timed
here at the client. Both load the same bundle with the same providers and threads, and
both encode the given stems every time (the daemon's encode cache is off). Each repeat
is one pair, in-process and daemon back to back, alternating which goes first. Reported
per length: medians of end-to-end latency and time to first audio, the median of the
per-pair overheads, and a re-roll: the same region with a new seed, its given stems'
encoding taken from an encode cache (in-process).

`bench_takes` (`msldm bench --daemon --daemon-takes N`): N takes of a region in one request
(one batch) against N separate requests sent together, through the same daemon.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import zmq

from plugin_bridge import protocol as P
from server.daemon import model_info
from server.jobs import Job, run_job
from server.requests import Limits, ModelInfo, build_request
from server.runtime import Bundle
from server.windowing import EncodeCache

IN_RATE, OUT_RATE = 44100, 48000


@dataclass
class BenchRow:
    """Medians over the repeats; `overhead_pct` is the median of the per-pair overheads
    (each repeat times in-process then daemon back to back, so slow drifts of the machine
    fall on both sides of a pair)."""

    seconds: float
    inproc_total: float
    inproc_first: float
    daemon_total: float
    daemon_first: float
    overhead_pct: float
    pairs: int = 1
    reroll_total: float = float("nan")  # in-process, same region and new seed, given stems' encoding cached
    candidates: int = 1  # candidates sampled per window (the request's bass and drums: the bundle's, or asked)


class _TimingSink:
    def __init__(self) -> None:
        self.t0, self.first = time.perf_counter(), None
        self.info: dict[str, Any] = {}

    def progress(self, *a: Any) -> None: ...

    def chunk(self, *a: Any) -> None:
        if self.first is None:
            self.first = time.perf_counter() - self.t0

    def done(self, job: Job, info: dict[str, Any]) -> None:
        self.info = info

    def error(self, job: Job, code: P.ErrorCode, message: str) -> None:
        raise RuntimeError(f"{code.value}: {message}")


def _request(seconds: float, steps: int | None, job_id: str,
             candidates: int | None = None) -> tuple[dict[str, Any], list[np.ndarray]]:
    n = int(seconds * IN_RATE)
    t = np.arange(n) / IN_RATE
    bass = 0.3 * np.sin(2 * np.pi * 55 * t)
    drums = 0.3 * np.random.default_rng(0).standard_normal(n) * (np.sin(2 * np.pi * 2 * t) > 0.9)
    pcm = [np.stack([x, x], axis=1).astype(np.float32) for x in (bass, drums)]
    # silent_retries 0: the same work for every seed (a retry, when one happens, costs one more
    # window's sampling; `msldm demo` runs with the daemon's default)
    h: dict[str, Any] = {"type": "generate", "job_id": job_id, "generate": ["guitar", "piano"], "seed": 1,
                         "output_sample_rate": OUT_RATE, "silent_retries": 0,
                         "given": [{"stem": s, "sample_rate": IN_RATE, "channels": 2, "frames": n}
                                   for s in ("bass", "drums")]}
    if steps:
        h["steps"] = steps
    if candidates is not None:  # else the bundle's (`bass_drums_select`)
        h["candidates"] = candidates
    return h, pcm


@dataclass
class _Local:
    bundle: Bundle
    model: ModelInfo
    limits: Limits


def _inproc(local: _Local, header: dict[str, Any], pcm: list[np.ndarray],
            cache: EncodeCache | None = None, done: dict[str, Any] | None = None) -> tuple[float, float]:
    """(total, first audio) seconds of one job in-process; `done` gets the job's `done` fields."""
    sink = _TimingSink()
    req = build_request(P.decode(P.encode(header, pcm)), local.model, local.limits)
    fn, *args = run_job(local.bundle, Job(b"bench", req, sink), cache)
    fn(*args)
    if done is not None:
        done.update(sink.info)
    return time.perf_counter() - sink.t0, sink.first or 0.0


def _through_daemon(endpoint: str, header: dict[str, Any], pcm: list[np.ndarray]) -> tuple[float, float]:
    return _many_through_daemon(endpoint, [(header, pcm)])


def _many_through_daemon(endpoint: str, jobs: Sequence[tuple[dict[str, Any], list[np.ndarray]]]
                         ) -> tuple[float, float]:
    """Send every job at once (as a user queueing takes would) and wait for all to end:
    (seconds until the last `done`, seconds until the first chunk)."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        t0, first, left = time.perf_counter(), None, len(jobs)
        for header, pcm in jobs:
            sock.send_multipart(P.encode(header, pcm))
        while left:
            if not sock.poll(600_000):
                raise TimeoutError("daemon did not answer")
            m = P.decode(sock.recv_multipart(), incoming="s2c")
            if m.type == "chunk" and first is None:
                first = time.perf_counter() - t0
            if m.type == "error":
                raise RuntimeError(f"{m.header['code']}: {m.header['message']}")
            left -= m.type == "done"
        return time.perf_counter() - t0, first or 0.0
    finally:
        sock.close(0)


@dataclass
class TakesRow:
    """Medians over the repeats: `takes` takes of one region as one request, and as that many
    requests sent together (seeds 1..takes either way), through the same daemon."""

    seconds: float
    takes: int
    one_request: float
    one_request_first: float
    separate: float
    separate_first: float
    repeats: int

    @property
    def ratio(self) -> float:
        return self.one_request / self.separate


def bench_takes(bundle_dir: str | Path, seconds: float = 12.0, takes: int = 4, *, repeats: int = 3,
                steps: int | None = None, providers: Sequence[str] | None = None,
                threads: int = 0, candidates: int | None = None) -> TakesRow:
    """`takes` takes in one request against `takes` separate requests, through a daemon with
    its default encode cache on (what a user gets: the separate requests' given stems are
    encoded once too, then served from the cache), alternating which goes first."""
    h, pcm = _request(seconds, steps, "takes", candidates)
    one = ({**h, "job_id": "takes-one", "takes": takes}, pcm)
    separate = [({**h, "job_id": f"takes-{k}", "seed": 1 + k}, pcm) for k in range(takes)]
    runs: list[tuple[tuple[float, float], tuple[float, float]]] = []
    with daemon_process(bundle_dir, seconds + 1, providers, threads, encode_cache_mb=64) as endpoint:
        _many_through_daemon(endpoint, [_request(2.0, steps, "warm")])  # first-call allocations
        for r in range(repeats):
            if r % 2 == 0:
                a = _many_through_daemon(endpoint, [one])
                b = _many_through_daemon(endpoint, separate)
            else:
                b = _many_through_daemon(endpoint, separate)
                a = _many_through_daemon(endpoint, [one])
            runs.append((a, b))
    med = statistics.median
    return TakesRow(seconds, takes, med(a[0] for a, _ in runs), med(a[1] for a, _ in runs),
                    med(b[0] for _, b in runs), med(b[1] for _, b in runs), repeats)


def format_takes(row: TakesRow) -> str:
    return ("| region (s) | takes | one request (s) | first audio (s) | separate requests (s) | first audio (s) "
            "| one / separate | repeats |\n|---|---|---|---|---|---|---|---|\n"
            f"| {row.seconds:g} | {row.takes} | {row.one_request:.3f} | {row.one_request_first:.3f} "
            f"| {row.separate:.3f} | {row.separate_first:.3f} | {row.ratio:.2f} | {row.repeats} |")


@contextlib.contextmanager
def daemon_process(bundle_dir: str | Path, max_region_seconds: float, providers: Sequence[str] | None,
                   threads: int, encode_cache_mb: int = 0) -> Iterator[str]:
    """`msldm serve` (as `python -m server serve`) on a free loopback port, encode cache off
    unless `encode_cache_mb`; yields its endpoint once it answers; always stopped."""
    cmd = [sys.executable, "-m", "server", "serve", "--bundle", str(bundle_dir), "--zmq", "tcp://127.0.0.1:0",
           "--encode-cache-mb", str(encode_cache_mb), "--max-region-seconds", str(max_region_seconds),
           "--threads", str(threads), "--log-level", "WARNING"]
    if providers:
        cmd += ["--providers", ",".join(providers)]
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("READY "):
            raise RuntimeError(f"the daemon did not start (exit {proc.poll()}): {line!r}")
        yield json.loads(line[6:])["zmq"]
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if proc.stdout:
            proc.stdout.close()


def bench_server(bundle_dir: str | Path, seconds_list: Sequence[float] = (12, 60), *, repeats: int = 3,
                 steps: int | None = None, providers: Sequence[str] | None = None,
                 threads: int = 0, candidates: int | None = None) -> list[BenchRow]:
    """Time each region length in-process and through a daemon process, `repeats` pairs;
    medians (see the module docstring). `candidates`: the requests' (None: the bundle's)."""
    bundle = Bundle.load(bundle_dir, providers=providers, threads=threads)
    limit = max(seconds_list) + 1
    local = _Local(bundle, model_info(bundle), Limits(max_region_seconds=limit))
    rows = []
    with daemon_process(bundle_dir, limit, providers, threads) as endpoint:
        h, pcm = _request(2.0, steps, "bench-warmup")  # first-call allocations out of the timings
        _inproc(local, h, pcm)
        _through_daemon(endpoint, h, pcm)
        for seconds in seconds_list:
            h, pcm = _request(seconds, steps, f"bench-{seconds}", candidates)
            pairs = []
            for r in range(repeats):
                if r % 2 == 0:
                    a = _inproc(local, h, pcm)
                    b = _through_daemon(endpoint, h, pcm)
                else:
                    b = _through_daemon(endpoint, h, pcm)
                    a = _inproc(local, h, pcm)
                pairs.append((a, b))
            cache, done = EncodeCache(), {}
            _inproc(local, h, pcm, cache, done)
            reroll = _inproc(local, {**h, "seed": 2}, pcm, cache)[0]
            med = statistics.median
            rows.append(BenchRow(seconds, med(a[0] for a, _ in pairs), med(a[1] for a, _ in pairs),
                                 med(b[0] for _, b in pairs), med(b[1] for _, b in pairs),
                                 med(100.0 * (b[0] - a[0]) / a[0] for a, b in pairs), len(pairs), reroll,
                                 int(done.get("candidates", 1))))
    return rows


def format_table(rows: Sequence[BenchRow]) -> str:
    lines = ["| region (s) | in-process total (s) | in-process first audio (s) | daemon total (s) "
             "| daemon first audio (s) | daemon RTF | daemon overhead (median of pairs) | pairs "
             "| re-roll, encoding cached (s) | candidates |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.seconds:g} | {r.inproc_total:.3f} | {r.inproc_first:.3f} | {r.daemon_total:.3f} "
                     f"| {r.daemon_first:.3f} | {r.daemon_total / r.seconds:.2f} | {r.overhead_pct:+.1f}% | {r.pairs} "
                     f"| {r.reroll_total:.3f} | {r.candidates} |")
    return "\n".join(lines)
