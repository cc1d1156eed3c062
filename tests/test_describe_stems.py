"""scripts/describe_stems.py: the listening notes' measures on files whose answers are known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from script_loader import load_script


@pytest.fixture(scope="module")
def describe():
    return load_script("describe_stems")


def test_a_bass_line_in_a_minor_and_a_late_silent_start(describe, tmp_path: Path) -> None:
    sr = 22050
    t = np.arange(sr) / sr
    notes = [45, 48, 52, 45]  # A2 C3 E3 A2, half a second each, after a second of silence
    x = np.concatenate([np.zeros(sr)] + [0.3 * np.sin(2 * np.pi * 440 * 2 ** ((m - 69) / 12) * t[: sr // 2])
                                          * np.hanning(sr // 2) ** 0.1 for m in notes])
    sf.write(str(tmp_path / "bass.wav"), x.astype(np.float32), sr)
    d = describe.describe(tmp_path / "bass.wav", "A:minor")
    assert d["rms_dbfs"] == pytest.approx(20 * np.log10(np.sqrt(np.mean(x ** 2))), abs=0.1)
    assert 0.9 <= d["first_sound_s"] <= 1.05 and d["audible_share@-50dB"] == pytest.approx(2 / 3, abs=0.05)
    assert 3 <= d["notes"] <= 6 and d["in_key_share"] == 1.0 and d["comb_share"] == 0.0
    assert set(d["pitch_classes_by_time"][:3]) == {"A", "C", "E"}
    assert describe.describe(tmp_path / "bass.wav", "Eb:major")["in_key_share"] < 0.4  # only C is in Eb
    sf.write(str(tmp_path / "drums.wav"), np.zeros(sr, np.float32), sr)
    d = describe.describe(tmp_path / "drums.wav")
    assert d["first_sound_s"] is None and "notes" not in d and d["audible_share@-50dB"] == 0.0


def test_a_bad_key_or_a_missing_file_is_a_one_line_error(describe, tmp_path: Path) -> None:
    import subprocess
    import sys

    script = Path(describe.__file__)
    for args, words in ((["--key", "H:minor", str(script)], "TONIC"), ([str(tmp_path / "none.wav")], "none.wav")):
        r = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True)
        assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
