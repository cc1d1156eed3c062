"""`msldm-bridge`: generate stems that fit given ones, through a running MSLDM daemon.

    msldm-bridge generate --given drums=drums.wav --given piano=keys.wav --generate bass,guitar \\
        --out stems/ --tempo 120 --meter 4/4 --start-bar 9 --seed 7
    msldm-bridge generate ... --takes 4                      # four takes in one request
    msldm-bridge generate --given bass=verse.seed7.bass.wav --given drums=drums.wav \\
        --redo bass --bars 5-6 --tempo 120 --meter 4/4 --start-bar 1 --out stems/  # bars 5-6 again
    msldm-bridge status
    msldm-bridge --server tcp://studio:5555 --curve-server-key server.key \\
        --curve-client-key laptop.key_secret status          # a remote daemon (CurveZMQ)

Progress goes to stderr as plain text; stdout gets, take by take (the daemon's best-ranked
take first when it ranked several, `docs/protocol.md`), one `stem<TAB>path` line per written
file and then `sidecar<TAB>path`, so DAW scripts can read it. Files are named by
region and seed (`<region>.seed<seed>.<stem>.wav`), so no take overwrites another. Exit codes: 0 ok, 1 the
daemon refused or failed the job, 2 no daemon / bad arguments, 130 cancelled (Ctrl-C).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import secrets
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from msldm import cli_common
from msldm.cli_common import SEED_HELP, add_alias, seed_or_fresh
from plugin_bridge import protocol as P
from plugin_bridge import wavio
from plugin_bridge.client import (DEFAULT_URL, BridgeError, Client, CurveKeys, DaemonError, DaemonUnavailable, Done,
                                  Event, GenerateRequest, GivenStem, JobCancelled, JobLost, Progress, Queued, Result)

EXAMPLE = ("example:\n  msldm-bridge generate --given drums=drums.wav --given piano=keys.wav "
           "--generate bass,guitar --out stems/ --tempo 120 --meter 4/4 --start-bar 9 --seed 7")


class ProgressBar(cli_common.ProgressBar):
    """The shared progress bar (`msldm.cli_common.ProgressBar`), fed the client's events:
    a queue position is one line, progress redraws the bar."""

    def __call__(self, event: Event) -> None:
        if isinstance(event, Queued) and event.position > 0:
            self.line(f"queued behind {event.position} job(s)")
        elif isinstance(event, Progress):
            self.update(event)


# ----------------------------------------------------------------------------- arguments

def _given(spec: str) -> tuple[str, Path]:
    stem, sep, path = spec.partition("=")
    if not sep or not stem or not path:
        raise argparse.ArgumentTypeError(f"--given wants STEM=PATH, got {spec!r}")
    return stem.strip(), Path(path)


def _meter(text: str) -> list[int]:
    num, sep, den = text.partition("/")
    if not sep or not num.isdigit() or not den.isdigit() or int(num) < 1 or int(den) < 1:
        raise argparse.ArgumentTypeError(f"--meter wants N/D like 4/4, got {text!r}")
    return [int(num), int(den)]


def _stems(text: str) -> list[str]:
    stems = [s.strip() for s in text.split(",") if s.strip()]
    if not stems:
        raise argparse.ArgumentTypeError("--generate wants a comma-separated list of stems")
    return stems


def _span(text: str) -> tuple[float, float]:
    first, sep, last = text.partition("-")
    try:
        a, b = float(first), float(last)
    except ValueError:
        a = b = float("nan")
    if not sep or not (a <= b):
        raise argparse.ArgumentTypeError(f"wants FIRST-LAST like 5-6 (or 1.5-3.25 s), got {text!r}")
    return a, b


def _bars(text: str) -> tuple[int, int]:
    a, b = _span(text)
    if a != int(a) or b != int(b):
        raise argparse.ArgumentTypeError(f"--bars wants whole bar numbers like 5-6, got {text!r}")
    return int(a), int(b)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"wants a whole number >= 0, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="msldm-bridge", description=__doc__.split("\n")[0],
                                 epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", default=DEFAULT_URL, help=f"daemon address (default {DEFAULT_URL})")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for replies")
    ap.add_argument("--curve-server-key", type=Path, metavar="FILE",
                    help="CurveZMQ: the daemon's public key file (server.key from `msldm keys`)")
    ap.add_argument("--curve-client-key", type=Path, metavar="FILE",
                    help="CurveZMQ: this client's secret key file (NAME.key_secret from `msldm keys`; "
                         "its NAME.key must be in the daemon's --curve-clients folder)")
    sub = ap.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="generate stems into a folder", epilog=EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    g.add_argument("--given", type=_given, action="append", default=[], metavar="STEM=PATH",
                   help="a given stem (repeatable); any sample rate, mono or stereo")
    g.add_argument("--generate", type=_stems, metavar="STEMS",
                   help="stems to generate, e.g. bass,guitar (with --redo: that stem)")
    g.add_argument("--takes", type=int, help="takes to make in one request, 1-8 (seeds --seed, --seed + 1, ...; "
                   "the given stems are encoded once); default 1")
    g.add_argument("--redo", metavar="STEM", help="regenerate part of this given stem (--bars or --range); "
                   "outside that part it comes back sample for sample")
    g.add_argument("--bars", type=_bars, metavar="FIRST-LAST", help="with --redo: bars to redo, numbered as in "
                   "the DAW (needs --tempo; --start-bar is the region's first bar, default 1)")
    g.add_argument("--range", type=_span, metavar="START-END", help="with --redo: seconds from the region start "
                   "to redo, e.g. 4-6.5")
    g.add_argument("--out", type=Path, required=True, help="folder for <region>.seed<seed>.<stem>.wav (one set per take)")
    g.add_argument("--region", default="region", help="region name used in file names")
    g.add_argument("--tempo", type=float, help="BPM of the region (context for the DAW and sidecar)")
    g.add_argument("--meter", type=_meter, help="time signature, e.g. 4/4")
    g.add_argument("--start-bar", type=int, help="bar number where the region starts")
    g.add_argument("--length", choices=("region", "bars"), default="region",
                   help="region: as long as the given stems (or --duration); bars: that length rounded to "
                        "the nearest whole bar of --tempo and --meter, so the stems end on a bar line")
    g.add_argument("--seed", type=int, help=SEED_HELP)
    g.add_argument("--steps", type=int, help="sampler steps (default: the model's)")
    g.add_argument("--sampler", choices=("euler", "heun"), help="sampler (default: the model's)")
    g.add_argument("--schedule", choices=("karras", "melody"),
                   help="noise schedule; melody suits few steps (default: the model's)")
    g.add_argument("--resample", type=int, help="passes per step, 1-8: a tighter fit to the given stems "
                   "for that many times the sampling time (default: the model's)")
    g.add_argument("--guidance", type=float, metavar="W",
                   help="0-8: how strongly the generated stems follow the given ones' timing (1: the model's own "
                        "pull; more is tighter; default: the model's)")
    g.add_argument("--candidates", type=int, metavar="N",
                   help="1-8, given the bass and drums alone: candidates per window, the one whose estimate of "
                        "the bass misses it least kept (more: chords closer to the bass's, for about half a "
                        "sampling time each past the first; 1: fastest; default: the model's)")
    g.add_argument("--silent-retries", type=int, metavar="N",
                   help="0-4: how often the daemon samples a window again when a generated stem comes out "
                        "silent there (default: the daemon's, 2; 0: what the model made first)")
    g.add_argument("--level", choices=("balance", "model"),
                   help="balance (the daemon's default): each generated stem set to where real parts typically "
                        "sit against the given stems; model: the level the model made")
    g.add_argument("--output-sample-rate", type=int, metavar="HZ",
                   help="rate of the written stems (default: first given stem's)")
    g.add_argument("--bit-depth", choices=sorted(wavio.BIT_DEPTHS),
                   help="16, 24 or 32f (default: the first given stem's, else 24)")
    g.add_argument("--duration", type=float, metavar="SECONDS", help="seconds to generate when no stem is given")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--retries", type=_count, default=1,
                   help="times to resubmit the job if the daemon dies or restarts mid-job (same seed, "
                        "so the same stems); 0: give up at once")
    g.add_argument("--retry-wait", type=float, default=10.0,
                   help="seconds to wait for a daemon to answer again before each resubmission")
    add_alias(g, "--make", "--generate")  # the names before one name per concept
    add_alias(g, "--sample-rate", "--output-sample-rate")
    sub.add_parser("status", help="show the daemon's model, limits and queue")
    return ap


# ----------------------------------------------------------------------------- generate

def check_generate_args(args: argparse.Namespace) -> str | None:
    """What is wrong with `generate`'s stem options, or None: --generate, or --redo with exactly
    one of --bars / --range (then --generate becomes the redone stem)."""
    if args.redo is None:
        if args.bars is not None or args.range is not None:
            return "--bars and --range go with --redo STEM"
        if not args.generate:
            return "the following arguments are required: --generate (or --redo STEM)"
        return None
    if args.redo not in [stem for stem, _ in args.given]:
        return f"--redo {args.redo}: give that stem too (--given {args.redo}=FILE)"
    if args.generate not in (None, [args.redo]):
        return f"--redo {args.redo} makes that stem alone; drop --generate"
    if (args.bars is None) == (args.range is None):
        return "--redo needs exactly one of --bars FIRST-LAST and --range START-END"
    if args.bars is not None and args.tempo is None:
        return "--bars needs --tempo (and --meter, --start-bar)"
    args.generate = [args.redo]
    return None


def redo_field(args: argparse.Namespace) -> dict[str, Any] | None:
    """The protocol's `redo` object for --redo with --bars / --range."""
    if args.redo is None:
        return None
    if args.bars is not None:
        return {"stem": args.redo, "bars": list(args.bars)}
    return {"stem": args.redo, "start": args.range[0], "end": args.range[1]}


