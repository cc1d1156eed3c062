"""The ZeroMQ front end: a ROUTER socket served by one poller thread.

Threading: ZeroMQ sockets are not thread-safe, so the ROUTER is touched only by the thread
running `ZmqFront.run`. The worker thread sends its job messages through an `Outbox`
(a PUSH socket on an inproc address); the front thread PULLs them and forwards them to
the right client. The ROUTER has ROUTER_MANDATORY set: sending to a client that has
disconnected fails with EHOSTUNREACH, and then that client's jobs are cancelled, so a
client that vanishes mid-job costs nothing but that job.

Every incoming message is handled inside its own try block: a bad message gets an
`error` reply (code `internal` as the last resort, with the traceback logged) and the
loop goes on.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Any, Callable

import numpy as np
import zmq

from plugin_bridge import protocol as P
from plugin_bridge.protocol import ErrorCode, ProtocolError
from server.curve import ZAP_DOMAIN
from server.jobs import Job, Worker
from server.requests import Limits, ModelInfo, build_request

log = logging.getLogger(__name__)
_ids = itertools.count()


def bind(sock: zmq.Socket, endpoint: str) -> str:
    """Bind `sock` to `endpoint` (port 0: a free one; `tcp://[::1]:port`: IPv6); returns the
    bound endpoint. Raises ValueError with the reason when it cannot bind (the socket is closed)."""
    if endpoint.startswith("tcp://["):
        sock.setsockopt(zmq.IPV6, 1)
    try:
        sock.bind(endpoint[:-2] + ":*" if endpoint.endswith(":0") else endpoint)
    except zmq.ZMQError as e:
        sock.close(0)
        raise ValueError(f"cannot bind {endpoint}: {e.strerror}") from None
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


class Outbox:
    """Thread-safe sender of `[identity, *frames]` to the front thread (inproc PUSH)."""

    def __init__(self, ctx: zmq.Context, address: str):
        self.sock = ctx.socket(zmq.PUSH)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.connect(address)
        self.lock = threading.Lock()

    def send(self, identity: bytes, header: dict[str, Any], pcm: tuple = ()) -> None:
        frames = P.encode(header, pcm)
        with self.lock:
            self.sock.send_multipart([identity, *frames], copy=False)

    def close(self) -> None:
        with self.lock:
            self.sock.close(0)


class ZmqSink:
    """Turns a job's events into protocol messages for one ZeroMQ client."""

    def __init__(self, outbox: Outbox, identity: bytes, region: dict[str, Any] | None):
        self.outbox, self.identity, self.region = outbox, identity, region

    def progress(self, job: Job, step: int, total: int, window: int, windows: int, eta: float) -> None:
        self.outbox.send(self.identity, {"type": "progress", "job_id": job.job_id, "step": step,
                                         "total": total, "window": window, "windows": windows,
                                         "eta": round(eta, 4)})

    def chunk(self, job: Job, stem: str, offset: int, audio: np.ndarray, window: int, final: bool,
              take: int = 0) -> None:
        self.outbox.send(self.identity, {"type": "chunk", "job_id": job.job_id, "stem": stem,
                                         "offset": offset, "frames": int(len(audio)),
                                         "sample_rate": job.request.output_sample_rate, "channels": 1,
                                         "window": window, "take": take, "final": final}, (audio,))

    def done(self, job: Job, info: dict[str, Any]) -> None:
        h = {"type": "done", "job_id": job.job_id, **info}
        if self.region is not None:
            h["region"] = self.region
        self.outbox.send(self.identity, h)

    def error(self, job: Job, code: ErrorCode, message: str) -> None:
        self.outbox.send(self.identity, P.error_header(code, message, job.job_id))


