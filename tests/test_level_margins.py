"""scripts/level_margins.py: the margins under the loudest other stem, on tracks of known levels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from script_loader import load_script

SR = 22050
WINDOW = 8192


@pytest.fixture(scope="module")
def margins():
    return load_script("level_margins")


def _track(root: Path, name: str, db: dict[str, float], n: int) -> Path:
    """A track folder of noise stems at the given RMS levels (dBFS; None: silent)."""
    t = root / name
    t.mkdir(parents=True)
    rng = np.random.default_rng(len(name))
    for stem in ("bass", "drums", "guitar", "piano"):
        level = db.get(stem)
        x = np.zeros(n) if level is None else rng.standard_normal(n) * 10 ** (level / 20)
        sf.write(str(t / f"{stem}.wav"), x.astype(np.float32), SR, subtype="FLOAT")
    return t


def test_each_stem_is_measured_against_the_loudest_other_or_given_one(margins, tmp_path: Path) -> None:
    t = _track(tmp_path, "Track00001", {"bass": -30, "drums": -20, "guitar": -45, "piano": -25}, 4 * WINDOW)
    m = margins.margins(t, WINDOW, WINDOW * 3 // 4, -55.0)
    windows = len(range(0, 4 * WINDOW - WINDOW + 1, WINDOW * 3 // 4))
    assert {s: len(v) for s, v in m.items()} == {s: windows for s in m}
    for stem, want in (("bass", -10), ("drums", 5), ("guitar", -25), ("piano", -5)):
        assert np.allclose(m[stem], want, atol=0.3), (stem, m[stem])
    # against the given stems only: the guitar under the louder of drums and piano, and given
    # stems are not measured themselves
    g = margins.margins(t, WINDOW, WINDOW * 3 // 4, -55.0, given=("piano",))
    assert np.allclose(g["guitar"], -20, atol=0.3) and np.allclose(g["bass"], -5, atol=0.3)
    assert g["piano"] == []


def test_a_silent_stem_is_left_out_and_the_table_counts_windows_under_a_margin(margins, tmp_path: Path,
                                                                              capsys) -> None:
    _track(tmp_path, "Track00001", {"bass": -30, "drums": -20, "guitar": None, "piano": -25}, 4 * WINDOW)
    _track(tmp_path, "Track00002", {"bass": -30, "drums": -20, "guitar": -45, "piano": -25}, 4 * WINDOW)
    margins.main([str(tmp_path), "--window", str(WINDOW), "--under", "-21", "--percentiles", "50"])
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[2:]}
    windows = len(range(0, 4 * WINDOW - WINDOW + 1, WINDOW * 3 // 4))
    assert rows["guitar"][1] == str(windows) and rows["bass"][1] == str(2 * windows)  # only where it sounds
    assert float(rows["guitar"][3]) == 1.0 and float(rows["bass"][3]) == 0.0  # shares under -21 dB
    with pytest.raises(SystemExit, match="no TrackNNNNN"):
        margins.main([str(tmp_path / "none")])
    with pytest.raises(SystemExit, match="--percentiles"):
        margins.main([str(tmp_path), "--percentiles", "1,x"])
    (tmp_path / "Track00002" / "piano.wav").unlink()
    with pytest.raises(SystemExit, match="piano.wav"):
        margins.main([str(tmp_path)])
