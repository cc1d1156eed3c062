"""The bridge's client for the MSLDM daemon (ZeroMQ DEALER; the wire format is `protocol`).

    with Client("tcp://127.0.0.1:5555") as c:      # pings first: DaemonUnavailable if none
        job = c.submit(GenerateRequest(given=(GivenStem("drums", drums, 48000),),
                                       generate=("bass",)))
        for event in job:                           # Queued, Progress, Chunk, Heartbeat, Done
            ...
        # or: result = c.generate_blocking(request)  -> Result(takes=[{"bass": [N]}], ...); .stems: take 0

One client is used from one thread; only `Job.cancel()` may be called from any thread
(the iterating thread sends the `cancel` at its next poll tick, within `POLL_TICK` s).
Request/reply calls (`ping`, `hello`, `status`) that time out reset the socket (the
"lazy pirate" reconnect) when no job is live, so a restarted daemon is found again.
During a job the client watches the daemon: if nothing (progress, chunk, heartbeat)
arrives for `silence_timeout` s it pings, and raises `JobLost` if the ping goes
unanswered or two heartbeats in a row no longer list the job.
"""

from __future__ import annotations

import collections
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Union

import numpy as np
import zmq

from plugin_bridge import protocol as P

DEFAULT_URL = "tcp://127.0.0.1:5555"
START_HINT = "start it with `msldm serve`"
POLL_TICK = 0.05


class BridgeError(Exception):
    """Base of every error the client raises."""


class DaemonUnavailable(BridgeError):
    """No daemon answered at `url` within `waited` seconds."""

    def __init__(self, url: str, waited: float, what: str = "ping") -> None:
        super().__init__(f"no MSLDM daemon answers at {url} (no reply to {what} within "
                         f"{waited:.1f} s); {START_HINT}")
        self.url, self.waited = url, waited


