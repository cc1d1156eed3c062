"""Helpers the Ardour Lua scripts call through `os.execute`.

    python -m plugin_bridge.adapters.ardour render PLAN.json OUT_DIR
    python -m plugin_bridge.adapters.ardour place SESSION_DIR NAME --at SAMPLE "TRACK=FILE" ...
    python -m plugin_bridge.adapters.ardour script      # prints the Lua scripts' paths
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from plugin_bridge.adapters.ardour import EDITOR_ACTION, LUA_SCRIPT
from plugin_bridge.adapters.ardour.render import load_plan, render_plan
from plugin_bridge.adapters.ardour.session_xml import Placement, SessionEditError, place_files


def _placement(spec: str) -> tuple[str, Path]:
    track, sep, path = spec.rpartition("=")
    if not sep or not track:
        raise argparse.ArgumentTypeError(f"wants TRACK=FILE, got {spec!r}")
    return track, Path(path)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m plugin_bridge.adapters.ardour", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="render the plan's tracks over its range to given.<stem>.wav")
    r.add_argument("plan", type=Path)
    r.add_argument("out_dir", type=Path)
    p = sub.add_parser("place", help="put files on tracks of a closed session (edits the .ardour XML)")
    p.add_argument("session_dir", type=Path)
    p.add_argument("name")
    p.add_argument("--at", type=int, required=True, help="position in samples at the session rate")
    p.add_argument("files", type=_placement, nargs="+", metavar="TRACK=FILE")
    sub.add_parser("script", help="print the paths of the Lua scripts")
    args = ap.parse_args(argv)
    try:
        if args.command == "render":
            for stem, path in render_plan(load_plan(args.plan), args.out_dir).items():
                print(f"{stem}\t{path}")
        elif args.command == "place":
            placed = place_files(args.session_dir, args.name,
                                 [Placement(t, f, args.at) for t, f in args.files])
            for reg in placed:
                print(f"{reg.track}\t{reg.source_path}\t{reg.position}\t{reg.length}")
        else:
            print(f"headless\t{LUA_SCRIPT}\neditor-action\t{EDITOR_ACTION}")
    except (SessionEditError, ValueError, OSError) as e:
        print(f"msldm ardour helper: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
