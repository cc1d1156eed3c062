"""Audio files on disk, shared by the core, the daemon's callers and the bridge: reading given
stems, atomic WAV and JSON writing.

Writes go through `msldm.atomic`: a result file either does not exist under its final name
or is complete. numpy and soundfile only, so the bridge-only install imports it (the bridge's
own file names, `<region>.seed<seed>.<stem>.wav` and the sidecar, stay in `plugin_bridge.wavio`).

Audio arrays are `[N]` (mono) or `[N, ch]` (interleaved) float32.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from msldm.atomic import PART_SUFFIX, atomic_write, iter_stale_parts, remove_stale_parts  # noqa: F401 (re-exported)
from msldm.hashing import sha256_file  # noqa: F401 (re-exported: the bridge's sidecar records it)

BIT_DEPTHS: dict[str, str] = {"16": "PCM_16", "24": "PCM_24", "32f": "FLOAT"}
"""Bit depth names accepted on the command line -> soundfile subtype."""

SUBTYPE_TO_BIT_DEPTH: dict[str, str] = {"PCM_16": "16", "PCM_24": "24", "PCM_32": "24", "FLOAT": "32f",
                                        "DOUBLE": "32f", "PCM_U8": "16"}
"""Subtype of a given stem -> the bit depth used for the results when none is asked for."""

DEFAULT_BIT_DEPTH = "24"


@dataclass(frozen=True)
class AudioFile:
    """A given stem read from disk: `audio` `[N]` or `[N, 2]` float32 at `sample_rate`."""

    path: Path
    audio: np.ndarray
    sample_rate: int
    bit_depth: str

    @property
    def channels(self) -> int:
        return 1 if self.audio.ndim == 1 else int(self.audio.shape[1])

    @property
    def frames(self) -> int:
        return int(self.audio.shape[0])


def read_audio(path: str | os.PathLike[str]) -> AudioFile:
    """Read a WAV/FLAC/AIFF file as float32: mono stays `[N]`, stereo `[N, 2]`; more than
    two channels are mixed down to mono (the model is mono; the daemon mixes stereo too)."""
    p = Path(path)
    try:
        info = sf.info(str(p))
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)  # [N, ch]
    except (RuntimeError, ValueError) as e:  # soundfile's LibsndfileError is a RuntimeError
        raise OSError(f"cannot read audio file {p}: {e}") from e
    if data.shape[1] == 1:
        audio = data[:, 0]
    elif data.shape[1] == 2:
        audio = data
    else:
        audio = data.mean(axis=1, dtype=np.float32)
    bit_depth = SUBTYPE_TO_BIT_DEPTH.get(info.subtype, DEFAULT_BIT_DEPTH)
    return AudioFile(p, np.ascontiguousarray(audio, dtype=np.float32), int(sr), bit_depth)


def write_wav_atomic(final: str | os.PathLike[str], audio: np.ndarray, sample_rate: int,
                     bit_depth: str = DEFAULT_BIT_DEPTH) -> Path:
    """Write `audio` (`[N]` or `[N, ch]` float32) as a WAV file at `sample_rate` with
    `bit_depth` ("16", "24" or "32f"), atomically. Returns the final path."""
    if bit_depth not in BIT_DEPTHS:
        raise ValueError(f"bit depth {bit_depth!r} is not one of {sorted(BIT_DEPTHS)}")
    a = np.asarray(audio, dtype=np.float32)
    if BIT_DEPTHS[bit_depth] != "FLOAT":
        a = np.clip(a, -1.0, 1.0)  # integer formats wrap around otherwise

    def write(f: Any) -> None:
        sf.write(f, a, int(sample_rate), subtype=BIT_DEPTHS[bit_depth], format="WAV")

    return atomic_write(final, write)


def write_json_atomic(final: str | os.PathLike[str], obj: dict[str, Any]) -> Path:
    """Write `obj` as indented UTF-8 JSON, atomically. Returns the final path."""
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"
    return atomic_write(final, lambda f: f.write(text.encode("utf-8")))
