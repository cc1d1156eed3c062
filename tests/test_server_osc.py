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

import numpy as np
import pytest
import soundfile as sf
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
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
                               "generate=drums,piano", "output_sample_rate=48000"], check=True)
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
    assert not (out / "slow").exists() and _temporaries(out) == []  # no stem, no temporary file


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
        while not list(out.glob(".take.*.tmp/*.wav")) and time.monotonic() < end:
            time.sleep(0.01)  # first window written to the temporary folder
        assert list(out.glob(".take.*.tmp/*.wav")), "no window was written before SIGTERM"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, proc.stderr.read()
        assert r.wait("/msldm/done")[2] == "shutting_down"
    finally:
        r.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (out / "take").exists() and _temporaries(out) == []


def test_output_sample_rate_option_and_its_old_name():
    """`output_sample_rate=` is the protocol's name; `sample_rate=` (the name before one
    name per concept) still sets the same field."""
    from types import SimpleNamespace

    from server.osc_front import OscFront

    front = SimpleNamespace(model=SimpleNamespace(stems=("bass", "drums")))
    for option in ("output_sample_rate=48000", "sample_rate=48000"):
        header, pcm = OscFront._request(front, "j1", ["generate=bass", option, "duration=2"])
        assert header["output_sample_rate"] == 48000 and "sample_rate" not in header
        assert header["generate"] == ["bass"] and header["duration"] == 2.0 and pcm == []
    # tempo and meter become the protocol's region, which the take ranking's grid reads
    header, _ = OscFront._request(front, "j2", ["generate=bass", "duration=2", "tempo=92.5", "meter=6/8"])
    assert header["region"] == {"tempo": 92.5, "meter": [6, 8]}


