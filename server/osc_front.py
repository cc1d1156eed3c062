"""The OSC front end (python-osc, UDP) for DAWs that speak only OSC.

Requests (replies go to the sender's host, at `reply_port` when given and > 0, else to the
packet's source port):

    /msldm/ping     [reply_port:i]                       -> /msldm/pong <time:f>
    /msldm/status   [reply_port:i]                       -> /msldm/status <json:s>
    /msldm/generate <job_id:s> <reply_port:i> <key=value:s>...
                    keys: <stem>=<wav path> (a given stem; repeat per stem),
                          generate=<stem>[,<stem>...], seed=<int>, steps=<int>, takes=<int>,
                          sampler=<name>, schedule=<name>, resample=<int>, guidance=<number>,
                          candidates=<int>, output_sample_rate=<Hz>,
                          duration=<seconds>, tempo=<bpm>, meter=<beats>/<unit> (the region's; the grid
                          the takes are ranked on)   (sample_rate=<Hz>: output_sample_rate's old name)
                    -> /msldm/queued <job_id> <position:i>
                       /msldm/progress <job_id> <step:i> <total:i>  (at most 10 per second)
                       /msldm/takes <job_id> <json:s>  (takes > 1: [{take, seed, fit, rank, stem_fit}],
                                                        the estimated fit of each take, rank 1 the best)
                       /msldm/done <job_id> <path:s>...            (the written stems)
                       /msldm/error <job_id> <code:s> <message:s>
    /msldm/cancel   <job_id:s> [reply_port:i]

Paths are read only from the configured input folders (relative to one of them, or
absolute inside one; no `..`, and symlinks are resolved and must stay inside). Stems are
written to `<output folder>/<job_id>/<stem>.wav` (`<stem>.seed<seed>.wav` per take when
`takes` > 1) through `server.outputs.JobOutput`: a
hidden temporary folder renamed once the job is done, so a job's stems appear all at once
or not at all; what a killed daemon left is swept at the next start.

Every error reply carries the request's job id (the string argument given, even when it
is not a valid job id; "" when there is none). Packets are read whole up to the UDP
maximum; one that is not OSC is answered `/msldm/error "" malformed_message ...`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket, ParseError
from pythonosc.osc_server import BlockingOSCUDPServer

from plugin_bridge import protocol as P
from plugin_bridge.protocol import ErrorCode, ProtocolError
from server.audio import read_wav, to_mono
from server.jobs import Job, Worker
from server.outputs import JobOutput, check_job_id, sweep
from server.requests import JobRequest, Limits, ModelInfo, build_request

log = logging.getLogger(__name__)
MAX_PACKET = 65536  # larger than any UDP datagram: nothing is ever cut
OLD_OPTION_NAMES = {"sample_rate": "output_sample_rate"}
"""`/msldm/generate` option names of earlier versions -> the protocol field they set."""


def resolve_inside(path: str, folders: Sequence[Path]) -> Path:
    """The real path of the existing file `path` if it lies inside one of `folders`
    (relative paths are tried against each folder in turn). Raises BAD_PATH otherwise."""
    if not path or ".." in Path(path).parts or "\x00" in path:
        raise ProtocolError(ErrorCode.BAD_PATH, f"path {path!r} is empty or contains '..'")
    for folder in folders:
        root = os.path.realpath(folder)
        real = os.path.realpath(os.path.join(root, path))  # an absolute `path` replaces root
        if os.path.commonpath([root, real]) == root and os.path.isfile(real):
            return Path(real)
    raise ProtocolError(ErrorCode.BAD_PATH, f"{path!r} is not a file inside the input folders")


def take_file_stem(request: JobRequest, stem: str, take: int) -> str:
    """A take's file name without `.wav`: the stem for a one-take job, else `<stem>.seed<seed>`."""
    return stem if request.takes == 1 else f"{stem}.seed{request.seeds[take]}"


