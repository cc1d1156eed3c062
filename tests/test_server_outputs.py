"""OSC job outputs: a job's stems appear all at once; what dead daemons left is swept (real files)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from plugin_bridge.protocol import ErrorCode, ProtocolError
from server.outputs import JobOutput, sweep


def _write(out: JobOutput, value: float, stems=("bass", "drums")) -> None:
    for stem in stems:
        out.write(stem, np.full(50, value, np.float32), 22050)
        out.write(stem, np.full(50, value, np.float32), 22050)


def test_stems_appear_only_at_commit_and_all_together(tmp_path):
    out = JobOutput(tmp_path, "take1")
    _write(out, 0.25)
    assert not (tmp_path / "take1").exists()  # nothing under the final name while it runs
    paths = out.commit(["bass", "drums"])
    assert paths == [tmp_path / "take1" / "bass.wav", tmp_path / "take1" / "drums.wav"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["take1"]
    a, rate = sf.read(str(paths[0]), dtype="float32")
    assert rate == 22050 and len(a) == 100 and np.all(a == 0.25)


def test_a_rerun_replaces_the_previous_result_whole(tmp_path):
    first = JobOutput(tmp_path, "take1")
    _write(first, 0.1, stems=("bass", "piano"))
    first.commit(["bass", "piano"])
    second = JobOutput(tmp_path, "take1")
    _write(second, 0.2)
    assert sorted(p.name for p in (tmp_path / "take1").iterdir()) == ["bass.wav", "piano.wav"]
    second.commit(["bass", "drums"])
    assert sorted(p.name for p in (tmp_path / "take1").iterdir()) == ["bass.wav", "drums.wav"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["take1"]  # the old one is gone too
    assert sf.read(str(tmp_path / "take1" / "bass.wav"), dtype="float32")[0][0] == pytest.approx(0.2)


def test_abort_leaves_nothing(tmp_path):
    out = JobOutput(tmp_path, "j")
    _write(out, 0.5)
    out.abort()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("job_id, code", [("../x", ErrorCode.BAD_FIELD), (".hidden", ErrorCode.BAD_FIELD),
                                          ("link", ErrorCode.BAD_PATH)])
def test_bad_job_ids_and_symlinked_folders_are_refused(tmp_path, job_id, code):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ProtocolError) as e:
        JobOutput(tmp_path, job_id)
    assert e.value.code is code and e.value.job_id == job_id


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_sweep_removes_what_dead_daemons_left_and_nothing_else(tmp_path):
    dead, alive = _dead_pid(), os.getppid()
    keep = [tmp_path / "take1" / "bass.wav", tmp_path / f".take2.{alive}.ab12cd34.tmp" / "bass.wav",
            tmp_path / ".notes.txt"]
    gone = [tmp_path / f".take3.{dead}.ab12cd34.tmp" / "bass.wav",
            tmp_path / f".take4.{os.getpid()}.ab12cd34.tmp" / "drums.wav",  # a restarted container's pid
            tmp_path / "take1" / ".bass.wav.k2j3h4.part"]  # older daemons' per-stem temporaries
    for p in keep + gone:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * 1000)
    moved_aside = tmp_path / f".take5.{dead}.ab12cd34.old" / "bass.wav"  # killed between the two renames
    moved_aside.parent.mkdir()
    moved_aside.write_bytes(b"old result")
    removed = sweep(tmp_path)
    assert sorted(removed) == sorted([gone[0].parent, gone[1].parent, gone[2]])
    assert all(p.exists() for p in keep) and not any(p.exists() for p in gone)
    assert (tmp_path / "take5" / "bass.wav").read_bytes() == b"old result"  # put back


def test_sweep_of_a_missing_folder_is_a_no_op(tmp_path):
    assert sweep(Path(tmp_path / "nope")) == []