def test_stems_that_cannot_be_published_are_an_error_reply_and_leave_nothing(tmp_path):
    """The final rename fails (here: a file stands at the job's folder name): the client
    hears `/msldm/error` instead of nothing, no stem is published and no temporary is left."""
    from types import SimpleNamespace

    import numpy as np

    from server.osc_front import OscSink
    from server.outputs import JobOutput

    sent = []
    front = SimpleNamespace(send=lambda to, address, *args: sent.append((address, *args)))
    job = SimpleNamespace(job_id="j1", request=SimpleNamespace(generate=["bass", "drums"], output_sample_rate=22050,
                                                           takes=1, seeds=[0]))
    sink = OscSink(front, ("127.0.0.1", 9), JobOutput(tmp_path, "j1"))
    for stem in ("bass", "drums"):
        sink.chunk(job, stem, 0, np.zeros(100, np.float32), 0, True)
    (tmp_path / "j1").write_text("in the way")
    sink.done(job, {})
    assert sent[-1][:3] == ("/msldm/error", "j1", "bad_path") and "could not write" in sent[-1][3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j1"] and (tmp_path / "j1").is_file()


def test_a_daemon_stopped_before_it_started_does_not_hang(tiny_bundle, folders):  # noqa: F811
    inp, out, _ = folders
    d = Daemon(DaemonConfig(bundle=tiny_bundle, zmq="tcp://127.0.0.1:0", osc="127.0.0.1:0",
                            osc_inputs=(inp,), osc_output=out))
    t0 = time.monotonic()
    d.stop()
    assert time.monotonic() - t0 < 10


# ----------------------------------------------------------------------------- issue 14

def _send(daemon, args_address: str, args: list) -> None:
    SimpleUDPClient("127.0.0.1", daemon.osc.port).send_message(args_address, args)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400"])
def test_osc_non_finite_duration_is_bad_field(osc_daemon, value):
    """Fault 2: these were `internal` errors with an empty job id."""
    r = Replies()
    try:
        _send(osc_daemon, "/msldm/generate", ["nf", r.port, "generate=drums", f"duration={value}"])
        reply = r.wait("/msldm/queued")
    finally:
        r.close()
    assert reply[:3] == ["/msldm/error", "nf", "bad_field"], reply


def test_osc_errors_carry_the_requests_job_id(osc_daemon, monkeypatch):
    """Fault 8: `bad_path` and `internal` errors came with an empty job id."""
    r = Replies()
    try:
        _send(osc_daemon, "/msldm/generate", ["withpath", r.port, "bass=nope.wav", "generate=drums"])
        assert r.wait("/msldm/queued")[:3] == ["/msldm/error", "withpath", "bad_path"]

        def broken(job):
            raise RuntimeError("a bug")
        monkeypatch.setattr(osc_daemon.worker, "submit", broken)
        _send(osc_daemon, "/msldm/generate", ["buggy", r.port, "generate=drums", "duration=1"])
        assert r.wait("/msldm/queued")[:3] == ["/msldm/error", "buggy", "internal"]
    finally:
        r.close()


def test_osc_packets_over_8_kib_are_answered(osc_daemon):
    """Fault 8: packets over 8,192 bytes were cut by the receive buffer and dropped with
    no reply. A big packet is read whole; one that is not OSC gets `malformed_message`."""
    r = Replies()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        _send(osc_daemon, "/msldm/generate", ["big", r.port, "generate=drums", "duration=1",
                                              "steps=2", "x" * 20_000])
        assert r.wait("/msldm/queued")[:3] == ["/msldm/error", "big", "bad_field"]
        sock.sendto(b"/msldm/generate\x00garbage" + b"\xff" * 10_000, ("127.0.0.1", osc_daemon.osc.port))
        sock.settimeout(5)
        data, _ = sock.recvfrom(65536)
        m = OscMessage(data)
        assert m.address == "/msldm/error" and m.params[:2] == ["", "malformed_message"], m.params
    finally:
        sock.close()
        r.close()


@needs_liblo
def test_the_documented_osc_example_works_as_written(osc_daemon, folders):
    """Fault 8: the document's `oscsend` line (type string `sis` for four arguments) made
    the daemon answer `nothing_requested`. Run the line from docs/protocol.md itself."""
    inp, out, _ = folders
    (inp / "take1").mkdir()
    shutil.copy(inp / "bass.wav", inp / "take1" / "bass.wav")
    doc = (ROOT / "docs" / "protocol.md").read_text()
    line = next(ln.strip() for ln in doc.splitlines() if ln.strip().startswith("oscsend "))
    argv = line.split()
    r = Replies()
    try:
        argv = [str(osc_daemon.osc.port) if a == "9000" else str(r.port) if a == "9001" else a for a in argv]
        subprocess.run(argv, check=True)
        assert r.wait("/msldm/queued")[:2] == ["/msldm/queued", "take1"]
        done = r.wait("/msldm/done", 30)
    finally:
        r.close()
    assert done[:2] == ["/msldm/done", "take1"], done
    assert sorted(p.name for p in (out / "take1").iterdir()) == ["drums.wav", "piano.wav"]


def _serve_osc(bundle, inp, out) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "server", "serve", "--bundle", str(bundle), "--zmq",
           "tcp://127.0.0.1:0", "--osc", "127.0.0.1:0", "--osc-input", str(inp), "--osc-output", str(out),
           "--log-level", "WARNING"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, json.loads(proc.stdout.readline().split(" ", 1)[1])["osc_port"]


def test_sigkill_mid_job_leaves_no_stem_and_a_restart_sweeps_the_temporaries(tiny_bundle, folders):  # noqa: F811
    """Fault 5: after a SIGKILL, `.part` files stayed for ever, and a job's stems could be
    half published. Now the final folder holds all of a job's stems or does not exist,
    and the next start removes what the killed daemon left."""
    inp, out, _ = folders
    proc, port = _serve_osc(tiny_bundle, inp, out)
    r = Replies()
    try:
        SimpleUDPClient("127.0.0.1", port).send_message(
            "/msldm/generate", ["take", r.port, "bass=bass.wav", "generate=drums,guitar", "steps=400"])
        assert r.wait("/msldm/queued")[0] == "/msldm/queued"
        end = time.monotonic() + 20
        while not _temporaries(out) and time.monotonic() < end:
            time.sleep(0.01)
        assert _temporaries(out), "no window was written before SIGKILL"
        proc.kill()
        proc.wait(10)
        assert not (out / "take").exists() or sorted(p.name for p in (out / "take").iterdir()) in (
            [], ["drums.wav", "guitar.wav"])
        proc, port = _serve_osc(tiny_bundle, inp, out)
        assert _temporaries(out) == []
    finally:
        r.close()
        proc.kill()
        proc.wait(10)


def _temporaries(out: Path) -> list[Path]:
    """Hidden temporary files or folders anywhere under `out`."""
    return sorted(p for p in out.rglob(".*"))


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback on this host")
def test_osc_on_ipv6_loopback(tiny_bundle, folders):  # noqa: F811
    """Fault 7: `[::1]` (here for OSC) used to fail at start-up."""
    inp, out, _ = folders
    cfg = DaemonConfig(bundle=tiny_bundle, zmq="tcp://[::1]:0", osc="[::1]:0", osc_inputs=(inp,), osc_output=out)
    with Daemon(cfg) as d, socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind(("::1", 0))
        s.settimeout(5)
        b = OscMessageBuilder("/msldm/ping")
        s.sendto(b.build().dgram, ("::1", d.osc.port))
        assert OscMessage(s.recvfrom(65536)[0]).address == "/msldm/pong"


def test_osc_takes_write_one_file_per_stem_and_seed(osc_daemon, folders):
    _, out, _ = folders
    r = Replies()
    try:
        _send(osc_daemon, "/msldm/generate", ["tk", r.port, "bass=bass.wav", "generate=drums,piano", "seed=3",
                                              "takes=2", "tempo=120", "meter=4/4"])
        assert r.wait("/msldm/queued")[:2] == ["/msldm/queued", "tk"]
        takes = r.wait("/msldm/takes", timeout=30)  # sent just before done: each take's estimated fit
        assert takes[:2] == ["/msldm/takes", "tk"], takes
        ranked = json.loads(takes[2])
        assert [t["seed"] for t in ranked] == [3, 4] and sorted(t["rank"] for t in ranked) == [1, 2]
        assert all(0.0 <= t["fit"] <= 1.0 and set(t["stem_fit"]) == {"drums", "piano"} for t in ranked)
        done = r.wait("/msldm/done", timeout=30)
        assert done[:2] == ["/msldm/done", "tk"]
        names = sorted(Path(p).name for p in done[2:])
        assert names == ["drums.seed3.wav", "drums.seed4.wav", "piano.seed3.wav", "piano.seed4.wav"]
        assert sorted(p.name for p in (out / "tk").iterdir()) == names
        a, b = (sf.read(str(out / "tk" / f"drums.seed{s}.wav"), dtype="float32")[0] for s in (3, 4))
        assert a.shape == b.shape and np.abs(a - b).max() > 1e-3
    finally:
        r.close()


@pytest.mark.parametrize("bad", ["tempo=0", "tempo=fast", "tempo=nan", "meter=4", "meter=0/4", "meter=a/b"])
def test_osc_refuses_a_bad_tempo_or_meter(osc_daemon, folders, bad):
    r = Replies()
    try:
        _send(osc_daemon, "/msldm/generate", ["tm", r.port, "bass=bass.wav", "generate=drums", bad])
        err = r.wait("/msldm/error")
        assert err[1:3] == ["tm", "bad_field"] and bad.split("=")[0] in err[3], err
    finally:
        r.close()


@pytest.mark.parametrize("field, good, bad", [("silent_retries", "0", "9"), ("level", "model", "loud")])
def test_osc_passes_an_option_on_and_refuses_a_bad_value(osc_daemon, folders, field, good, bad):
    r = Replies()
    try:
        _send(osc_daemon, "/msldm/generate", ["ok0", r.port, "bass=bass.wav", "generate=drums", f"{field}={good}"])
        assert r.wait("/msldm/done", timeout=30)[:2] == ["/msldm/done", "ok0"]
        _send(osc_daemon, "/msldm/generate", ["bad9", r.port, "bass=bass.wav", "generate=drums", f"{field}={bad}"])
        err = r.wait("/msldm/error")
        assert err[1:3] == ["bad9", "bad_field"] and field in err[3], err
    finally:
        r.close()


def test_osc_refuses_a_bad_candidates_value(osc_daemon, folders):
    r = Replies()
    try:
        _send(osc_daemon, "/msldm/generate", ["c9", r.port, "bass=bass.wav", "generate=drums", "candidates=9"])
        err = r.wait("/msldm/error")
        assert err[1:3] == ["c9", "bad_field"] and "candidates" in err[3], err
        _send(osc_daemon, "/msldm/generate", ["c1", r.port, "bass=bass.wav", "generate=drums", "candidates=1"])
        assert r.wait("/msldm/done", timeout=30)[:2] == ["/msldm/done", "c1"]
    finally:
        r.close()


def test_osc_passes_guidance_on_and_refuses_a_bad_value(osc_daemon, folders):
    r = Replies()
    try:
        _send(osc_daemon, "/msldm/generate", ["g3", r.port, "bass=bass.wav", "generate=drums", "guidance=2.5"])
        assert r.wait("/msldm/done", timeout=30)[:2] == ["/msldm/done", "g3"]
        for job, value in (("g9", "9"), ("gx", "tight")):
            _send(osc_daemon, "/msldm/generate", [job, r.port, "bass=bass.wav", "generate=drums", f"guidance={value}"])
            err = r.wait("/msldm/error")
            assert err[1:3] == [job, "bad_field"] and "guidance" in err[3], err
    finally:
        r.close()
