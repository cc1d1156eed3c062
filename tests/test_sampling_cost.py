"""scripts/sampling_cost.py on the handmade tiny bundle: one row per setting of the manifest's
fields, the sampler as the daemon runs it, and a refusal of a track at another rate."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from script_loader import load_script
from server_fixtures import SAMPLE_RATE, tiny_bundle  # noqa: F401  (fixture)


def test_rows_per_setting_with_the_samplers_own_counts(tiny_bundle, tmp_path, capsys):  # noqa: F811
    cost = load_script("sampling_cost")
    track = tmp_path / "Track00001"
    track.mkdir()
    noise = np.random.default_rng(0)
    for stem in ("bass", "drums"):
        sf.write(str(track / f"{stem}.wav"), (0.1 * noise.standard_normal(2 * SAMPLE_RATE)).astype(np.float32),
                 SAMPLE_RATE, subtype="FLOAT")
    assert cost.main(["--bundle", str(tiny_bundle), "--track", str(track), "--given", "bass,drums",
                      "--seconds", "1", "--repeats", "1", "--threads", "1",
                      "--fields", "-", "bass_drums_select=1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Track00001, 1.0 s, given bass,drums, generated guitar,piano")
    shipped, one = lines[1], lines[2]
    assert shipped.startswith("-: wall ") and "candidates 2" in shipped and "x 2 row(s)" in shipped
    assert one.startswith("bass_drums_select=1: wall ") and "candidates 1" in one and "x 2 row(s)" not in one
    sf.write(str(track / "bass.wav"), np.zeros(100, np.float32), 2 * SAMPLE_RATE)
    with pytest.raises(SystemExit):
        cost.main(["--bundle", str(tiny_bundle), "--track", str(track), "--given", "bass,drums"])
    assert "the model's rate" in capsys.readouterr().err