def redo_label(args: argparse.Namespace) -> str | None:
    """What a redo's file names say: the stem and its range (`bass-bars5-6`, `bass-1.5-3s`)."""
    if args.redo is None:
        return None
    if args.bars is not None:
        return f"{args.redo}-bars{args.bars[0]}-{args.bars[1]}"
    return f"{args.redo}-{args.range[0]:g}-{args.range[1]:g}s"


def make_request(args: argparse.Namespace, files: list[tuple[str, wavio.AudioFile]]) -> GenerateRequest:
    """The GenerateRequest for parsed `generate` arguments and the read given files."""
    region = {k: v for k, v in (("tempo", args.tempo), ("meter", args.meter), ("start_bar", args.start_bar),
                                ("name", args.region)) if v is not None}
    return GenerateRequest(
        generate=tuple(args.generate), given=tuple(GivenStem(s, f.audio, f.sample_rate) for s, f in files),
        seed=args.seed, steps=args.steps, sampler=args.sampler, schedule=args.schedule,
        resample=args.resample, guidance=args.guidance, candidates=args.candidates,
        output_sample_rate=args.output_sample_rate,
        duration=args.duration,
        region=region, length=None if args.length == "region" else args.length, takes=args.takes,
        redo=redo_field(args), silent_retries=args.silent_retries, level=args.level)


