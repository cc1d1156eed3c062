"""What the user-facing command lines (`msldm`, `msldm-bridge`) share.

- One seed policy: with no `--seed`, every run draws a fresh one (a producer expects a new
  take each time) and reports it, so passing it back repeats that take exactly.
- Old option names kept working: `add_alias(parser, "--make", "--generate")` accepts the
  old spelling as a hidden alias of the new option (the same argparse action), so scripts
  and DAW set-ups written against the old names keep running.
- One progress display (`ProgressBar`), used by `msldm-bridge` and `msldm demo`.

Standard library only: the bridge-only install imports it (`plugin_bridge.cli_common`
re-exports it, so the bridge's old import path keeps working).
"""

from __future__ import annotations

import argparse
import secrets
import sys
from typing import Any, TextIO

SEED_LIMIT = 2 ** 31
"""Fresh seeds are drawn below this: short enough to read back and type again."""

SEED_HELP = ("random seed (default: a fresh one each run, printed and recorded with the result; "
             "pass it again to repeat that take)")


def fresh_seed() -> int:
    """A new random seed in [0, SEED_LIMIT)."""
    return secrets.randbelow(SEED_LIMIT)


def seed_or_fresh(seed: int | None) -> int:
    """`seed` when the user gave one, else a fresh seed (the policy of every generate command)."""
    return fresh_seed() if seed is None else seed


def add_alias(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    """Accept option `old` as a hidden alias of the option `new` already added to `parser`.

    `old` is registered as one more spelling of the same argparse action, so it parses and
    stores exactly like `new` (type, choices, `required`), but help and usage show only `new`."""
    if old in parser._option_string_actions:
        raise ValueError(f"{old} is already an option of {parser.prog}")
    parser._option_string_actions[old] = parser._option_string_actions[new]


class ProgressBar:
    """Plain-text progress on `stream`: redrawn with `\\r` on a terminal, one line per
    10 % otherwise (log files, DAW consoles). `update` takes anything with the fields of
    the daemon's progress event (`fraction`, `step`, `total`, `window`, `windows`, `eta`),
    so it needs neither the bridge's client nor the daemon."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self.stream, self.width = stream, width
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._last_decile = -1
        self.last_fraction = 0.0

    def update(self, p: Any) -> None:
        self.last_fraction = p.fraction
        filled = int(round(p.fraction * self.width))
        text = (f"[{'#' * filled}{'.' * (self.width - filled)}] {100 * p.fraction:5.1f}%  "
                f"step {p.step}/{p.total}  window {p.window + 1}/{p.windows}  eta {p.eta:.1f}s")
        if self.tty:
            self.stream.write("\r" + text)
            self.stream.flush()
        elif int(p.fraction * 10) != self._last_decile:
            self._last_decile = int(p.fraction * 10)
            self.line(text)

    def line(self, text: str) -> None:
        """Print one whole line of status (over the bar on a terminal)."""
        self.stream.write(("\r" if self.tty else "") + text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.last_fraction > 0:
            self.stream.write("\n")
            self.stream.flush()