class OscSink:
    """Writes a job's stems (all published at once) and answers over OSC."""

    PROGRESS_INTERVAL = 0.1  # seconds; UDP replies are throttled so they cannot flood the receiver

    def __init__(self, front: "OscFront", reply_to: tuple[str, int], output: JobOutput):
        self.front, self.reply_to, self.output = front, reply_to, output
        self.last_progress = 0.0

    def progress(self, job: Job, step: int, total: int, window: int, windows: int, eta: float) -> None:
        now = time.monotonic()
        if step == total or now - self.last_progress >= self.PROGRESS_INTERVAL:
            self.last_progress = now
            self.front.send(self.reply_to, "/msldm/progress", job.job_id, step, total)

    def chunk(self, job: Job, stem: str, offset: int, audio: np.ndarray, window: int, final: bool,
              take: int = 0) -> None:
        self.output.write(take_file_stem(job.request, stem, take), audio, job.request.output_sample_rate)

    def done(self, job: Job, info: dict[str, Any]) -> None:
        req = job.request
        try:
            paths = self.output.commit([take_file_stem(req, s, b) for b in range(req.takes) for s in req.generate])
        except Exception as e:  # disk full, a file at the folder's name: the client must still hear
            log.exception("job %s: writing the stems failed", job.job_id)
            self.error(job, ErrorCode.BAD_PATH, f"could not write the stems to {self.output.final}: {e}")
            return
        ranked = [t for t in info.get("takes", []) if "rank" in t]
        if ranked:  # several takes: the daemon's estimate of each one's fit, before the paths
            self.front.send(self.reply_to, "/msldm/takes", job.job_id, json.dumps(
                [{k: t[k] for k in ("take", "seed", "fit", "rank", "stem_fit")} for t in ranked]))
        self.front.send(self.reply_to, "/msldm/done", job.job_id, *map(str, paths))

    def error(self, job: Job, code: ErrorCode, message: str) -> None:
        try:
            self.output.abort()
        except Exception:  # noqa: BLE001 (best effort: the reply below matters more)
            log.exception("job %s: removing the temporary stems failed", job.job_id)
        self.front.send(self.reply_to, "/msldm/error", job.job_id, code.value, message)


class _UdpServer(BlockingOSCUDPServer):
    """python-osc's server reading whole datagrams (its default buffer cuts at 8 KiB) and
    answering packets that are not OSC, instead of dropping them silently."""

    max_packet_size = MAX_PACKET

    def __init__(self, address: tuple[str, int], dispatcher: Dispatcher, front: "OscFront"):
        self.front = front
        super().__init__(address, dispatcher)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        data = request[0]
        try:
            OscPacket(data)
        except ParseError as e:
            self.front.send(client_address, "/msldm/error", "", ErrorCode.MALFORMED.value,
                            f"not an OSC packet ({len(data)} bytes): {e}")
            return False
        return True


