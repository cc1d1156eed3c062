"""Thin CLI of the daemon: `msldm serve`, `msldm keys` and the `--daemon` part of `msldm bench`.

Wiring (done by `msldm/cli.py`): `server.cli.register(subparsers)` adds `serve` and `keys`;
`server.cli.add_bench_arguments(bench_parser)` adds the `--daemon` options to `msldm bench`
and `server.cli.run_bench(args)` runs it when `args.daemon` is set. (`--server` is the
daemon's address in `msldm-bridge`; bench's old `--server*` spellings still work, hidden.) `python -m server`
runs the same `serve` (and `keys`) without the core CLI.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

SERVE_EXAMPLE = """example:
  msldm serve --bundle bundles/small --zmq tcp://127.0.0.1:5555 \\
      --osc 127.0.0.1:9000 --osc-input ~/Music/session --osc-output ~/Music/session/msldm
remote, with CurveZMQ (keys from `msldm keys`):
  msldm serve --zmq tcp://0.0.0.0:5555 --allow-remote \\
      --curve-secret-key keys/server.key_secret --curve-clients keys/clients
"""

KEYS_EXAMPLE = """example (server key pair, one client's, and the folder of allowed clients):
  msldm keys --dir keys --name server
  msldm keys --dir keys --name studio-laptop
  mkdir -p keys/clients && cp keys/studio-laptop.key keys/clients/
  (give the client keys/server.key and keys/studio-laptop.key_secret)
"""


def default_bundle() -> Path:
    """$MSLDM_BUNDLE, else the bundle shipped inside the package (msldm/assets/bundle)."""
    env = os.environ.get("MSLDM_BUNDLE")
    if env:
        return Path(env)
    import msldm
    return Path(msldm.__file__).parent / "assets" / "bundle"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `serve` subcommand."""
    p = subparsers.add_parser("serve", help="serve a model bundle over ZeroMQ (and OSC)",
                              epilog=SERVE_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, default=None, help="bundle folder (default: the bundled one)")
    p.add_argument("--zmq", default="tcp://127.0.0.1:5555", help="ROUTER endpoint (loopback by default)")
    p.add_argument("--osc", default=None, metavar="HOST:PORT", help="also serve OSC on UDP HOST:PORT")
    p.add_argument("--osc-input", type=Path, action="append", default=[],
                   help="folder OSC requests may read WAVs from (repeatable)")
    p.add_argument("--osc-output", type=Path, default=None, help="folder OSC jobs write stems to")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback bind (needs --curve-secret-key and --curve-clients)")
    p.add_argument("--curve-secret-key", type=Path, default=None,
                   help="CurveZMQ server certificate: the '.key_secret' file `msldm keys` writes")
    p.add_argument("--curve-clients", type=Path, default=None, metavar="DIR",
                   help="folder of the public keys ('.key' files) of the clients allowed in; "
                        "any other client key is refused")
    p.add_argument("--providers", default=None, help="comma-separated onnxruntime providers to try")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: default)")
    p.add_argument("--max-region-seconds", type=float, default=600.0,
                   help="longest region a request may ask for (longer: refused with a clear error)")
    p.add_argument("--max-message-mb", type=float, default=512.0,
                   help="largest request frame accepted (larger: the connection is dropped)")
    p.add_argument("--max-queue", type=int, default=64, help="waiting jobs, all clients together")
    p.add_argument("--max-queue-per-client", type=int, default=None,
                   help="waiting jobs of one client (default: max-queue / 4, at least 1)")
    p.add_argument("--encode-cache-mb", type=float, default=64.0,
                   help="memory for the latents of given stems, so a re-roll of the same region "
                        "skips encoding them (0: off)")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                   help="what the daemon logs to stderr")
    p.set_defaults(func=run_serve)
    k = subparsers.add_parser("keys", help="make a CurveZMQ key pair (for the daemon or a client)",
                              epilog=KEYS_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    k.add_argument("--dir", type=Path, default=Path("."), help="folder to write the key files to")
    k.add_argument("--name", default="server", help="file name stem: NAME.key (public), NAME.key_secret")
    k.set_defaults(func=run_keys)


def config_from_args(args: argparse.Namespace):
    """argparse namespace -> DaemonConfig. Raises ValueError for unreadable key files."""
    from server.daemon import DaemonConfig
    from server.requests import Limits
    secret = None
    if args.curve_secret_key is not None:
        from server.curve import load_secret_key
        secret = load_secret_key(args.curve_secret_key)
    limits = Limits(max_message_bytes=int(args.max_message_mb * 1024 * 1024),
                    max_region_seconds=args.max_region_seconds, max_queue=args.max_queue,
                    max_queue_per_client=args.max_queue_per_client)
    return DaemonConfig(
        bundle=args.bundle or default_bundle(), zmq=args.zmq, osc=args.osc,
        osc_inputs=tuple(args.osc_input), osc_output=args.osc_output, allow_remote=args.allow_remote,
        curve_secret_key=secret, curve_clients=args.curve_clients,
        providers=tuple(args.providers.split(",")) if args.providers else None,
        threads=args.threads, limits=limits, encode_cache_mb=args.encode_cache_mb)


def run_keys(args: argparse.Namespace) -> int:
    """`msldm keys`: write NAME.key and NAME.key_secret; prints both paths."""
    from server.curve import make_keys
    try:
        public, secret = make_keys(args.dir, args.name)
    except ValueError as e:
        print(f"msldm keys: {e}", file=sys.stderr)
        return 2
    print(f"public\t{public}\nsecret\t{secret}")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from server.daemon import serve
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = config_from_args(args)
    except ValueError as e:
        print(f"msldm serve: {e}", file=sys.stderr)
        return 2

    def ready(daemon) -> None:
        info = {"zmq": daemon.endpoint, "osc_port": daemon.osc.port if daemon.osc else None,
                "providers": daemon.bundle.providers}
        print("READY " + json.dumps(info), flush=True)

    try:
        serve(cfg, ready)
    except ValueError as e:
        print(f"msldm serve: {e}", file=sys.stderr)
        return 2
    return 0


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `msldm bench --daemon` (the lead's `bench` parser gets these). Before one
    name per concept they were `--server*`: those spellings stay accepted, hidden."""
    from msldm.cli_common import add_alias
    p.add_argument("--daemon", action="store_true",
                   help="benchmark the daemon end to end against the same work in-process")
    p.add_argument("--daemon-seconds", type=float, nargs="+", default=[12.0, 60.0],
                   help="region lengths to time (default: 12 60)")
    p.add_argument("--daemon-repeats", type=int, default=3, help="in-process / daemon pairs per length")
    p.add_argument("--daemon-steps", type=int, default=None, help="sampler steps (default: bundle's)")
    p.add_argument("--daemon-takes", type=int, default=None, metavar="N",
                   help="instead: N takes of the first --daemon-seconds region in one request against N "
                        "separate requests")
    p.add_argument("--daemon-candidates", type=int, default=None, metavar="N",
                   help="candidates per window the requests ask for (their given stems are the bass and drums; "
                        "default: the bundle's)")
    for name in ("", "-seconds", "-repeats", "-steps"):
        add_alias(p, f"--server{name}", f"--daemon{name}")


def run_bench(args: argparse.Namespace) -> int:
    """Run `bench_server` and print its table; `args.bundle` may be None (bundled default)."""
    from msldm.bench import format_machine, machine_speed
    from server.bench import bench_server, bench_takes, format_table, format_takes
    bundle = getattr(args, "bundle", None) or default_bundle()
    machine = machine_speed()
    if getattr(args, "daemon_takes", None):
        print(format_takes(bench_takes(bundle, args.daemon_seconds[0], args.daemon_takes,
                                       repeats=args.daemon_repeats, steps=args.daemon_steps,
                                       threads=getattr(args, "threads", None) or 0,
                                       candidates=args.daemon_candidates)))
        print(format_machine(machine))
        return 0
    rows = bench_server(bundle, tuple(args.daemon_seconds), repeats=args.daemon_repeats,
                        steps=args.daemon_steps, threads=getattr(args, "threads", None) or 0,
                        candidates=args.daemon_candidates)
    print(format_table(rows))
    print(format_machine(machine))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m server serve ...` / `python -m server bench ...` without the core CLI."""
    parser = argparse.ArgumentParser(prog="python -m server")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    b = sub.add_parser("bench", help="daemon latency vs in-process")
    b.add_argument("--bundle", type=Path, default=None)
    add_bench_arguments(b)
    b.set_defaults(func=run_bench, daemon=True)
    args = parser.parse_args(argv)
    return args.func(args)
