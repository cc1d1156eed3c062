"""What the user-facing command lines (`msldm`, `msldm-bridge`) share.

- One seed policy: with no `--seed`, every run draws a fresh one (a producer expects a new
  take each time) and reports it, so passing it back repeats that take exactly.
- Old option names kept working: `add_alias(parser, "--make", "--generate")` accepts the
  old spelling as a hidden alias of the new option (the same argparse action), so scripts
  and DAW set-ups written against the old names keep running.

Standard library only: the bridge-only install imports it.
"""

from __future__ import annotations

import argparse
import secrets

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
