"""Fuzz a real daemon with malformed messages; count the replies by error code.

    python -m server.fuzz --messages 10000 [--bundle DIR] [--seed 0] [--osc-share 0.1]

Starts `python -m server serve` on free loopback ports (ZeroMQ and OSC), sends seeded
random malformed messages one at a time (mutated headers: wrong types, overflowing
literals such as 1e400 and 2**70, missing fields, bad PCM frames, corrupt JSON; and OSC
packets with bad arguments or no OSC at all), waits for each answer, cancels any job that
was accepted anyway, and prints the counts plus the daemon's resident memory (VmRSS)
before and after and its peak (VmHWM). Exit status 1 when any answer was `internal`, any
message went unanswered, or the daemon died.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from plugin_bridge import protocol as P

ROOT = Path(__file__).resolve().parents[1]
# JSON text that parses but does not fit a double / a 64-bit integer, spliced in raw
LITERALS = {"INF": "1e400", "NINF": "-1e400", "BIG": str(2 ** 70), "NBIG": str(-(2 ** 70)),
            "U64": str(2 ** 64), "NAN": "NaN", "INFTY": "Infinity"}
WEIRD: list[Any] = [None, True, False, -1, 0, 1, 2 ** 31, 2 ** 63, 2 ** 64 - 1, 1e308, -0.0, 0.5, 3.7,
                    "", "x", "\u0000", "é" * 40, "a" * 300, [], {}, [1, 2], {"a": {"b": [None]}},
                    *(f"@{k}@" for k in LITERALS), ["@INF@"], {"t": "@BIG@"}]
FIELDS = ["job_id", "given", "generate", "seed", "steps", "sampler", "schedule", "resample", "guidance",
          "output_sample_rate", "duration", "region", "takes", "redo", "length", "silent_retries", "level"]
GIVEN_FIELDS = ["stem", "sample_rate", "channels", "frames"]


# ----------------------------------------------------------------------------- generators

def _text(h: dict[str, Any]) -> bytes:
    """JSON text of `h` with the "@NAME@" placeholders replaced by raw LITERALS."""
    t = json.dumps({"v": 1, **h})
    for k, lit in LITERALS.items():
        t = t.replace(f'"@{k}@"', lit)
    return t.encode()


def _valid_generate(rng: random.Random, i: int) -> tuple[dict[str, Any], list[bytes]]:
    n = rng.choice([0, 1, 2])
    audio = (0.1 * np.sin(np.arange(2205) / 7.0)).astype("<f4")
    given = [{"stem": s, "sample_rate": 22050, "channels": 1, "frames": 2205} for s in ["bass", "piano"][:n]]
    h = {"type": "generate", "job_id": f"f{i}", "given": given, "generate": ["drums"], "steps": 2,
         "duration": 0.1}
    return h, [audio.tobytes()] * n


def _mutate_generate(rng: random.Random, i: int) -> list[bytes]:
    h, pcm = _valid_generate(rng, i)
    kind = rng.randrange(7)
    if kind == 0 or (kind == 1 and not h["given"]):
        h[rng.choice(FIELDS)] = rng.choice(WEIRD)
    elif kind == 1:
        rng.choice(h["given"])[rng.choice(GIVEN_FIELDS)] = rng.choice(WEIRD)
    elif kind == 2:
        h.pop(rng.choice(["job_id", "given", "generate", "duration"]))
    elif kind == 3:  # PCM frames that do not match the header
        pcm = rng.choice([pcm + [b"\0" * 8], pcm[:-1], [p[:-rng.randint(1, 9)] for p in pcm],
                          [np.full(2205, rng.choice([np.nan, np.inf]), "<f4").tobytes()] * len(pcm),
                          [b"\0" * len(p) for p in pcm]])
    elif kind == 4:  # a region / token full of numbers nobody can use
        h["region"] = {"tempo": rng.choice(WEIRD), "start": {"seconds": rng.choice(WEIRD)}}
    elif kind == 5:  # a redo of a given stem with odd spans, bars and regions
        stem = rng.choice(["bass", "piano", "drums", rng.choice(WEIRD)])
        span = rng.choice([{"start": rng.choice(WEIRD), "end": rng.choice(WEIRD)}, {"bars": rng.choice(WEIRD)},
                           {"bars": [rng.randint(-3, 5), rng.randint(-3, 5)]}, {"start": 0.01, "end": 0.05}])
        h["redo"] = {"stem": stem, **span}
        h["generate"] = rng.choice([[stem], ["drums"], []])
        if rng.random() < 0.5:
            h["region"] = {"tempo": rng.choice([120, 2000, 0.001, rng.choice(WEIRD)]),
                           "meter": rng.choice([[4, 4], [7, 8], rng.choice(WEIRD)]),
                           "start_bar": rng.choice([1, -2, rng.choice(WEIRD)])}
        h["takes"] = rng.choice([1, 2, rng.choice(WEIRD)])
        h["silent_retries"] = rng.choice([0, 2, 4, rng.choice(WEIRD)])
        h["level"] = rng.choice(["balance", "model", rng.choice(WEIRD)])
    else:
        h[rng.choice(FIELDS)], h[rng.choice(FIELDS)] = rng.choice(WEIRD), rng.choice(WEIRD)
    return [_text(h), *pcm]


def _mutate_small(rng: random.Random, i: int) -> list[bytes]:
    """ping / hello / status / cancel / unknown types with odd fields."""
    h: dict[str, Any] = {"type": rng.choice(["ping", "hello", "status", "cancel", "chunk", "done", "x", "@INF@"])}
    for _ in range(rng.randrange(3)):
        h[rng.choice(["token", "job_id", "v", "type", "extra"])] = rng.choice(WEIRD)
    t = _text(h)
    return [t] if rng.random() < 0.8 else [t, b"\0" * rng.randrange(9)]


def _corrupt_text(rng: random.Random, i: int) -> list[bytes]:
    """Header frames that are not (strict, UTF-8) JSON objects, or barely are."""
    h, pcm = _valid_generate(rng, i)
    t = bytearray(_text(h))
    kind = rng.randrange(7)
    if kind == 0:
        t = t[: rng.randrange(len(t))]
    elif kind == 1:
        t[rng.randrange(len(t))] = rng.randrange(256)
    elif kind == 2:
        t = bytearray(rng.choice([b"", b"[]", b'"hi"', b"null", b"\xff\xfe", b"{", b'{"v": NaN}']))
    elif kind == 3:
        depth = rng.choice([50, 900, 5000])
        t = bytearray(b'{"type": "ping", "v": 1, "token": ' + b"[" * depth + b"]" * depth + b"}")
    elif kind == 4:
        t = bytearray(b'{"type": "ping", "v": 1, "token": "' + b"x" * (P.MAX_HEADER_BYTES + 10) + b'"}')
    elif kind == 5:
        t = bytearray(_text({"type": "ping", "v": rng.choice([0, -1, 2, "1", 1.0, "@INF@", "@BIG@"])}))
    else:
        t = bytearray(t.replace(b'"steps": 2', rng.choice([b'"steps": 2e400', b'"steps": 1' + b"0" * 30,
                                                           b'"steps": -Infinity'])))
    return [bytes(t), *pcm]


ZMQ_KINDS = (_mutate_generate, _mutate_generate, _mutate_small, _corrupt_text)
OSC_ARGS: list[Any] = ["duration=nan", "duration=inf", "duration=-inf", "duration=1e400", "seed=" + "9" * 30,
                       "steps=-1", "steps=x", "sample_rate=1", "bass=../../etc/passwd", "bass=nope.wav",
                       "generate=", "generate=kazoo", "generate=drums", "resample=99", "x" * 9000, "=",
                       float("nan"), float("inf"), 2 ** 31 - 1, -5, 0, 70000, b"\0\1", True, None, ""]


def osc_packets(rng: random.Random, i: int, reply_port: int) -> bytes:
    """One OSC packet (bad arguments) or a datagram that is not OSC. A valid port in a
    reply-port position is always `reply_port` (the daemon answers there, as it should)."""
    if rng.random() < 0.15:
        return rng.choice([b"", b"junk", b"/msldm/generate", b"/msldm/ping\0\0\0\0,i\0\0\0\0",
                           bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))])
    b = OscMessageBuilder(rng.choice(["/msldm/generate", "/msldm/generate", "/msldm/cancel", "/msldm/ping",
                                      "/msldm/status", "/msldm/nothing"]))
    first = rng.choice([f"o{i}", "../evil", "", ".hidden", 70_000, reply_port, 1.5])
    for a in [first] + [rng.choice(OSC_ARGS) for _ in range(rng.randrange(5))]:
        b.add_arg(a)
    return b.build().dgram


# ----------------------------------------------------------------------------- the run

class Daemon:
    """`python -m server serve` in a subprocess, with its ports and its memory."""

    def __init__(self, bundle: Path, work: Path):
        (work / "in").mkdir()
        (work / "out").mkdir()
        self.log = open(work / "daemon.log", "w+")
        cmd = [sys.executable, "-m", "server", "serve", "--bundle", str(bundle), "--zmq", "tcp://127.0.0.1:0",
               "--osc", "127.0.0.1:0", "--osc-input", str(work / "in"), "--osc-output", str(work / "out"),
               "--max-region-seconds", "2", "--log-level", "WARNING"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("READY "):
            raise RuntimeError(f"the daemon did not start: {line!r}")
        info = json.loads(line[6:])
        self.endpoint, self.osc_port = info["zmq"], info["osc_port"]

    def memory_kib(self) -> dict[str, int]:
        """{"VmRSS": kiB, "VmHWM": kiB} from /proc/<pid>/status."""
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
        return out

    def tracebacks(self) -> int:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().count("Traceback")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def _zmq_round(sock: zmq.Socket, frames: list[bytes], timeout: float) -> list[dict[str, Any]]:
    """Send one message; return its answer header (and, for an accepted job, its end)."""
    sock.send_multipart(frames)
    answers: list[dict[str, Any]] = []
    while True:
        if not sock.poll(int(timeout * 1000)):
            return answers
        try:
            h = P.decode(sock.recv_multipart(), incoming="s2c").header
        except P.ProtocolError as e:  # the daemon broke the protocol: count it, go on
            return answers + [{"type": "error", "code": f"invalid reply ({e.message})"}]
        if h["type"] in ("heartbeat", "progress", "chunk"):
            continue
        answers.append(h)
        if h["type"] == "queued":
            sock.send_multipart(P.encode({"type": "cancel", "job_id": h["job_id"]}))
            continue
        if len(answers) == 2 and h.get("code") != "cancelled":
            continue  # the job ended before the cancel arrived: the cancel gets `unknown_job`
        return answers


def _osc_round(sock: socket.socket, port: int, dgram: bytes, timeout: float) -> list[str]:
    """Send one OSC packet; return the answers' `address[:code]` (an accepted job is cancelled)."""
    sock.sendto(dgram, ("127.0.0.1", port))
    out: list[str] = []
    sock.settimeout(timeout)
    while True:
        try:
            m = OscMessage(sock.recvfrom(65536)[0])
        except socket.timeout:
            return out
        if m.address == "/msldm/progress":
            continue
        out.append(m.address + (f":{m.params[1]}" if m.address == "/msldm/error" else ""))
        if len(out) == 2 and out[1] != "/msldm/error:cancelled":
            continue  # the job ended before the cancel arrived: the cancel gets `unknown_job`
        if m.address != "/msldm/queued":
            return out
        b = OscMessageBuilder("/msldm/cancel")
        b.add_arg(m.params[0])
        sock.sendto(b.build().dgram, ("127.0.0.1", port))