def sidecar_record(args: argparse.Namespace, hello: dict[str, Any], files: list[tuple[str, wavio.AudioFile]],
                   result: Result, written: dict[str, Path], bit_depth: str, take: int = 0) -> dict[str, Any]:
    """Everything needed to reproduce one take: model, seed, steps, timings, given stems."""
    d = result.done
    return {
        "format": "msldm-bridge-result", "version": 1,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": hello.get("model"), "model_sample_rate": hello.get("sample_rate"),
        "protocol_version": P.PROTOCOL_VERSION, "server": args.server,
        "seed": d.seeds[take], "take": take, "takes": d.takes,
        "steps": d.steps, "sampler": d.sampler, "schedule": d.schedule, "resample": d.resample,
        "guidance": d.guidance, "candidates": d.candidates,
        "region": d.region, "windows": d.windows, "redo": d.redo,
        "silent_retries": d.silent_retries, "silent_rerolls": d.take_rerolls[take] if d.take_rerolls else None,
        "tamed_windows": d.take_tamed[take] if d.take_tamed else None,
        "level": d.level, "level_gain_db": d.take_level_gains[take] if d.take_level_gains else None,
        "fit": d.take_fits[take] if d.take_fits else None,
        "timings": {**d.timings, "bridge_wall": round(result.wall_seconds, 4)},
        "given": [{"stem": s, "path": str(f.path.resolve()), "sha256": wavio.sha256_file(f.path),
                   "sample_rate": f.sample_rate, "channels": f.channels, "frames": f.frames} for s, f in files],
        "stems": {s: {"file": p.name, "frames": d.frames, "sample_rate": d.sample_rate, "bit_depth": bit_depth}
                  for s, p in written.items()},
        "command": reproduce_command(args, d, take),
    }


