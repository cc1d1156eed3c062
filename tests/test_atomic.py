"""msldm.atomic, the one atomic writer: the final name holds the old file or the whole new
one, never a part; the temporary file sits next to it and is gone after a failure."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from msldm import atomic


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_text_and_bytes_create_folders_and_leave_only_the_final_file(tmp_path):
    text = tmp_path / "a" / "b" / "state.json"
    assert atomic.atomic_write_text(text, '{"step": 3}\n') == text
    assert text.read_bytes() == b'{"step": 3}\n'
    assert atomic.atomic_write_bytes(text, b"\x00\x01") == text and text.read_bytes() == b"\x00\x01"
    assert _names(text.parent) == ["state.json"]


def test_a_writer_that_raises_midway_leaves_the_old_content_and_no_temporary_file(tmp_path):
    final = atomic.atomic_write_bytes(tmp_path / "x.npy", b"old")
    seen: list[Path] = []

    def half(f) -> None:
        f.write(b"new but not all of it")
        f.flush()
        seen.append(Path(f.name))
        raise RuntimeError("killed midway")

    with pytest.raises(RuntimeError, match="killed midway"):
        atomic.atomic_write(final, half)
    assert final.read_bytes() == b"old"
    assert _names(tmp_path) == ["x.npy"]
    [part] = seen
    assert part.parent == final.parent and part.name.startswith(".x.npy.") and part.name.endswith(".part")


def test_atomic_path_writes_in_the_same_folder_then_renames(tmp_path):
    final = tmp_path / "w.npy"
    with atomic.atomic_path(final) as part:
        assert part.parent == tmp_path and part != final and not final.exists()
        with open(part, "wb") as f:
            np.save(f, np.arange(4))
        assert not final.exists()  # nothing under the final name until the block is done
    np.testing.assert_array_equal(np.load(final), np.arange(4))
    assert _names(tmp_path) == ["w.npy"]


def test_atomic_path_failure_or_nothing_written_keeps_the_old_file(tmp_path):
    final = atomic.atomic_write_text(tmp_path / "ckpt.safetensors", "old")
    with pytest.raises(ValueError):
        with atomic.atomic_path(final) as part:
            part.write_text("half")
            raise ValueError("save_file failed")
    with pytest.raises(FileNotFoundError):
        with atomic.atomic_path(final):
            pass  # the writer wrote no file: nothing to publish
    assert final.read_text() == "old" and _names(tmp_path) == ["ckpt.safetensors"]


def test_a_failed_rename_keeps_the_old_file_and_removes_the_temporary_one(tmp_path, monkeypatch):
    final = atomic.atomic_write_text(tmp_path / "index.json", "old")

    def broken_replace(src, dst):
        assert Path(src).read_text() == "new"  # the data was written; only the rename fails
        raise OSError("disk pulled")

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk pulled"):
        atomic.atomic_write_text(final, "new")
    assert final.read_text() == "old" and _names(tmp_path) == ["index.json"]


@pytest.mark.skipif(os.name == "nt", reason="folders cannot be fsync'ed on Windows")
@pytest.mark.parametrize("use_path", [False, True])
def test_the_file_is_synced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch, use_path):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (events.append("rename"), real_replace(a, b)))
    if use_path:
        with atomic.atomic_path(tmp_path / "f.bin") as part:
            part.write_bytes(b"data")
    else:
        atomic.atomic_write_bytes(tmp_path / "f.bin", b"data")
    assert events == ["fsync file", "rename", "fsync dir"]


def test_stale_parts_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    mine = atomic.part_name(tmp_path / "x.wav")
    mine.write_bytes(b"in progress")
    dead = tmp_path / ".y.wav.999999999.abcd1234.part"  # no such pid
    dead.write_bytes(b"left by a kill")
    (tmp_path / "y.wav").write_bytes(b"whole")
    assert atomic.remove_stale_parts(tmp_path) == [dead]
    assert _names(tmp_path) == sorted([mine.name, "y.wav"])
