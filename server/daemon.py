"""The daemon: one bundle, one worker thread, a ZeroMQ front end and an optional OSC one.

`Daemon(config).start()` loads and warms up the bundle, starts the worker, the ZeroMQ
poller thread and (if configured) the OSC server thread; `stop()` refuses new jobs,
cancels queued and running ones (each ends with `error` code `shutting_down`, and OSC
jobs delete their temporary files), flushes the last messages and closes the sockets.
`serve(config)` does that around SIGINT / SIGTERM; it is what `msldm serve` runs.

Security: loopback only unless `allow_remote`; then CurveZMQ is required, with a ZAP
authenticator (`server.curve`) that admits only the client keys in `curve_clients`.
An address that cannot be bound is a ValueError with the reason (no traceback).
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator

from msldm import sampling
from msldm.config import MAX_GUIDANCE, MAX_SELECT
from plugin_bridge import protocol as P
from server.curve import check_client_folder, start_authenticator
from server.jobs import Worker
from server.osc_front import OscFront
from server.requests import Limits, ModelInfo
from server.runtime import Bundle
from server.windowing import default_overlap
from server.zmq_front import ZmqFront

log = logging.getLogger(__name__)
DEFAULT_ZMQ = "tcp://127.0.0.1:5555"


@dataclass(frozen=True)
class DaemonConfig:
    """Everything `msldm serve` configures. `osc` is "host:port" or None (no OSC)."""

    bundle: Path
    zmq: str = DEFAULT_ZMQ
    osc: str | None = None
    osc_inputs: tuple[Path, ...] = ()
    osc_output: Path | None = None
    allow_remote: bool = False
    curve_secret_key: bytes | None = None  # z85 server secret key (CurveZMQ)
    curve_clients: Path | None = None  # folder of allowed client public keys (*.key); needed with Curve
    providers: tuple[str, ...] | None = None
    threads: int = 0
    heartbeat_s: float = 1.0
    limits: Limits = field(default_factory=Limits)
    encode_cache_mb: float = 64.0  # latents of given stems kept for re-rolls; 0: off


def model_info(b: Bundle) -> ModelInfo:
    """What request validation needs to know about a loaded bundle."""
    d = b.sampler_defaults
    return ModelInfo(b.stems, b.sample_rate, tuple(sampling.SAMPLERS), d.steps, d.sampler,
                     tuple(sampling.SCHEDULES), d.schedule, d.resample, d.guidance, d.bass_drums_select)


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses (`127.x`, `::1`, `[::1]`)."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_security(cfg: DaemonConfig) -> None:
    """Loopback only, unless `allow_remote` is set together with a CurveZMQ key. Raises ValueError."""
    if cfg.zmq.startswith(("ipc://", "inproc://")):
        pass
    elif cfg.zmq.startswith("tcp://"):
        host = cfg.zmq[len("tcp://"):].rsplit(":", 1)[0]
        if not is_loopback(host):
            if not cfg.allow_remote:
                raise ValueError(f"{cfg.zmq} is not loopback: binding elsewhere needs --allow-remote "
                                 "and CurveZMQ keys (--curve-secret-key, --curve-clients)")
            if cfg.curve_secret_key is None:
                raise ValueError("--allow-remote needs CurveZMQ keys (--curve-secret-key and --curve-clients)")
    else:
        raise ValueError(f"unsupported ZeroMQ endpoint {cfg.zmq!r} (use tcp://host:port or ipc://path)")
    if cfg.curve_secret_key is not None:
        if cfg.curve_clients is None:
            raise ValueError("CurveZMQ needs --curve-clients DIR: the public keys (*.key) of the clients "
                             "allowed in; without it any client key would be served")
        check_client_folder(cfg.curve_clients)
    if cfg.osc is not None:
        host = cfg.osc.rsplit(":", 1)[0]
        if not is_loopback(host) and not cfg.allow_remote:
            raise ValueError(f"OSC on {cfg.osc} is not loopback: OSC has no authentication; "
                             "it needs --allow-remote")
        if cfg.osc_output is None or not cfg.osc_inputs:
            raise ValueError("OSC needs --osc-input (one or more folders) and --osc-output")


class Daemon:
    """Load a bundle and serve it. Use `start()` / `stop()` (or `with Daemon(cfg) as d:`)."""

    def __init__(self, cfg: DaemonConfig, bundle: Bundle | None = None):
        check_security(cfg)
        self.cfg = cfg
        self.bundle = bundle or Bundle.load(cfg.bundle, providers=cfg.providers, threads=cfg.threads)
        b = self.bundle
        self.model = model_info(b)
        self.worker = Worker(b, cfg.limits, int(cfg.encode_cache_mb * (1 << 20)))
        self.ctx = zmq.Context()
        self.stop_event = threading.Event()
        self.auth: ThreadAuthenticator | None = None
        self.zmq: ZmqFront | None = None
        self.osc: OscFront | None = None
        self.threads: list[threading.Thread] = []
        try:
            self._open_fronts()
        except BaseException:
            self._close_unstarted()
            raise

    def _open_fronts(self) -> None:
        """Start the authenticator (CurveZMQ), bind ZeroMQ and OSC. Raises ValueError when an
        address cannot be bound."""
        cfg = self.cfg
        if cfg.curve_secret_key is not None:
            self.auth = start_authenticator(self.ctx, cfg.curve_clients)  # type: ignore[arg-type]
        self.zmq = ZmqFront(self.ctx, cfg.zmq, self.worker, self.model, self.hello(), cfg.limits,
                            cfg.heartbeat_s, cfg.curve_secret_key)
        if cfg.osc is not None:
            host, port = cfg.osc.rsplit(":", 1)
            self.osc = OscFront(host.strip("[]"), int(port), self.worker, self.model, cfg.limits,
                                cfg.osc_inputs, cfg.osc_output)  # type: ignore[arg-type]

    def hello(self) -> dict[str, Any]:
        """Body of the `hello` reply (capabilities)."""
        b = self.bundle
        W = b.window_frames
        return {"protocol_version": P.PROTOCOL_VERSION, "model": b.model_name, "stems": list(b.stems),
                "sample_rate": b.sample_rate, "window_seconds": W * b.D / b.sample_rate,
                "overlap_seconds": default_overlap(W) * b.D / b.sample_rate,
                "samplers": sorted(sampling.SAMPLERS), "default_steps": b.sampler_defaults.steps,
                "schedules": sorted(sampling.SCHEDULES), "default_schedule": b.sampler_defaults.schedule,
                "max_resample": sampling.MAX_RESAMPLE, "default_resample": b.sampler_defaults.resample,
                "max_guidance": MAX_GUIDANCE, "default_guidance": b.sampler_defaults.guidance,
                "max_candidates": MAX_SELECT, "default_candidates": b.sampler_defaults.bass_drums_select,
                "providers": b.providers, "limits": self.cfg.limits.to_dict()}

    @property
    def endpoint(self) -> str:
        """The bound ZeroMQ endpoint (the real port when 0 was asked for)."""
        assert self.zmq is not None
        return self.zmq.endpoint

    def start(self) -> "Daemon":
        self.worker.start()
        self.threads.append(threading.Thread(target=self._run_zmq, name="msldm-zmq", daemon=True))
        if self.osc is not None:
            self.threads.append(threading.Thread(target=self.osc.run, name="msldm-osc", daemon=True))
        for t in self.threads:
            t.start()
        log.info("serving %s on %s%s (providers %s)", self.bundle.model_name, self.endpoint,
                 f" and OSC udp port {self.osc.port}" if self.osc else "", self.bundle.providers)
        return self

    def _run_zmq(self) -> None:
        assert self.zmq is not None
        try:
            self.zmq.run(self.stop_event)
        finally:
            self.zmq.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel all jobs, let their last messages out, close everything. Idempotent."""
        if self.stop_event.is_set():
            return
        self.worker.stop(timeout)
        self.stop_event.set()
        if not self.threads:  # never started: nothing serves; close what __init__ opened
            self._close_unstarted()
            return
        if self.osc is not None:
            self.osc.shutdown()
        for t in self.threads:
            t.join(timeout)
        if any(t.is_alive() for t in self.threads):
            log.warning("a front-end thread did not stop in %.0f s; not waiting for it", timeout)
        else:
            self._stop_auth()
            self.ctx.term()

    def _close_unstarted(self) -> None:
        """Close whatever `__init__` opened, when no front-end thread runs."""
        if self.zmq is not None:
            self.zmq.close()
        if self.osc is not None:
            self.osc.shutdown(running=False)
        self._stop_auth()
        self.ctx.term()

    def _stop_auth(self) -> None:
        if self.auth is not None:
            self.auth.stop()
            self.auth = None

    def __enter__(self) -> "Daemon":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve(cfg: DaemonConfig, ready: Any = None) -> None:
    """Run a daemon until SIGINT or SIGTERM (main thread only). `ready(daemon)` is called
    once it serves (the CLI prints the endpoints)."""
    done = threading.Event()
    daemon = Daemon(cfg).start()
    previous = {s: signal.signal(s, lambda *_: done.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if ready is not None:
            ready(daemon)
        while not done.wait(0.2):
            pass
        log.info("signal received: stopping")
    finally:
        daemon.stop()
        for s, h in previous.items():
            signal.signal(s, h)
