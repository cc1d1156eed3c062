"""The OSC front end, driven by liblo-tools (oscsend / oscdump) and plain UDP; SIGTERM mid-job."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf
from pythonosc.osc_message import OscMessage
from pythonosc.udp_client import SimpleUDPClient

from server_fixtures import tiny_bundle, tone  # noqa: F401
from server.daemon import Daemon, DaemonConfig

ROOT = Path(__file__).resolve().parents[1]
needs_liblo = pytest.mark.skipif(not (shutil.which("oscsend") and shutil.which("oscdump")),
                                 reason="liblo-tools (oscsend, oscdump) not installed")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Replies:
    """A UDP socket collecting OSC replies."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def wait(self, address: str, timeout: float = 10.0) -> list:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.sock.settimeout(max(0.01, end - time.monotonic()))
            try:
                data, _ = self.sock.recvfrom(65536)
            except socket.timeout:
                break
            m = OscMessage(data)
            if m.address == address or m.address == "/msldm/error":
                return [m.address, *m.params]
        raise TimeoutError(f"no {address} reply")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture()
def folders(tmp_path):
    inp, out, secret = tmp_path / "in", tmp_path / "out", tmp_path / "secret"
    for d in (inp, out, secret):
        d.mkdir()
    sf.write(inp / "bass.wav", tone(1.2, 44100, channels=2), 44100, subtype="FLOAT")
    sf.write(secret / "private.wav", tone(0.5, 22050), 22050)
    (inp / "link.wav").symlink_to(secret / "private.wav")
    return inp, out, secret


@pytest.fixture()
def osc_daemon(tiny_bundle, folders):  # noqa: F811
    inp, out, _ = folders
    cfg = DaemonConfig(bundle=tiny_bundle, zmq="tcp://127.0.0.1:0", osc="127.0.0.1:0",
                       osc_inputs=(inp,), osc_output=out)
    with Daemon(cfg) as d:
        yield d


@needs_liblo
def test_osc_round_trip_with_liblo(osc_daemon, folders):
    _, out, _ = folders
    port, dump_port = osc_daemon.osc.port, free_udp_port()
    dump = subprocess.Popen(["oscdump", "-L", str(dump_port)], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)
        send = ["oscsend", "localhost", str(port)]
        subprocess.run(send + ["/msldm/ping", "i", str(dump_port)], check=True)
        subprocess.run(send + ["/msldm/generate", "sisss", "take1", str(dump_port), "bass=bass.wav",
                               "generate=drums,piano", "sample_rate=48000"], check=True)
        lines = _read_until(dump, "/msldm/done", 20)
    finally:
        dump.terminate()
        dump.wait(5)
    assert any(line.startswith("/msldm/pong") for line in lines)
    assert any(line.startswith("/msldm/queued") for line in lines)
    assert any(line.startswith("/msldm/progress") for line in lines)
    done = [line for line in lines if line.startswith("/msldm/done")][0]
    for stem in ("drums", "piano"):
        path = out / "take1" / f"{stem}.wav"
        assert str(path.resolve()) in done
        info = sf.info(str(path))
        assert info.samplerate == 48000 and info.frames == round(1.2 * 48000)
    assert sorted(p.name for p in (out / "take1").iterdir()) == ["drums.wav", "piano.wav"]


def _read_until(proc: subprocess.Popen, needle: str, timeout: float) -> list[str]:
    lines, end = [], time.monotonic() + timeout
    os.set_blocking(proc.stdout.fileno(), False)
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            time.sleep(0.02)
            continue
        lines.append(line.split(" ", 1)[-1].strip())  # oscdump prefixes a timestamp
        if lines[-1].startswith(needle) or lines[-1].startswith("/msldm/error"):
            return lines
    raise TimeoutError(f"no {needle} in {lines}")


@pytest.mark.parametrize("path", ["../secret/private.wav", "link.wav", "nope.wav", "SECRET_ABS"])
def test_osc_paths_cannot_leave_the_input_folders(osc_daemon, folders, path):
    _, out, secret = folders
    path = str(secret / "private.wav") if path == "SECRET_ABS" else path
    r = Replies()
    try:
        SimpleUDPClient("127.0.0.1", osc_daemon.osc.port).send_message(
            "/msldm/generate", ["j", r.port, f"bass={path}", "generate=drums"])
        reply = r.wait("/msldm/queued")
    finally:
        r.close()
    assert reply[0] == "/msldm/error" and reply[2] == "bad_path", reply
    assert not any(out.iterdir())