def reproduce_command(args: argparse.Namespace, done: Done, take: int = 0) -> str:
    """A `msldm-bridge generate` line that asks for the same take again (one take, its seed),
    from any folder: absolute paths, and the sampler settings the daemon used (not just those
    asked for)."""
    parts = ["msldm-bridge", "--server", args.server]
    for flag, key in (("--curve-server-key", args.curve_server_key), ("--curve-client-key", args.curve_client_key)):
        if key is not None:
            parts += [flag, str(key.resolve())]
    parts.append("generate")
    for stem, path in args.given:
        parts += ["--given", f"{stem}={path.resolve()}"]
    seed = done.seeds[take]
    if args.redo is not None:
        parts += ["--redo", args.redo] + (["--bars", f"{args.bars[0]}-{args.bars[1]}"] if args.bars else
                                          ["--range", f"{args.range[0]!r}-{args.range[1]!r}"])
    else:
        parts += ["--generate", ",".join(args.generate)]
    parts += ["--out", str(args.out.resolve()), "--region", args.region, "--seed", str(seed),
              "--steps", str(done.steps)]
    if args.length != "region":
        parts += ["--length", args.length]
    for flag, value in (("--tempo", args.tempo), ("--start-bar", args.start_bar), ("--sampler", done.sampler),
                        ("--schedule", done.schedule), ("--resample", done.resample), ("--guidance", done.guidance),
                        ("--candidates", done.candidates),
                        ("--output-sample-rate", args.output_sample_rate), ("--bit-depth", args.bit_depth),
                        ("--duration", args.duration), ("--silent-retries", done.silent_retries),
                        ("--level", args.level)):
        if value is not None:
            parts += [flag, str(value)]
    if args.meter:
        parts += ["--meter", f"{args.meter[0]}/{args.meter[1]}"]
    return shlex.join(parts)


def _run_job(client: Client, request: GenerateRequest, bar: ProgressBar | None) -> Result:
    """generate_blocking with Ctrl-C turned into a `cancel` (waits for the daemon's answer)."""
    job_id = f"bridge-{secrets.token_hex(6)}"
    try:
        return client.generate_blocking(request, job_id=job_id, on_event=bar)
    except KeyboardInterrupt:
        job = client.jobs.get(job_id)
        if job is None:
            raise
        job.cancel()
        deadline = time.monotonic() + 5.0
        try:
            for _ in job:  # drain until the daemon confirms (JobCancelled) or the job ends
                if time.monotonic() > deadline:
                    break
        except BridgeError:  # confirmed, or the daemon went away meanwhile: cancelled either way
            pass           # (a lost job must not be resubmitted after Ctrl-C)
        raise JobCancelled(P.ErrorCode.CANCELLED.value, "cancelled by Ctrl-C", job_id)


def _run_with_retries(client: Client, request: GenerateRequest, bar: ProgressBar | None, retries: int,
                      wait: float) -> tuple[Result, dict[str, Any]]:
    """`_run_job`, resubmitted up to `retries` times when the job is lost (the daemon died or
    restarted): waits up to `wait` s for a daemon to answer at the same address. The request
    carries its seed, so a resubmitted job makes the same stems. Returns the result and the
    `hello` of the daemon that made it."""
    for attempt in range(retries + 1):
        try:
            return _run_job(client, request, bar), client.hello()
        except JobLost as e:
            if attempt == retries:
                raise
            print(f"\nmsldm-bridge: {e}; waiting up to {wait:g} s for a daemon at {client.url} to "
                  "resubmit the job (same seed, same stems)", file=sys.stderr)
            _wait_for_daemon(client, wait)
            print("msldm-bridge: resubmitted", file=sys.stderr)
    raise AssertionError("unreachable")


def _wait_for_daemon(client: Client, wait: float) -> None:
    """Return once a daemon answers `ping` at `client.url`; DaemonUnavailable after `wait` s."""
    deadline = time.monotonic() + wait
    while True:
        client.reconnect()
        try:
            client.ping()
            return
        except DaemonUnavailable:
            if time.monotonic() >= deadline:
                raise DaemonUnavailable(client.url, wait, "ping after the job was lost") from None
            time.sleep(0.2)