class OscFront:
    """UDP OSC server on `host:port` (port 0: a free one; see `.port`)."""

    def __init__(self, host: str, port: int, worker: Worker, model: ModelInfo, limits: Limits,
                 input_dirs: Sequence[Path], output_dir: Path):
        self.worker, self.model, self.limits = worker, model, limits
        self.input_dirs, self.output_dir = [Path(d) for d in input_dirs], Path(output_dir)
        disp = Dispatcher()
        for name, fn in (("ping", self._on_ping), ("status", self._on_status),
                         ("generate", self._on_generate), ("cancel", self._on_cancel)):
            disp.map(f"/msldm/{name}", self._guard(fn), needs_reply_address=True)
        disp.set_default_handler(self._on_unknown, needs_reply_address=True)
        self.lock = threading.Lock()
        try:
            self.server = _UdpServer((host, port), disp, self)
        except OSError as e:
            raise ValueError(f"cannot serve OSC on {host}:{port}: {e.strerror or e}") from None
        self.port: int = self.server.server_address[1]
        sweep(self.output_dir)
        self.t0 = time.time()

    def run(self) -> None:
        self.server.serve_forever(poll_interval=0.05)

    def shutdown(self, running: bool = True) -> None:
        """Stop serving and close. `running`: whether a thread was started on `run` (without
        one, socketserver's shutdown() would wait for ever)."""
        if running:
            self.server.shutdown()
        self.server.server_close()

    def send(self, addr: tuple[str, int], path: str, *args: Any) -> None:
        b = OscMessageBuilder(path)
        for a in args:
            b.add_arg(a)
        with self.lock:
            try:
                self.server.socket.sendto(b.build().dgram, addr)
            except OSError as e:
                log.warning("OSC reply to %s failed: %s", addr, e)

    # ------------------------------------------------------------------ handlers

    def _guard(self, fn):
        def handler(client: tuple[str, int], address: str, *args: Any) -> None:
            reply_to = client
            try:
                reply_to = _reply_addr(client, fn, args)
                fn(reply_to, *args)
            except ProtocolError as e:
                self.send(reply_to, "/msldm/error", e.job_id or _job_id_arg(fn, args), e.code.value, e.message)
            except Exception as e:
                log.exception("internal error handling %s", address)
                self.send(reply_to, "/msldm/error", _job_id_arg(fn, args), ErrorCode.INTERNAL.value,
                          f"internal error: {type(e).__name__}")
        return handler

    def _on_unknown(self, client: tuple[str, int], address: str, *args: Any) -> None:
        self.send(client, "/msldm/error", "", ErrorCode.UNKNOWN_TYPE.value, f"unknown OSC address {address}")

    def _on_ping(self, reply_to: tuple[str, int], *args: Any) -> None:
        self.send(reply_to, "/msldm/pong", float(time.time()))

    def _on_status(self, reply_to: tuple[str, int], *args: Any) -> None:
        queued, running = self.worker.counts()
        body = {"jobs": self.worker.snapshot(("osc", reply_to[0])), "queued": queued,
                "running": running, "uptime": round(time.time() - self.t0, 3)}
        self.send(reply_to, "/msldm/status", json.dumps(body))

    def _on_cancel(self, reply_to: tuple[str, int], job_id: Any = None, *args: Any) -> None:
        if not isinstance(job_id, str) or not self.worker.cancel(("osc", reply_to[0]), job_id):
            raise ProtocolError(ErrorCode.UNKNOWN_JOB, f"no live job {job_id!r} to cancel",
                                job_id if isinstance(job_id, str) else None)

    def _on_generate(self, reply_to: tuple[str, int], job_id: Any = None, _port: Any = None,
                     *options: Any) -> None:
        if not isinstance(job_id, str):
            raise ProtocolError(ErrorCode.MISSING_FIELD, "/msldm/generate needs <job_id:s> <reply_port:i> ...")
        check_job_id(job_id)
        header, pcm = self._request(job_id, options)
        req = build_request(P.decode(P.encode(header, pcm)), self.model, self.limits)
        output = JobOutput(self.output_dir, job_id)
        job = Job(("osc", reply_to[0]), req, OscSink(self, reply_to, output))
        try:
            position = self.worker.submit(job)
        except BaseException:
            output.abort()
            raise
        self.send(reply_to, "/msldm/queued", job_id, position)

    def _request(self, job_id: str, options: Sequence[Any]) -> tuple[dict[str, Any], list[np.ndarray]]:
        """`key=value` options -> a protocol `generate` header and its PCM frames."""
        header: dict[str, Any] = {"type": "generate", "job_id": job_id, "given": [], "generate": []}
        pcm: list[np.ndarray] = []
        casts = {"seed": int, "steps": int, "output_sample_rate": int, "duration": _finite_float,
                 "sampler": str, "schedule": str, "resample": int, "takes": int, "candidates": int,
                 "silent_retries": int, "guidance": _finite_float, "level": str}
        for opt in options:
            if not isinstance(opt, str) or "=" not in opt:
                raise ProtocolError(ErrorCode.BAD_FIELD, f"option {opt!r} is not key=value", job_id)
            key, value = opt.split("=", 1)
            key = OLD_OPTION_NAMES.get(key, key)
            if key == "generate":
                header["generate"] = [s for s in value.split(",") if s]
            elif key in ("tempo", "meter"):  # the region's beat: the take ranking's grid (docs/protocol.md)
                header.setdefault("region", {})[key] = _region_value(key, value, job_id)
            elif key in casts:
                try:
                    v = casts[key](value)
                except ValueError:
                    raise ProtocolError(ErrorCode.BAD_FIELD, f"{key}={value!r} is not valid", job_id) from None
                header[key] = v
            elif key in self.model.stems:
                audio, rate = self._read(value, job_id)
                header["given"].append({"stem": key, "sample_rate": rate, "channels": 1, "frames": len(audio)})
                pcm.append(audio)
            else:
                raise ProtocolError(ErrorCode.UNKNOWN_STEM, f"unknown option or stem {key!r}", job_id)
        return header, pcm

    def _read(self, path: str, job_id: str) -> tuple[np.ndarray, int]:
        real = resolve_inside(path, self.input_dirs)
        try:
            audio, rate = read_wav(real)
        except Exception as e:
            raise ProtocolError(ErrorCode.BAD_PATH, f"cannot read {path!r}: {e}", job_id) from None
        P.check_sample_rate(rate, f"sample rate of {path!r}", job_id)
        return to_mono(audio), rate


def _region_value(key: str, text: str, job_id: str) -> Any:
    """`tempo=<bpm>` (a finite number > 0) or `meter=<beats>/<unit>` (e.g. 6/8) as the protocol's
    `region.tempo` / `region.meter`."""
    try:
        if key == "tempo":
            v = _finite_float(text)
            if v > 0:
                return v
        else:
            beats, unit = (int(x) for x in text.split("/"))
            if beats > 0 and unit > 0:
                return [beats, unit]
    except ValueError:
        pass
    raise ProtocolError(ErrorCode.BAD_FIELD, f"{key}={text!r} is not valid (tempo=<bpm>, meter=<beats>/<unit>)",
                        job_id)


def _finite_float(text: str) -> float:
    """`float(text)`, refusing NaN and +-Inf (ValueError): they cannot go into a header."""
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"{text!r} is not a finite number")
    return v


def _job_id_arg(fn: Any, args: Sequence[Any]) -> str:
    """The job id argument of a generate / cancel request, as sent ("" if none or not a string)."""
    if fn.__name__ in ("_on_generate", "_on_cancel") and args and isinstance(args[0], str):
        return args[0]
    return ""


def _reply_addr(client: tuple[str, int], fn: Any, args: Sequence[Any]) -> tuple[str, int]:
    """Sender host + the request's reply port (first int argument for ping/status, the
    argument after the job id for generate/cancel), else the source port."""
    name = fn.__name__
    idx = 0 if name in ("_on_ping", "_on_status") else 1
    port = args[idx] if len(args) > idx else 0
    if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536:
        return client[0], port
    return client