def run(messages: int, bundle: Path, seed: int = 0, osc_share: float = 0.1,
        timeout: float = 5.0) -> dict[str, Any]:
    """Fuzz a fresh daemon with `messages` malformed messages; returns the report."""
    rng, counts, silent = random.Random(seed), collections.Counter(), 0
    examples: list[str] = []
    with tempfile.TemporaryDirectory(prefix="msldm-fuzz-") as tmp:
        d = Daemon(bundle, Path(tmp))
        ctx = zmq.Context()
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(d.endpoint)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        try:
            _zmq_round(dealer, P.encode({"type": "ping"}), timeout)
            before, t0 = d.memory_kib(), time.monotonic()
            for i in range(messages):
                if rng.random() < osc_share:
                    sent: Any = osc_packets(rng, i, udp.getsockname()[1])
                    names = ["osc " + a for a in _osc_round(udp, d.osc_port, sent, timeout)]
                else:
                    sent = rng.choice(ZMQ_KINDS)(rng, i)
                    names = [h["type"] if h["type"] != "error" else h["code"]
                             for h in _zmq_round(dealer, sent, timeout)]
                counts.update(names)
                if not names:
                    silent += 1
                    examples.append(repr(sent)[:300])
                if d.proc.poll() is not None:
                    break
            elapsed = time.monotonic() - t0
            after = d.memory_kib() if d.proc.poll() is None else {}
            alive = d.proc.poll() is None
        finally:
            dealer.close(0)
            ctx.term()
            udp.close()
            tracebacks = d.tracebacks()
            d.stop()
        internal = sum(n for k, n in counts.items() if k.endswith("internal"))
        return {"messages": messages, "seed": seed, "seconds": round(elapsed, 1), "internal": internal,
                "unanswered": silent, "daemon_alive": alive, "logged_tracebacks": tracebacks,
                "rss_kib_before": before.get("VmRSS"), "rss_kib_after": after.get("VmRSS"),
                "peak_rss_kib": after.get("VmHWM"), "answers": dict(counts.most_common()),
                "unanswered_examples": examples[:10]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m server.fuzz", description=__doc__.split("\n")[0],
                                 epilog="example:\n  python -m server.fuzz --messages 10000 --seed 0",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--bundle", type=Path, default=None, help="bundle folder (default: the bundled one)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--osc-share", type=float, default=0.1, help="fraction of the messages sent over OSC")
    args = ap.parse_args(argv)
    from server.cli import default_bundle
    report = run(args.messages, args.bundle or default_bundle(), args.seed, args.osc_share)
    print(json.dumps(report, indent=2))
    invalid = sum(n for k, n in report["answers"].items() if k.startswith("invalid reply"))
    ok = report["internal"] == 0 and report["unanswered"] == 0 and not invalid and report["daemon_alive"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
