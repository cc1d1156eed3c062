"""Atomic WAV/JSON writing: a file is either absent under its final name or complete,
whatever happens mid-write (an exception between write and rename, or SIGKILL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from plugin_bridge import wavio

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("bit_depth,subtype,tol", [("16", "PCM_16", 1 / 2**15), ("24", "PCM_24", 1 / 2**23),
                                                   ("32f", "FLOAT", 0.0)])
def test_write_read_round_trip(tmp_path, bit_depth, subtype, tol):
    x = (0.5 * np.sin(np.arange(4410) / 7.0)).astype(np.float32)
    path = wavio.write_wav_atomic(wavio.stem_path(tmp_path, "take", "bass"), x, 44100, bit_depth)
    assert path == tmp_path / "take.bass.wav"
    info = sf.info(str(path))
    assert (info.samplerate, info.subtype, info.frames, info.channels) == (44100, subtype, 4410, 1)
    f = wavio.read_audio(path)
    assert f.bit_depth == bit_depth and f.channels == 1 and f.sample_rate == 44100
    np.testing.assert_allclose(f.audio, x, atol=tol)
    assert [p.name for p in tmp_path.iterdir()] == ["take.bass.wav"]  # no temporary file left


def test_integer_formats_clip_instead_of_wrapping(tmp_path):
    path = wavio.write_wav_atomic(tmp_path / "loud.wav", np.array([1.5, -2.0, 0.25], np.float32), 8000, "16")
    y = wavio.read_audio(path).audio
    assert y[0] > 0.99 and y[1] == -1.0 and y[2] == pytest.approx(0.25, abs=1e-4)


def test_read_audio_keeps_stereo_and_mixes_more_channels(tmp_path):
    sf.write(str(tmp_path / "st.wav"), np.ones((10, 2), np.float32) * [0.1, 0.3], 22050, subtype="FLOAT")
    sf.write(str(tmp_path / "q.wav"), np.ones((10, 4), np.float32) * 0.2, 22050, subtype="PCM_24")
    assert wavio.read_audio(tmp_path / "st.wav").audio.shape == (10, 2)
    quad = wavio.read_audio(tmp_path / "q.wav")
    assert quad.audio.shape == (10,) and quad.bit_depth == "24"
    with pytest.raises(OSError, match="cannot read audio file"):
        wavio.read_audio(tmp_path / "missing.wav")


def test_failure_between_write_and_rename_leaves_old_file_and_no_partial(tmp_path, monkeypatch):
    final = tmp_path / "take.bass.wav"
    wavio.write_wav_atomic(final, np.full(100, 0.25, np.float32), 8000, "32f")
    old = final.read_bytes()

    def broken_replace(src, dst):
        assert Path(src).stat().st_size > 0  # the new data was written, only the rename fails
        raise OSError("disk pulled")

    monkeypatch.setattr(wavio.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk pulled"):
        wavio.write_wav_atomic(final, np.full(5000, -0.5, np.float32), 8000, "32f")
    assert final.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["take.bass.wav"]


WRITER_LOOP = """
import sys, numpy as np
from plugin_bridge import wavio
final, i = sys.argv[1], 0
while True:
    i += 1
    x = np.full((48000 * 20, 2), i / 1000.0, np.float32)   # 7.7 MB per file
    wavio.write_wav_atomic(final, x, 48000, "32f")
    print(i, flush=True)
"""

WRITER_PAUSED = """
import os, sys, time, numpy as np
from plugin_bridge import wavio
real_fsync = os.fsync
def fsync_then_hang(fd):
    real_fsync(fd)
    print("written", flush=True)
    time.sleep(60)                      # killed here: data on disk, rename not done
wavio.os.fsync = fsync_then_hang
wavio.write_wav_atomic(sys.argv[1], np.ones(48000 * 10, np.float32) * 0.5, 48000, "32f")
"""


def _writer(tmp_path: Path, code: str, final: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, str(final)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))


def test_sigkill_during_repeated_large_writes_never_leaves_a_partial_final_file(tmp_path):
    final = tmp_path / "take.drums.wav"
    rng = np.random.default_rng(0)
    for _ in range(3):
        proc = _writer(tmp_path, WRITER_LOOP, final)
        try:
            assert proc.stdout.readline().strip()  # at least one complete write
            time.sleep(float(rng.uniform(0.0, 0.3)))  # then kill at a random point of a later write
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            proc.kill()
            proc.stdout.close()
        data, sr = sf.read(str(final), dtype="float32")
        assert sr == 48000 and data.shape == (48000 * 20, 2)  # complete, not truncated
        assert np.all(data == data[0, 0])  # all from one single write
    assert all(p.name == final.name or p.name.endswith(".part") for p in tmp_path.iterdir())


def test_sigkill_after_write_before_rename_leaves_no_final_file(tmp_path):
    final = tmp_path / "take.bass.wav"
    proc = _writer(tmp_path, WRITER_PAUSED, final)
    try:
        assert proc.stdout.readline().strip() == "written"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
        proc.stdout.close()
    assert not final.exists()
    [part] = list(tmp_path.iterdir())
    assert part.name.startswith(".take.bass.wav.") and part.name.endswith(".part")
    assert wavio.remove_stale_parts(tmp_path) == [part]  # its writer is dead: cleaned up
    assert list(tmp_path.iterdir()) == []


def test_stale_part_cleanup_spares_live_writers(tmp_path):
    mine = tmp_path / f".x.wav.{os.getpid()}.abcd1234.part"
    mine.write_bytes(b"in progress")
    assert wavio.remove_stale_parts(tmp_path) == [] and mine.exists()


def test_json_sidecar_is_written_atomically(tmp_path):
    path = wavio.write_json_atomic(wavio.sidecar_path(tmp_path, "take"), {"seed": 7, "steps": 8})
    assert path.name == "take.msldm.json" and json.loads(path.read_text()) == {"seed": 7, "steps": 8}
    with pytest.raises(ValueError):
        wavio.write_json_atomic(path, {"bad": float("nan")})
    assert json.loads(path.read_text()) == {"seed": 7, "steps": 8}
    assert [p.name for p in tmp_path.iterdir()] == ["take.msldm.json"]
