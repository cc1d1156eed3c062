"""The one atomic file writer: a file is either absent under its final name or complete.

Every writer of results, checkpoints, caches and sidecars goes through here. The data is
written to a hidden temporary name in the same folder as the final one
(`.<name>.<pid>.<random>.part`), flushed and fsync'ed, then moved over the final name with
`os.replace` (atomic on POSIX and Windows when both names are in one folder), and the folder
is fsync'ed so the rename survives a power cut. On an exception the temporary file is
removed and the old file, if any, is untouched; a SIGKILL leaves at most the `.part` file,
which `remove_stale_parts` cleans up once its writer is dead.

Standard library only: the bridge-only install, the daemon and training all import it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Any, Callable, Iterator

PART_SUFFIX = ".part"


def part_name(final: str | os.PathLike[str]) -> Path:
    """A fresh temporary name next to `final`: hidden, unique to this process and call."""
    p = Path(final)
    return p.with_name(f".{p.name}.{os.getpid()}.{secrets.token_hex(4)}{PART_SUFFIX}")


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a closed file's data to disk (for writers that only take a file name)."""
    fd = os.open(path, os.O_RDWR if os.name == "nt" else os.O_RDONLY)  # Windows fsync wants write access
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make a rename in `folder` durable; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_path(final: str | os.PathLike[str]) -> contextlib.AbstractContextManager[Path]:
    """Yield a temporary path next to `final` for a writer that wants a file name
    (safetensors, soundfile); when the block ends, fsync that file and rename it to `final`.
    If the block raises, or writes nothing, the temporary file is removed and `final` is
    untouched."""
    return _into_place(Path(final), sync_file=True)


def atomic_write(final: str | os.PathLike[str], write: Callable[[Any], None]) -> Path:
    """Call `write(fileobj)` on a new binary temporary file next to `final`, fsync it and
    rename it to `final`. Returns the final path."""
    with _into_place(Path(final), sync_file=False) as part:
        with open(part, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    return Path(final)


@contextlib.contextmanager
def _into_place(final: Path, sync_file: bool) -> Iterator[Path]:
    """The temporary file's life: yield its name, then (fsync and) rename it to `final` and
    fsync the folder; on any error remove it, leaving `final` as it was."""
    final.parent.mkdir(parents=True, exist_ok=True)
    part = part_name(final)
    try:
        yield part
        if sync_file:
            fsync_path(part)
        os.replace(part, final)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    fsync_dir(final.parent)


def atomic_write_bytes(final: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `final` atomically. Returns the final path."""
    return atomic_write(final, lambda f: f.write(data))


def atomic_write_text(final: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `final` atomically (no newline translation). Returns the final path."""
    return atomic_write_bytes(final, text.encode(encoding))


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
