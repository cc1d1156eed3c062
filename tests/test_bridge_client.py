"""The bridge client against a live daemon (tiny hand-built bundle, real sockets on
loopback, free ports). Also home of the daemon fixtures the other bridge/DAW tests import."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from plugin_bridge.client import (Chunk, Client, DaemonError, DaemonUnavailable, Done, GenerateRequest, GivenStem,
                                  Heartbeat, JobCancelled, JobLost, Progress, Queued)
from server_fixtures import tiny_bundle  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]
SR = 48000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def daemon_in_process(bundle: Path, zmq: str = "tcp://127.0.0.1:0", heartbeat_s: float = 1.0) -> Iterator:
    """A started `server.daemon.Daemon` (threads in this process); always stopped."""
    from server.daemon import Daemon, DaemonConfig
    d = Daemon(DaemonConfig(bundle=bundle, zmq=zmq, heartbeat_s=heartbeat_s)).start()
    try:
        yield d
    finally:
        d.stop()


@contextlib.contextmanager
def daemon_subprocess(bundle: Path, zmq: str = "tcp://127.0.0.1:0") -> Iterator[tuple[subprocess.Popen, str]]:
    """`python -m server serve` (default: on a free port); yields (process, endpoint); always killed."""
    proc = subprocess.Popen([sys.executable, "-m", "server", "serve", "--bundle", str(bundle),
                             "--zmq", zmq, "--log-level", "WARNING"],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # "READY {json}" once it serves
        assert line.startswith("READY "), f"daemon did not start: {line!r}"
        yield proc, json.loads(line[6:])["zmq"]
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()


@pytest.fixture(scope="module")
def live_daemon(tiny_bundle):  # noqa: F811
    with daemon_in_process(tiny_bundle, heartbeat_s=0.1) as d:
        yield d


def tone(freq: float, seconds: float, rate: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def long_request(seconds: float = 30.0) -> GenerateRequest:
    """A job that runs for minutes with the tiny bundle (1000 steps per window)."""
    return GenerateRequest(generate=("bass",), given=(GivenStem("drums", tone(100, seconds, 22050), 22050),),
                           steps=1000, seed=0)


def test_round_trip_streams_progress_to_100_and_chunks(live_daemon):
    drums, keys = tone(110, 2.0), np.stack([tone(330, 2.0)] * 2, axis=1)  # mono and stereo
    req = GenerateRequest(generate=("bass", "guitar"), given=(GivenStem("drums", drums, SR), GivenStem("piano", keys, SR)),
                          seed=7, steps=3, region={"tempo": 120.0, "start_bar": 9})
    events = []
    with Client(live_daemon.endpoint) as c:
        result = c.generate_blocking(req, on_event=events.append)
    assert isinstance(events[0], Queued) and isinstance(events[-1], Done)
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[-1].step == progress[-1].total and progress[-1].fraction == 1.0
    assert [p.step for p in progress] == sorted(p.step for p in progress)
    assert {e.stem for e in events if isinstance(e, Chunk)} == {"bass", "guitar"}
    assert result.sample_rate == SR and set(result.stems) == {"bass", "guitar"}
    assert all(a.shape == (2 * SR,) and a.dtype == np.float32 and np.abs(a).max() > 0 for a in result.stems.values())
    assert result.done.seed == 7 and result.done.steps == 3 and result.done.region == {"tempo": 120.0, "start_bar": 9}


def test_same_seed_same_stems(live_daemon):
    req = GenerateRequest(generate=("bass",), given=(GivenStem("drums", tone(110, 1.0), SR),), seed=3, steps=2)
    with Client(live_daemon.endpoint) as c:
        a, b = c.generate_blocking(req), c.generate_blocking(req)
        other = c.generate_blocking(GenerateRequest(**{**req.__dict__, "seed": 4}))
    np.testing.assert_array_equal(a.stems["bass"], b.stems["bass"])
    assert not np.array_equal(a.stems["bass"], other.stems["bass"])


def test_cancel_ends_the_job_and_the_client_stays_usable(live_daemon):
    with Client(live_daemon.endpoint) as c:
        job = c.submit(long_request())
        t0, seen = time.monotonic(), []
        with pytest.raises(JobCancelled) as e:
            for event in job:
                seen.append(event)
                if isinstance(event, Progress):
                    job.cancel()
        assert e.value.code == "cancelled" and time.monotonic() - t0 < 10
        assert any(isinstance(ev, Progress) for ev in seen) and not any(isinstance(ev, Done) for ev in seen)
        assert c.ping() < 1.0 and _jobs_drain(c) == []


def _jobs_drain(c: Client, wait: float = 2.0) -> list:
    """`status` jobs once the daemon's worker has let go of a finished job (the terminal
    message can reach us a moment before the worker clears its `running` slot)."""
    deadline = time.monotonic() + wait
    while (jobs := c.status()["jobs"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return jobs


def test_cancel_from_another_thread(live_daemon):
    import threading
    with Client(live_daemon.endpoint) as c:
        job = c.submit(long_request())
        timer = threading.Timer(0.3, job.cancel)
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(JobCancelled):
            for _ in job:
                pass
        timer.join()
        assert 0.25 < time.monotonic() - t0 < 5.0


def test_heartbeats_arrive_during_a_job_and_status_lists_it(live_daemon):
    with Client(live_daemon.endpoint) as c:
        job = c.submit(long_request())
        beats = []
        with pytest.raises(JobCancelled):
            for event in job:
                if isinstance(event, Heartbeat):
                    beats.append(event)
                    if len(beats) == 2:
                        assert [j["job_id"] for j in c.status()["jobs"]] == [job.job_id]
                        job.cancel()
        assert all(job.job_id in b.jobs for b in beats)


def test_daemon_down_gives_the_clear_message_fast():
    url = f"tcp://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(DaemonUnavailable, match=r"start it with `msldm serve`"):
        Client(url, ping_timeout=0.5)
    assert time.monotonic() - t0 < 3.0


def test_a_daemon_that_refuses_the_handshake_never_hangs_the_client(tiny_bundle, tmp_path):  # noqa: F811
    """A CurveZMQ daemon and a client without keys: the handshake fails and the DEALER may
    be left with no pipe, where a plain send would block for ever. It must raise instead."""
    import zmq
    import zmq.auth
    from server.daemon import Daemon, DaemonConfig
    _, server_secret = zmq.curve_keypair()
    zmq.auth.create_certificates(str(tmp_path), "someone-else")
    cfg = DaemonConfig(bundle=tiny_bundle, zmq="tcp://127.0.0.1:0", allow_remote=True,
                       curve_secret_key=server_secret, curve_clients=tmp_path)
    with Daemon(cfg) as d, Client(d.endpoint, timeout=0.5, ping_timeout=0.5, check_on_connect=False) as c:
        time.sleep(0.3)  # let the handshake fail
        t0 = time.monotonic()
        for _ in range(3):
            with pytest.raises(DaemonUnavailable):
                c.ping()
        assert time.monotonic() - t0 < 10.0


def test_client_finds_a_daemon_started_or_restarted_later(tiny_bundle):  # noqa: F811
    url = f"tcp://127.0.0.1:{free_port()}"
    with Client(url, ping_timeout=0.3, timeout=3.0, check_on_connect=False) as c:
        with pytest.raises(DaemonUnavailable):
            c.ping()
        with daemon_in_process(tiny_bundle, zmq=url):
            assert c.hello()["model"] == "handmade-tiny"
        with pytest.raises(DaemonUnavailable):
            c.ping()
        with daemon_in_process(tiny_bundle, zmq=url):  # a restarted daemon, same address
            assert c.ping() < 1.0 and c.status()["jobs"] == []


def test_daemon_killed_mid_job_raises_job_lost(tiny_bundle):  # noqa: F811
    with daemon_subprocess(tiny_bundle) as (proc, url):
        with Client(url, ping_timeout=0.5, silence_timeout=0.5) as c:
            job = c.submit(long_request())
            t_kill = None
            with pytest.raises(JobLost, match="stopped answering"):
                for event in job:
                    if isinstance(event, Progress) and t_kill is None:
                        proc.kill()
                        t_kill = time.monotonic()
            assert t_kill is not None and time.monotonic() - t_kill < 5.0


def test_daemon_restarted_mid_job_raises_job_lost(tiny_bundle):  # noqa: F811
    url = f"tcp://127.0.0.1:{free_port()}"
    with contextlib.ExitStack() as stack:
        proc, _ = stack.enter_context(daemon_subprocess(tiny_bundle, url))
        c = stack.enter_context(Client(url, ping_timeout=1.0, silence_timeout=0.5))
        job = c.submit(long_request())
        with pytest.raises(JobLost, match="no longer knows job"):
            for event in job:
                if isinstance(event, Progress) and proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
                    stack.enter_context(daemon_in_process(tiny_bundle, zmq=url))  # same address, new daemon


def test_refused_request_raises_daemon_error_with_stable_code(live_daemon):
    with Client(live_daemon.endpoint) as c:
        bad = GenerateRequest(generate=("kazoo",), given=(GivenStem("drums", tone(110, 0.5), SR),))
        with pytest.raises(DaemonError) as e:
            c.generate_blocking(bad)
        assert e.value.code == "unknown_stem" and not c.jobs
        conflict = GenerateRequest(generate=("drums",), given=(GivenStem("drums", tone(110, 0.5), SR),))
        with pytest.raises(DaemonError, match="stem_conflict"):
            c.generate_blocking(conflict)


BRIDGE_MAY_IMPORT_FROM_MSLDM = ("msldm", "msldm.atomic", "msldm.cli_common", "msldm.hashing", "msldm.wavio")
"""The light modules the bridge shares with the core (tests/test_layering.py keeps them light)."""


def test_bridge_imports_no_torch_onnxruntime_server_or_core():
    code = ("import sys; import plugin_bridge.cli, plugin_bridge.client, plugin_bridge.wavio, "
            "plugin_bridge.adapters.ardour.session_xml, plugin_bridge.adapters.ardour.render, "
            "plugin_bridge.adapters.ardour.__main__, plugin_bridge.adapters.reaper.logic; "
            f"ok = {BRIDGE_MAY_IMPORT_FROM_MSLDM!r}; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnxruntime', 'server') "
            "or (m.split('.')[0] == 'msldm' and m not in ok)); "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
