"""The bridge's audio files: its result names (`<take>.<stem>.wav`, `<take>.msldm.json`, where
`<take>` is `take_name`: region and seed)
on top of the shared reading and atomic writing of `msldm.wavio`, re-exported here so
`from plugin_bridge import wavio` keeps working for scripts and adapters.

A result file either does not exist under its final name or is complete (see
`msldm.atomic`); a kill mid-write leaves at most a `.<name>.<pid>.<random>.part` file,
which `remove_stale_parts` cleans up.
"""

from __future__ import annotations

import os
from pathlib import Path

from msldm.wavio import (BIT_DEPTHS, DEFAULT_BIT_DEPTH, PART_SUFFIX, SUBTYPE_TO_BIT_DEPTH,  # noqa: F401
                         AudioFile, atomic_write, iter_stale_parts, read_audio, remove_stale_parts, sha256_file,
                         write_json_atomic, write_wav_atomic)

SIDECAR_SUFFIX = ".msldm.json"


def take_name(region: str, seed: int, redo: str | None = None) -> str:
    """The file-name stem of one take: `<region>.seed<seed>`, or `<region>.redo-<what>.seed<seed>`
    for a redo (`what`: the stem and its range, e.g. `bass-bars5-6`). Every take of a region
    gets its own files, so a new take never overwrites an earlier one."""
    return f"{region}.redo-{redo}.seed{seed}" if redo else f"{region}.seed{seed}"


def stem_path(out_dir: str | os.PathLike[str], name: str, stem: str) -> Path:
    """Final name of one generated stem: `<out_dir>/<name>.<stem>.wav` (`name`: a `take_name`)."""
    return Path(out_dir) / f"{name}.{stem}.wav"


def sidecar_path(out_dir: str | os.PathLike[str], name: str) -> Path:
    """Final name of a take's sidecar: `<out_dir>/<name>.msldm.json` (`name`: a `take_name`)."""
    return Path(out_dir) / f"{name}{SIDECAR_SUFFIX}"