def curve_keys(args: argparse.Namespace) -> CurveKeys | None:
    """The CurveZMQ keys named by `--curve-server-key` / `--curve-client-key` (both or neither)."""
    server, client = args.curve_server_key, args.curve_client_key
    if server is None and client is None:
        return None
    if server is None or client is None:
        raise BridgeError("CurveZMQ needs both --curve-server-key and --curve-client-key")
    return CurveKeys.from_files(server, client)


def cmd_generate(args: argparse.Namespace) -> int:
    files = [(stem, wavio.read_audio(path)) for stem, path in args.given]
    if not files and args.duration is None:
        raise SystemExit("msldm-bridge: give at least one --given stem, or --duration for a full generation")
    args.seed = seed_or_fresh(args.seed)
    bit_depth = args.bit_depth or (files[0][1].bit_depth if files else wavio.DEFAULT_BIT_DEPTH)
    t0 = time.monotonic()
    bar = None if args.quiet else ProgressBar()
    # the daemon sends a heartbeat every second: 5 s of silence means it is gone
    with Client(args.server, timeout=args.timeout, silence_timeout=5.0, curve=curve_keys(args)) as client:
        client.hello()
        try:
            result, hello = _run_with_retries(client, make_request(args, files), bar, args.retries,
                                              args.retry_wait)
        finally:
            if bar is not None:
                bar.close()
    args.out.mkdir(parents=True, exist_ok=True)
    wavio.remove_stale_parts(args.out)
    d, files_written = result.done, 0
    order = sorted(range(d.takes), key=lambda t: d.take_fits[t]["rank"]) if d.take_fits else range(d.takes)
    for take in order:  # the daemon's best-ranked take first when it ranked them, else in seed order
        stems = result.takes[take]
        name = wavio.take_name(args.region, d.seeds[take], redo_label(args))
        written = {stem: wavio.write_wav_atomic(wavio.stem_path(args.out, name, stem), audio,
                                                result.sample_rate, bit_depth)
                   for stem, audio in stems.items()}
        sidecar = wavio.write_json_atomic(wavio.sidecar_path(args.out, name),
                                          sidecar_record(args, hello, files, result, written, bit_depth, take))
        for stem, path in written.items():
            print(f"{stem}\t{path}")
        print(f"sidecar\t{sidecar}")
        files_written += len(written)
    print(f"msldm-bridge: {files_written} stem(s) in {args.out} after {time.monotonic() - t0:.2f} s "
          f"(seed {', '.join(map(str, d.seeds))}; {d.steps} steps)", file=sys.stderr)
    if d.take_fits:  # the daemon's estimate of each take's fit to the given stems: audition in this order
        print("msldm-bridge: takes by estimated fit, best first: " + ", ".join(
            f"seed {d.seeds[t]} ({d.take_fits[t]['fit']:.2f})" for t in order)
              + ("" if args.tempo is not None else " (give --tempo: the ranking follows the beat better "
                 "on the DAW's tempo than on one read from the audio)"), file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with Client(args.server, timeout=args.timeout, curve=curve_keys(args)) as client:
        rtt = client.ping()
        hello, status = client.hello(), client.status()
    limits = hello.get("limits", {})
    print(f"daemon      {args.server} (ping {1000 * rtt:.1f} ms, up {status.get('uptime', 0):.0f} s)")
    print(f"model       {hello.get('model')}  stems {','.join(hello.get('stems', []))}  "
          f"{hello.get('sample_rate')} Hz  default steps {hello.get('default_steps')}")
    print(f"providers   {hello.get('providers')}")
    print(f"limits      max region {limits.get('max_region_seconds')} s, max steps {limits.get('max_steps')}")
    print(f"queue       {status.get('running', 0)} running, {status.get('queued', 0)} queued")
    return 0


COMMANDS = {"generate": cmd_generate, "status": cmd_status}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "generate" and (problem := check_generate_args(args)):
        parser.error(problem)
    try:
        return COMMANDS[args.command](args)
    except DaemonUnavailable as e:
        print(f"msldm-bridge: {e}", file=sys.stderr)
        return 2
    except JobCancelled as e:
        print(f"\nmsldm-bridge: cancelled ({e.message})", file=sys.stderr)
        return 130
    except (DaemonError, BridgeError, OSError) as e:
        print(f"msldm-bridge: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