def test_osc_bad_job_id_and_cancel(osc_daemon, folders):
    _, out, _ = folders
    r = Replies()
    c = SimpleUDPClient("127.0.0.1", osc_daemon.osc.port)
    try:
        c.send_message("/msldm/generate", ["../evil", r.port, "bass=bass.wav", "generate=drums"])
        assert r.wait("/msldm/queued")[2] == "bad_field"
        c.send_message("/msldm/status", [r.port])
        assert json.loads(r.wait("/msldm/status")[1])["running"] == 0
        c.send_message("/msldm/generate", ["slow", r.port, "generate=drums", "duration=60", "steps=1000"])
        assert r.wait("/msldm/queued")[0] == "/msldm/queued"
        r.wait("/msldm/progress")
        c.send_message("/msldm/cancel", ["slow", r.port])
        assert r.wait("/msldm/done")[2] == "cancelled"
        c.send_message("/msldm/nothing", [])
        c.send_message("/msldm/ping", [r.port])
        assert r.wait("/msldm/pong")[0] == "/msldm/pong"
    finally:
        r.close()
    assert list((out / "slow").iterdir()) == []  # no stem, no temporary file


def test_sigterm_mid_job_leaves_no_partial_file(tiny_bundle, folders):  # noqa: F811
    inp, out, _ = folders
    cmd = [sys.executable, "-m", "server", "serve", "--bundle", str(tiny_bundle), "--zmq",
           "tcp://127.0.0.1:0", "--osc", "127.0.0.1:0", "--osc-input", str(inp), "--osc-output", str(out),
           "--log-level", "WARNING"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    r = Replies()
    try:
        ready = json.loads(proc.stdout.readline().split(" ", 1)[1])
        c = SimpleUDPClient("127.0.0.1", ready["osc_port"])
        c.send_message("/msldm/generate", ["take", r.port, "bass=bass.wav", "generate=drums,guitar",
                                           "steps=400"])
        assert r.wait("/msldm/queued")[0] == "/msldm/queued"
        end = time.monotonic() + 20
        while not list((out / "take").glob(".*.part")) and time.monotonic() < end:
            time.sleep(0.01)  # first window written to the temporary file
        assert list((out / "take").glob(".*.part")), "no window was written before SIGTERM"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, proc.stderr.read()
        assert r.wait("/msldm/done")[2] == "shutting_down"
    finally:
        r.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert list((out / "take").iterdir()) == []


def test_a_stem_that_cannot_be_written_is_an_error_reply_and_leaves_no_part_file(tmp_path):
    """The final rename fails (here: a folder stands at a stem's name): the client hears
    `/msldm/error` instead of nothing, and no temporary stem is left behind."""
    from types import SimpleNamespace

    import numpy as np

    from server.osc_front import OscSink

    sent = []
    front = SimpleNamespace(send=lambda to, address, *args: sent.append((address, *args)))
    job = SimpleNamespace(job_id="j1", request=SimpleNamespace(requested=["bass", "drums"], out_rate=22050))
    sink = OscSink(front, ("127.0.0.1", 9), tmp_path)
    for stem in ("bass", "drums"):
        sink.chunk(job, stem, 0, np.zeros(100, np.float32), 0, True)
    (tmp_path / "drums.wav").mkdir()
    sink.done(job, {})
    assert sent[-1][:3] == ("/msldm/error", "j1", "bad_path") and "could not write" in sent[-1][3]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_a_daemon_stopped_before_it_started_does_not_hang(tiny_bundle, folders):  # noqa: F811
    inp, out, _ = folders
    d = Daemon(DaemonConfig(bundle=tiny_bundle, zmq="tcp://127.0.0.1:0", osc="127.0.0.1:0",
                            osc_inputs=(inp,), osc_output=out))
    t0 = time.monotonic()
    d.stop()
    assert time.monotonic() - t0 < 10