class ZmqFront:
    """ROUTER endpoint + message dispatch. Call `run(stop_event)` in its own thread."""

    def __init__(self, ctx: zmq.Context, endpoint: str, worker: Worker, model: ModelInfo,
                 hello: dict[str, Any], limits: Limits, heartbeat_s: float = 1.0,
                 curve_secret_key: bytes | None = None):
        self.ctx, self.worker, self.model, self.limits = ctx, worker, model, limits
        self.hello, self.heartbeat_s, self.t0 = hello, heartbeat_s, time.time()
        self.router = ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router.setsockopt(zmq.SNDHWM, 0)
        self.router.setsockopt(zmq.MAXMSGSIZE, 2 * limits.max_message_bytes + P.MAX_HEADER_BYTES)
        if curve_secret_key is not None:  # clients are checked by the daemon's ZAP authenticator
            self.router.zap_domain = ZAP_DOMAIN.encode()
            self.router.curve_server = True
            self.router.curve_secretkey = curve_secret_key
            self.router.curve_publickey = zmq.curve_public(curve_secret_key)
        self.endpoint: str = bind(self.router, endpoint)
        self.inproc = f"inproc://msldm-outbox-{id(self)}-{next(_ids)}"
        self.pull = ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.LINGER, 0)
        self.pull.bind(self.inproc)
        self.outbox = Outbox(ctx, self.inproc)
        self.handlers: dict[str, Callable[[bytes, P.Message], None]] = {
            "hello": self._on_hello, "ping": self._on_ping, "status": self._on_status,
            "generate": self._on_generate, "cancel": self._on_cancel}

    # ------------------------------------------------------------------ loop

    def run(self, stop: threading.Event) -> None:
        """Serve until `stop` is set and the worker has drained its messages."""
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.pull, zmq.POLLIN)
        next_beat = time.monotonic() + self.heartbeat_s
        while True:
            events = dict(poller.poll(50))
            if self.pull in events:
                self._forward_outbox()
            if self.router in events:
                self._receive()
            if time.monotonic() >= next_beat:
                self._heartbeat()
                next_beat = time.monotonic() + self.heartbeat_s
            if stop.is_set() and not self.worker.thread.is_alive() and not self._pending_outbox():
                break

    def close(self) -> None:
        self.outbox.close()
        self.pull.close(0)
        self.router.close(0)

    def _pending_outbox(self) -> bool:
        return bool(self.pull.poll(0))

    def _forward_outbox(self) -> None:
        for _ in range(256):  # bounded, so client requests are not starved
            try:
                frames = self.pull.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return
            self._send(frames[0], frames[1:])

    def _send(self, identity: bytes, frames: list[bytes]) -> None:
        try:
            self.router.send_multipart([identity, *frames], copy=False)
        except zmq.ZMQError as e:
            if e.errno == zmq.EHOSTUNREACH:
                n = self.worker.cancel_client(identity)
                if n:
                    log.info("client %s went away: cancelled %d job(s)", identity.hex(), n)
            else:
                log.warning("send to %s failed: %s", identity.hex(), e)

    def _reply(self, identity: bytes, header: dict[str, Any]) -> None:
        self._send(identity, P.encode(header))

    def _receive(self) -> None:
        for _ in range(64):
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._handle(frames[0].bytes, frames[1:])

    def _handle(self, identity: bytes, frames: list[zmq.Frame]) -> None:
        """Handle one request; never raises."""
        job_id = None
        try:
            size = sum(len(f) for f in frames)
            if size > self.limits.max_message_bytes:
                raise ProtocolError(ErrorCode.TOO_LARGE, f"message of {size} bytes is over the limit of "
                                    f"{self.limits.max_message_bytes}")
            msg = P.decode([f.buffer for f in frames])
            job_id = msg.job_id
            self.handlers[msg.type](identity, msg)
        except ProtocolError as e:
            self._reply(identity, P.error_header(e.code, e.message, e.job_id or job_id))
        except Exception as e:
            log.exception("internal error while handling a message")
            self._reply(identity, P.error_header(ErrorCode.INTERNAL, f"internal error: {type(e).__name__}",
                                                 job_id))

    def _heartbeat(self) -> None:
        now = time.time()
        for client, jobs in self.worker.live_clients().items():
            if isinstance(client, bytes):
                self._reply(client, {"type": "heartbeat", "jobs": jobs, "time": now})

    # ------------------------------------------------------------------ handlers

    def _on_hello(self, identity: bytes, msg: P.Message) -> None:
        self._reply(identity, {"type": "hello", **self.hello})

    def _on_ping(self, identity: bytes, msg: P.Message) -> None:
        h = {"type": "pong", "time": time.time()}
        if "token" in msg.header:
            h["token"] = msg.header["token"]
        self._reply(identity, h)

    def _on_status(self, identity: bytes, msg: P.Message) -> None:
        jobs = self.worker.snapshot(identity)
        if msg.job_id is not None:
            jobs = [j for j in jobs if j["job_id"] == msg.job_id]
            if not jobs:
                raise ProtocolError(ErrorCode.UNKNOWN_JOB, f"no live job {msg.job_id!r}", msg.job_id)
        queued, running = self.worker.counts()
        self._reply(identity, {"type": "status", "jobs": jobs, "queued": queued, "running": running,
                               "uptime": round(time.time() - self.t0, 3)})

    def _on_generate(self, identity: bytes, msg: P.Message) -> None:
        req = build_request(msg, self.model, self.limits)
        job = Job(identity, req, ZmqSink(self.outbox, identity, req.region))
        position = self.worker.submit(job)
        self._reply(identity, {"type": "queued", "job_id": req.job_id, "position": position})

    def _on_cancel(self, identity: bytes, msg: P.Message) -> None:
        if not self.worker.cancel(identity, msg.header["job_id"]):
            raise ProtocolError(ErrorCode.UNKNOWN_JOB, f"no live job {msg.job_id!r} to cancel", msg.job_id)