class DaemonError(BridgeError):
    """The daemon answered with an `error` message (`code` is a `protocol.ErrorCode` value)."""

    def __init__(self, code: str, message: str, job_id: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.job_id = code, message, job_id


class JobCancelled(DaemonError):
    """The job ended with `error` code `cancelled`."""


class JobLost(BridgeError):
    """The daemon went away or forgot the job while it ran."""


@dataclass(frozen=True)
class CurveKeys:
    """CurveZMQ keys of a client (z85): the daemon's public key and this client's pair."""

    server_public: bytes
    client_public: bytes
    client_secret: bytes

    @classmethod
    def from_files(cls, server_key: str, client_key: str) -> "CurveKeys":
        """From certificate files as `msldm keys` writes them: the daemon's `.key` (public)
        and this client's `.key_secret`. Raises BridgeError."""
        import zmq.auth
        try:
            server_public, _ = zmq.auth.load_certificate(str(server_key))
            client_public, client_secret = zmq.auth.load_certificate(str(client_key))
        except (OSError, ValueError) as e:
            raise BridgeError(f"cannot read a CurveZMQ key file: {e}") from None
        if client_secret is None:
            raise BridgeError(f"{client_key} holds no secret key (use this client's '.key_secret' file)")
        return cls(server_public, client_public, client_secret)


# ----------------------------------------------------------------------------- events

@dataclass(frozen=True)
class Queued:
    job_id: str
    position: int


@dataclass(frozen=True)
class Progress:
    job_id: str
    step: int
    total: int
    window: int
    windows: int
    eta: float

    @property
    def fraction(self) -> float:
        """Steps done over steps in the job, in [0, 1]."""
        return min(1.0, self.step / self.total) if self.total > 0 else 0.0


@dataclass(frozen=True)
class Chunk:
    """A piece of one stem: `audio` `[frames]` float32 starting at sample `offset`."""

    job_id: str
    stem: str
    offset: int
    audio: np.ndarray
    sample_rate: int
    window: int
    final: bool
    take: int = 0


@dataclass(frozen=True)
class Heartbeat:
    jobs: tuple[str, ...]
    time: float


@dataclass(frozen=True)
class Done:
    job_id: str
    stems: tuple[str, ...]
    frames: int
    sample_rate: int
    seed: int
    steps: int
    sampler: str
    timings: dict[str, float]
    region: dict[str, Any] | None
    windows: int | None = None
    schedule: str | None = None
    resample: int | None = None
    seeds: tuple[int, ...] = ()  # every take's seed, in take order (`_to_event` always fills it)
    redo: dict[str, Any] | None = None  # {stem, start, end} of a redo request
    silent_retries: int | None = None  # the retries allowed for a silent stem (None: an older daemon)
    take_rerolls: tuple[int, ...] = ()  # per take, extra samplings of a window for a silent stem
    guidance: float | None = None  # the given-part guidance used (None: an older daemon)
    take_fits: tuple[dict[str, Any], ...] = ()  # per take {fit, rank, stem_fit} of a multi-take job (else empty)
    take_tamed: tuple[int, ...] = ()  # per take, windows turned down after every sampling came out blown
    candidates: int | None = None  # candidates sampled per take and window (None: an older daemon)
    level: str | None = None  # "balance" or "model": how the generated stems' level was set (None: an older daemon)
    take_level_gains: tuple[dict[str, list[float]], ...] = ()  # per take, stem -> its balance gain (dB) per window

    @property
    def takes(self) -> int:
        return max(1, len(self.seeds))


Event = Union[Queued, Progress, Chunk, Heartbeat, Done]


# ----------------------------------------------------------------------------- requests

@dataclass(frozen=True)
class GivenStem:
    """A given stem: `audio` `[N]` mono or `[N, 2]` stereo float32 at `sample_rate`."""

    stem: str
    audio: np.ndarray
    sample_rate: int

    def info(self) -> dict[str, Any]:
        a = np.asarray(self.audio)
        channels = 1 if a.ndim == 1 else int(a.shape[1])
        return {"stem": self.stem, "sample_rate": int(self.sample_rate),
                "channels": channels, "frames": int(a.shape[0])}


@dataclass(frozen=True)
class GenerateRequest:
    """What to generate. Unset optional fields take the daemon's / bundle's defaults."""

    generate: tuple[str, ...]
    given: tuple[GivenStem, ...] = ()
    seed: int | None = None
    steps: int | None = None
    sampler: str | None = None
    schedule: str | None = None
    resample: int | None = None
    guidance: float | None = None  # how strongly the generated stems follow the given ones (daemon: the bundle's)
    candidates: int | None = None  # given bass and drums alone: candidates per window (daemon: the bundle's)
    output_sample_rate: int | None = None
    duration: float | None = None
    region: dict[str, Any] | None = None
    length: str | None = None  # "region" or "bars" (needs region tempo and meter)
    takes: int | None = None  # takes in one batch: seeds seed, seed + 1, ...
    redo: dict[str, Any] | None = None  # {stem, start, end} (seconds) or {stem, bars: [first, last]}
    silent_retries: int | None = None  # re-samplings of a window with a silent generated stem (daemon: 2)
    level: str | None = None  # "balance" (the daemon's default) or "model": the generated stems' level

    def header(self, job_id: str) -> dict[str, Any]:
        """The `generate` header (protocol field names)."""
        h: dict[str, Any] = {"type": "generate", "job_id": job_id,
                             "given": [g.info() for g in self.given], "generate": list(self.generate)}
        for name in ("seed", "steps", "sampler", "schedule", "resample", "guidance", "candidates",
                     "output_sample_rate", "duration", "region", "length", "takes", "redo", "silent_retries", "level"):
            value = getattr(self, name)
            if value is not None:
                h[name] = value
        return h


@dataclass
class Result:
    """A finished job: `takes[i][name]` is take i's stem, `[done.frames]` float32 at
    `sample_rate`, made with seed `done.seeds[i]`; `stems` is take 0's."""

    takes: list[dict[str, np.ndarray]]
    sample_rate: int
    done: Done
    wall_seconds: float

    @property
    def stems(self) -> dict[str, np.ndarray]:
        return self.takes[0]


class StemAssembler:
    """Collects `Chunk`s (in any order) into whole stems once `Done` tells the length."""

    def __init__(self) -> None:
        self._parts: dict[tuple[int, str], list[Chunk]] = collections.defaultdict(list)

    def add(self, chunk: Chunk) -> None:
        self._parts[(chunk.take, chunk.stem)].append(chunk)

    def assemble(self, done: Done) -> list[dict[str, np.ndarray]]:
        """`[{stem: [done.frames]}]`, one per take; raises BridgeError if a stem is missing or has
        gaps."""
        takes = []
        for take in range(done.takes):
            out = {}
            for stem in done.stems:
                buf = np.zeros(done.frames, dtype=np.float32)
                covered = np.zeros(done.frames, dtype=bool)
                for c in self._parts.get((take, stem), []):
                    end = min(done.frames, c.offset + c.audio.shape[0])
                    buf[c.offset:end] = c.audio[: end - c.offset]
                    covered[c.offset:end] = True
                if not covered.all():
                    raise BridgeError(f"take {take}, stem {stem!r}: {int((~covered).sum())} of {done.frames} "
                                      "samples never arrived")
                out[stem] = buf
            takes.append(out)
        return takes


# ----------------------------------------------------------------------------- conversions

def _to_event(msg: P.Message) -> Event | None:
    """A job-related daemon message -> Event (None for types that are not events)."""
    h = msg.header
    if msg.type == "queued":
        return Queued(h["job_id"], h["position"])
    if msg.type == "progress":
        return Progress(h["job_id"], h["step"], h["total"], h["window"], h["windows"], float(h["eta"]))
    if msg.type == "chunk":
        audio = P.pcm_from_bytes(msg.pcm[0], h["channels"])
        if audio.ndim == 2:
            audio = audio.mean(axis=1, dtype=np.float32)
        return Chunk(h["job_id"], h["stem"], h["offset"], audio, h["sample_rate"], h["window"], h["final"],
                     h.get("take", 0))
    if msg.type == "done":
        takes = h.get("takes", [{"seed": h["seed"]}])
        seeds = tuple(t["seed"] for t in takes)
        rerolls = tuple(int(t.get("silent_rerolls", 0)) for t in takes) if "silent_rerolls" in h else ()
        tamed = tuple(int(t.get("tamed_windows", 0)) for t in takes) if "tamed_windows" in h else ()
        fits = tuple({k: t[k] for k in ("fit", "rank", "stem_fit") if k in t} for t in takes) \
            if all("rank" in t for t in takes) and len(takes) > 1 else ()
        gains = tuple(dict(t.get("level_gain_db", {})) for t in takes) if "level" in h else ()
        return Done(h["job_id"], tuple(h["stems"]), h["frames"], h["sample_rate"], h["seed"], h["steps"],
                    h["sampler"], dict(h["timings"]), h.get("region"), h.get("windows"),
                    h.get("schedule"), h.get("resample"), seeds, h.get("redo"), h.get("silent_retries"), rerolls,
                    h.get("guidance"), fits, tamed, h.get("candidates"), h.get("level"), gains)
    if msg.type == "heartbeat":
        jobs = tuple(j.get("job_id", "") for j in h["jobs"] if isinstance(j, dict))
        return Heartbeat(jobs, float(h["time"]))
    return None


def _error_of(h: dict[str, Any]) -> DaemonError:
    cls = JobCancelled if h.get("code") == P.ErrorCode.CANCELLED.value else DaemonError
    return cls(str(h.get("code")), str(h.get("message")), h.get("job_id"))


# ----------------------------------------------------------------------------- jobs

class Job:
    """A submitted job; iterate it for its events. Ends with `Done` or raises
    `DaemonError` / `JobCancelled` / `JobLost`."""

    def __init__(self, client: "Client", job_id: str, silence_timeout: float) -> None:
        self.client, self.job_id = client, job_id
        self.silence_timeout = silence_timeout
        self.queue: collections.deque[P.Message] = collections.deque()
        self.finished = False
        self.accepted = False
        self._cancel = threading.Event()
        self._cancel_sent = False
        self._missed_heartbeats = 0

    def cancel(self) -> None:
        """Ask the daemon to cancel the job (thread-safe); the job then raises JobCancelled."""
        self._cancel.set()
        if threading.get_ident() == self.client.owner_thread:
            self._send_cancel()

    def _send_cancel(self) -> None:
        if not self._cancel_sent and not self.finished:
            self._cancel_sent = True
            self.client.send({"type": "cancel", "job_id": self.job_id})

    def __iter__(self) -> Iterator[Event]:
        last_rx = time.monotonic()
        while not self.finished:
            if self._cancel.is_set():
                self._send_cancel()
            if not self.queue:
                reply = self.client.pump(POLL_TICK)
                if reply is not None and not self.accepted and reply.type == "error" \
                        and reply.header.get("job_id") is None:
                    self._finish()  # the generate was refused before its job id was read
                    raise _error_of(reply.header)
                if not self.queue:
                    if time.monotonic() - last_rx > self.silence_timeout:
                        self._check_alive()
                        last_rx = time.monotonic()
                    continue
            last_rx = time.monotonic()
            event = self._handle(self.queue.popleft())
            if event is not None:
                yield event

    def _handle(self, msg: P.Message) -> Event | None:
        if msg.type == "error":
            self._finish()
            raise _error_of(msg.header)
        event = _to_event(msg)
        if isinstance(event, Queued):
            self.accepted = True
        elif isinstance(event, Done):
            self._finish()
        elif isinstance(event, Heartbeat):
            self._watch_heartbeat(event)
        return event

    def _watch_heartbeat(self, hb: Heartbeat) -> None:
        if not self.accepted or self.job_id in hb.jobs:
            self._missed_heartbeats = 0
            return
        self._missed_heartbeats += 1
        if self._missed_heartbeats >= 2:
            self._finish()
            raise JobLost(f"the daemon no longer lists job {self.job_id!r} in its heartbeats")

    def _check_alive(self) -> None:
        """After a silence: the daemon must answer a ping and still list the job (a
        restarted daemon answers pings but has never heard of it)."""
        try:
            self.client.ping()
            listed = any(j.get("job_id") == self.job_id for j in self.client.status().get("jobs", []))
        except DaemonUnavailable as e:
            self._finish()
            raise JobLost(f"the daemon stopped answering during job {self.job_id!r}: {e}") from e
        deadline = time.monotonic() + 1.0
        while not listed and not self.queue and time.monotonic() < deadline:
            self.client.pump(POLL_TICK)  # a terminal message may still be on its way
        if not listed and not self.queue:
            self._finish()
            raise JobLost(f"the daemon at {self.client.url} no longer knows job {self.job_id!r} "
                          "(was it restarted?)")

    def _finish(self) -> None:
        self.finished = True
        self.client.jobs.pop(self.job_id, None)


# ----------------------------------------------------------------------------- client

@dataclass
class Client:
    """Connection to one daemon. `timeout`: seconds to wait for replies (hello, status);
    `ping_timeout`: seconds a liveness ping may take; `silence_timeout`: seconds without
    any message during a job before the client pings the daemon; `curve`: CurveZMQ keys
    for a daemon that requires them (a remote one)."""

    url: str = DEFAULT_URL
    timeout: float = 10.0
    ping_timeout: float = 1.5
    silence_timeout: float = 15.0
    check_on_connect: bool = True
    curve: CurveKeys | None = None
    jobs: dict[str, Job] = field(default_factory=dict, init=False)
    owner_thread: int = field(default_factory=threading.get_ident, init=False)

    def __post_init__(self) -> None:
        self._ctx = zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self._open()
        if self.check_on_connect:
            self.ping()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> None:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        sock.setsockopt(zmq.SNDTIMEO, int(self.timeout * 1000))  # a send never hangs the DAW
        sock.setsockopt(zmq.IPV6, int(self.url.startswith("tcp://[")))  # tcp://[::1]:5555
        if self.curve is not None:
            sock.curve_serverkey = self.curve.server_public
            sock.curve_publickey = self.curve.client_public
            sock.curve_secretkey = self.curve.client_secret
        sock.connect(self.url)
        self._sock = sock

    def close(self) -> None:
        """Cancel live jobs (best effort) and close the socket."""
        if self._sock is None:
            return
        for job in list(self.jobs.values()):
            job._send_cancel()
        self._sock.close(linger=0)
        self._sock = None

    def reconnect(self) -> None:
        """Drop the socket (and any stale replies queued in it) and connect a fresh one."""
        if self._sock is not None:
            self._sock.close(linger=0)
        self._open()

    # -- wire ---------------------------------------------------------------

    def send(self, header: dict[str, Any], pcm: list[np.ndarray] | tuple = ()) -> None:
        if self._sock is None:
            raise BridgeError("the client is closed")
        try:
            self._sock.send_multipart(P.encode(header, pcm), copy=False)
        except zmq.Again:  # no pipe to a daemon (e.g. a failed handshake) for `timeout` seconds
            raise DaemonUnavailable(self.url, self.timeout, header.get("type", "message")) from None

    def _recv(self, timeout: float) -> P.Message | None:
        assert self._sock is not None
        if not self._sock.poll(int(max(0.0, timeout) * 1000), zmq.POLLIN):
            return None
        frames = self._sock.recv_multipart()
        try:
            return P.decode(frames, incoming="s2c")
        except P.ProtocolError as e:
            if e.code == P.ErrorCode.UNKNOWN_TYPE:
                return None  # a newer daemon's message type: ignore
            raise BridgeError(f"the daemon sent a malformed message: {e.message}") from e

    def pump(self, timeout: float) -> P.Message | None:
        """Receive at most one message within `timeout` s. Messages of live jobs are queued
        on their job (heartbeats on every live job); anything else (a reply) is returned."""
        msg = self._recv(timeout)
        if msg is None:
            return None
        if msg.type == "heartbeat":
            for job in self.jobs.values():
                job.queue.append(msg)
            return None
        if msg.job_id is not None and msg.job_id in self.jobs:
            self.jobs[msg.job_id].queue.append(msg)
            return None
        return msg

    def request(self, header: dict[str, Any], accept: Callable[[P.Message], bool],
                timeout: float | None = None) -> P.Message:
        """Send `header` and wait for the first reply that `accept`s (an `error` reply
        without a live job raises DaemonError). On timeout the socket is reset when no job
        is live, and DaemonUnavailable is raised."""
        wait = self.timeout if timeout is None else timeout
        self.send(header)
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            msg = self.pump(left)
            if msg is None:
                continue
            if accept(msg):
                return msg
            if msg.type == "error" and msg.header.get("job_id") in (None, header.get("job_id")):
                raise _error_of(msg.header)
        if not self.jobs:
            self.reconnect()
        raise DaemonUnavailable(self.url, wait, header["type"])

    # -- calls ----------------------------------------------------------------

    def ping(self, timeout: float | None = None) -> float:
        """Round-trip time of a `ping` in seconds; DaemonUnavailable if none answers."""
        token = secrets.token_hex(8)
        t0 = time.monotonic()
        self.request({"type": "ping", "token": token},
                     lambda m: m.type == "pong" and m.header.get("token") == token,
                     self.ping_timeout if timeout is None else timeout)
        return time.monotonic() - t0

    def hello(self) -> dict[str, Any]:
        """The daemon's capabilities (the `hello` reply's header)."""
        return self.request({"type": "hello"}, lambda m: m.type == "hello").header

    def status(self, job_id: str | None = None) -> dict[str, Any]:
        """Queue and job states (the `status` reply's header)."""
        h: dict[str, Any] = {"type": "status"}
        if job_id is not None:
            h["job_id"] = job_id
        return self.request(h, lambda m: m.type == "status").header

    def submit(self, request: GenerateRequest, job_id: str | None = None) -> Job:
        """Send a `generate` and return its Job (iterate it for the events)."""
        jid = job_id or f"job-{secrets.token_hex(6)}"
        if jid in self.jobs:
            raise BridgeError(f"job {jid!r} is already live on this client")
        job = Job(self, jid, self.silence_timeout)
        self.jobs[jid] = job
        self.send(request.header(jid), [np.asarray(g.audio, dtype=np.float32) for g in request.given])
        return job

    def cancel(self, job_id: str) -> None:
        """Cancel a live job of this client (its iteration then raises JobCancelled)."""
        if job_id not in self.jobs:
            raise BridgeError(f"no live job {job_id!r} on this client")
        self.jobs[job_id].cancel()

    def generate(self, request: GenerateRequest, job_id: str | None = None) -> Iterator[Event]:
        """Submit and iterate: yields Queued, Progress, Chunk, Heartbeat, and finally Done."""
        yield from self.submit(request, job_id)

    def generate_blocking(self, request: GenerateRequest, job_id: str | None = None,
                          on_event: Callable[[Event], None] | None = None) -> Result:
        """Run a job to its end; `on_event` sees every event. Returns the assembled stems."""
        t0 = time.monotonic()
        assembler = StemAssembler()
        done: Done | None = None
        for event in self.generate(request, job_id):
            if on_event is not None:
                on_event(event)
            if isinstance(event, Chunk):
                assembler.add(event)
            elif isinstance(event, Done):
                done = event
        assert done is not None  # a job iteration ends with Done or raises
        return Result(assembler.assemble(done), done.sample_rate, done, time.monotonic() - t0)
