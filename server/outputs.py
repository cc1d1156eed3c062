"""Where OSC jobs write their stems: one hidden folder per job, published by one rename.

A job writes its stems to `<root>/.<job_id>.<pid>.<token>.tmp/<stem>.wav`. When it is
done, every file is flushed and fsync'ed and the folder is renamed to `<root>/<job_id>`,
so a job's stems appear all at once or not at all, whatever stops the daemon. A previous
result under the same job id is first moved aside to `.<job_id>.<pid>.<token>.old` and
deleted once the new one is in place.

`sweep(root)` runs at start-up: it deletes the temporary folders of daemons that no
longer run (a SIGKILL gives no chance to clean up), puts back a moved-aside result whose
replacement never arrived, and deletes the `.<stem>.wav.<random>.part` files that older
versions wrote inside job folders.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

from msldm.atomic import fsync_dir, fsync_path
from plugin_bridge.protocol import ErrorCode, ProtocolError

log = logging.getLogger(__name__)
JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
TMP_SUFFIX, OLD_SUFFIX, LEGACY_PART_SUFFIX = ".tmp", ".old", ".part"


def check_job_id(job_id: str) -> str:
    """`job_id` if it can name a folder (1-64 of [A-Za-z0-9_.-], starting with a letter or
    digit); raises BAD_FIELD otherwise."""
    if not JOB_ID_RE.match(job_id):
        raise ProtocolError(ErrorCode.BAD_FIELD, "OSC job ids are 1-64 of [A-Za-z0-9_.-], not starting "
                            "with '.', '-' or '_'", job_id)
    return job_id


def _hidden_name(job_id: str, suffix: str) -> str:
    return f".{job_id}.{os.getpid()}.{secrets.token_hex(4)}{suffix}"


class JobOutput:
    """The stems of one job, written to a hidden folder under `root` and published to
    `root/job_id` by `commit()`; `abort()` deletes them. Raises BAD_FIELD / BAD_PATH."""

    def __init__(self, root: Path, job_id: str):
        self.job_id = check_job_id(job_id)
        self.root = Path(os.path.realpath(root))
        self.final = self.root / job_id
        self._check_final()
        self.tmp = self.root / _hidden_name(job_id, TMP_SUFFIX)
        self.tmp.mkdir()
        self.files: dict[str, sf.SoundFile] = {}

    def _check_final(self) -> None:
        if self.final.is_symlink() or (self.final.exists() and not self.final.is_dir()):
            raise ProtocolError(ErrorCode.BAD_PATH, f"output {self.final} exists and is not a folder "
                                "(or is a symlink)", self.job_id)

    def write(self, stem: str, audio: np.ndarray, sample_rate: int) -> None:
        """Append `[n]` mono float32 samples to the stem's temporary float WAV."""
        if stem not in self.files:
            self.files[stem] = sf.SoundFile(str(self.tmp / f"{stem}.wav"), "w", samplerate=sample_rate,
                                            channels=1, format="WAV", subtype="FLOAT")
        self.files[stem].write(np.asarray(audio, dtype=np.float32))

    def commit(self, stems: Sequence[str]) -> list[Path]:
        """Flush the stems and publish the folder in one rename; returns the final paths of
        `stems`. On failure (disk full, a file at the final name) nothing is published and
        the exception propagates; call `abort()` then."""
        for f in self.files.values():
            f.close()
        for stem in stems:
            fsync_path(self.tmp / f"{stem}.wav")
        fsync_dir(self.tmp)
        self._check_final()
        old = None
        if self.final.exists():
            old = self.root / _hidden_name(self.job_id, OLD_SUFFIX)
            os.rename(self.final, old)
        os.rename(self.tmp, self.final)  # the commit point
        fsync_dir(self.root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return [self.final / f"{s}.wav" for s in stems]

    def abort(self) -> None:
        """Delete the temporary folder (best effort; what is left, `sweep` removes later)."""
        for f in self.files.values():
            try:
                f.close()
            except Exception:  # noqa: BLE001 (a half-written file is deleted anyway)
                pass
        self.files.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _owner_pid(name: str, suffix: str) -> int | None:
    """The pid in `.<job_id>.<pid>.<token><suffix>`, or None if `name` is not such a name."""
    if not (name.startswith(".") and name.endswith(suffix)):
        return None
    fields = name[1: -len(suffix)].rsplit(".", 2)
    if len(fields) != 3 or not fields[1].isdigit() or not JOB_ID_RE.match(fields[0]):
        return None
    return int(fields[1])


def _dead(pid: int) -> bool:
    """True when no other running process has `pid` (this process counts as dead: at
    start-up it has written nothing yet, and a restarted container often gets the old pid)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


def sweep(root: Path) -> list[Path]:
    """Clean what dead daemons left in `root` (see the module docstring); returns the
    removed paths. Never raises for a path it cannot remove (logs it)."""
    root = Path(root)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for p in sorted(root.iterdir()):
        try:
            removed += _sweep_one(root, p)
        except OSError as e:
            log.warning("could not clean %s: %s", p, e)
    if removed:
        log.info("removed %d temporary output(s) of stopped daemons in %s", len(removed), root)
    return removed


def _sweep_one(root: Path, p: Path) -> list[Path]:
    if p.is_symlink():
        return []
    tmp_pid, old_pid = _owner_pid(p.name, TMP_SUFFIX), _owner_pid(p.name, OLD_SUFFIX)
    if tmp_pid is not None and p.is_dir() and _dead(tmp_pid):
        shutil.rmtree(p)
        return [p]
    if old_pid is not None and p.is_dir() and _dead(old_pid):
        job_id = p.name[1:].rsplit(".", 3)[0]
        if not (root / job_id).exists() and not (root / job_id).is_symlink():
            os.rename(p, root / job_id)  # its replacement never arrived: keep the old result
            return []
        shutil.rmtree(p)
        return [p]
    if p.is_dir() and not p.name.startswith("."):
        parts = [q for q in p.glob(f".*.wav.*{LEGACY_PART_SUFFIX}") if q.is_file()]
        for q in parts:
            q.unlink()
        return parts
    return []
