"""Audio files for the bridge: reading given stems, atomic WAV writing, the JSON sidecar.

A result file either does not exist under its final name or is complete: every file is
written to a hidden temporary name in the same folder, flushed and fsync'ed, then moved
over the final name with `os.replace` (atomic on POSIX and Windows when both names are in
one folder), and the folder is fsync'ed. A crash or kill mid-write leaves at most a
`.<name>.<pid>.<random>.part` file behind, which `remove_stale_parts` cleans up.

Audio arrays are `[N]` (mono) or `[N, ch]` (interleaved) float32.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import soundfile as sf

BIT_DEPTHS: dict[str, str] = {"16": "PCM_16", "24": "PCM_24", "32f": "FLOAT"}
"""Bit depth names accepted on the command line -> soundfile subtype."""

SUBTYPE_TO_BIT_DEPTH: dict[str, str] = {"PCM_16": "16", "PCM_24": "24", "PCM_32": "24", "FLOAT": "32f",
                                        "DOUBLE": "32f", "PCM_U8": "16"}
"""Subtype of a given stem -> the bit depth used for the results when none is asked for."""

DEFAULT_BIT_DEPTH = "24"
PART_SUFFIX = ".part"
SIDECAR_SUFFIX = ".msldm.json"


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


def stem_path(out_dir: str | os.PathLike[str], region: str, stem: str) -> Path:
    """Final name of one generated stem: `<out_dir>/<region>.<stem>.wav`."""
    return Path(out_dir) / f"{region}.{stem}.wav"


def sidecar_path(out_dir: str | os.PathLike[str], region: str) -> Path:
    """Final name of a region's sidecar: `<out_dir>/<region>.msldm.json`."""
    return Path(out_dir) / f"{region}{SIDECAR_SUFFIX}"


def _part_name(final: Path) -> Path:
    return final.with_name(f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}{PART_SUFFIX}")


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(final: str | os.PathLike[str], write: Callable[[Any], None]) -> Path:
    """Call `write(fileobj)` on a temporary file next to `final`, fsync it, and rename it
    to `final`. On any error the temporary file is removed and `final` is untouched.

    Returns the final path."""
    final_p = Path(final)
    final_p.parent.mkdir(parents=True, exist_ok=True)
    part = _part_name(final_p)
    try:
        with open(part, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, final_p)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    _fsync_dir(final_p.parent)
    return final_p


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


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes (recorded in the sidecar for the given stems)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def iter_stale_parts(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Temporary files left in `folder` by writers that no longer run (pid not alive)."""
    for p in Path(folder).glob(f".*{PART_SUFFIX}"):
        fields = p.name[: -len(PART_SUFFIX)].rsplit(".", 2)
        if len(fields) != 3 or not fields[1].isdigit():
            continue
        if not _pid_alive(int(fields[1])):
            yield p


def remove_stale_parts(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files of dead writers in `folder`; returns what was removed."""
    removed = []
    for p in iter_stale_parts(folder):
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid() or os.name == "nt":  # os.kill(pid, 0) terminates on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True
