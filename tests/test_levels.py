"""The balance of generated stems against the given ones (`server.levels`) and its use in the windows."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from server_fixtures import HOP, WINDOW, tiny_bundle  # noqa: F401  (fixture)
from msldm.eval.dsp import level_db
from server.levels import (MAX_GAIN_DB, LevelBalance, balance_gain, given_key, given_level_db,
                           measure_balance)
from server.runtime import Bundle, BundleError
from server.windowing import Timings, generate_region

STEMS = ("bass", "drums", "guitar", "piano")
TABLE = {"bass": {"drums": -2.0}, "drums": {"bass": 0.0}, "guitar": {"bass": -3.0, "bass+piano": -1.0},
         "piano": {"bass": -6.0}}


def tone(n: int, db: float) -> np.ndarray:
    """A sine whose RMS is `db` dBFS."""
    return (np.sqrt(2) * 10 ** (db / 20) * np.sin(0.05 * np.arange(n))).astype(np.float32)


def noise(n: int, db: float, seed: int = 0) -> np.ndarray:
    return (10 ** (db / 20) * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def test_measure_balance_is_the_median_difference_over_windows_where_both_sound():
    n, w = 40_000, 10_000
    tracks = []
    for i, g in enumerate((-4.0, -6.0, -8.0)):  # the guitar 4, 6, 8 dB under the bass: median -6
        tracks.append({"bass": noise(n, -20, i), "drums": noise(n, -14, 10 + i), "guitar": noise(n, -20 + g, 20 + i),
                       "piano": np.zeros(n, np.float32)})
    tracks[0]["guitar"][: 2 * w] = 0  # windows where the guitar rests say nothing
    table = measure_balance(tracks, STEMS, w, w)
    med, windows = table["guitar"]["bass"]
    assert med == pytest.approx(-6.0, abs=0.1) and windows == 2 + 4 + 4
    # a set's level is the power mean of its sounding stems (the silent piano left out)
    both = 10 * np.log10((10 ** -2.0 + 10 ** -1.4) / 2)
    assert table["guitar"]["bass+drums+piano"][0] == pytest.approx(-26 - both, abs=0.1)
    assert table["guitar"]["bass+drums+piano"][0] == pytest.approx(table["guitar"]["bass+drums"][0], abs=1e-6)
    assert "piano" not in table["guitar"] and not table["piano"]  # a silent stem: no row, and no entry as given


def test_the_manifest_block_is_checked_by_field():
    b = LevelBalance.from_manifest({"offsets_db": TABLE, "source": "s"}, STEMS)
    assert b.target_db("guitar", ["piano", "bass"], STEMS, -20.0) == -21.0  # the key is in model order
    assert b.target_db("guitar", ["drums"], STEMS, -20.0) is None  # no row for that set
    assert b.target_db("guitar", ["bass"], STEMS, None) is None  # no given stem sounds
    assert given_key(["piano", "drums"], STEMS) == "drums+piano"
    for bad, field in (({"offsets_db": {"tuba": {"bass": 0}}}, "tuba"),
                       ({"offsets_db": {"guitar": {"guitar": 0}}}, "guitar.guitar"),
                       ({"offsets_db": {"guitar": {"piano+bass": 0}}}, "piano\\+bass"),
                       ({"offsets_db": {"guitar": {"bass": float("nan")}}}, "finite"),
                       ({"offsets_db": {"guitar": {"bass": True}}}, "finite"),
                       ({"offsets": {}}, "offsets_db"), ([], "offsets_db")):
        with pytest.raises(ValueError, match=field):
            LevelBalance.from_manifest(bad, STEMS)


def test_balance_gain_brings_a_stem_to_its_target_within_limits():
    x = tone(22050, -30.0)
    assert balance_gain(x, -24.0) == pytest.approx(6.0, abs=0.01)
    assert balance_gain(x, -36.5) == pytest.approx(-6.5, abs=0.01)
    # never over +-MAX_GAIN_DB, never a frame above the headroom
    assert balance_gain(x, -60.0) == -MAX_GAIN_DB
    assert balance_gain(tone(22050, -15.0), -2.0) == pytest.approx(-7.0 - (-15.0), abs=0.05)
    assert balance_gain(x, -10.0) == MAX_GAIN_DB
    assert balance_gain(np.zeros(22050, np.float32), -20.0) is None  # silence: not decided
    assert balance_gain(x, None) is None


def test_given_level_is_the_power_mean_of_the_sounding_stems():
    n = 22050
    assert given_level_db([tone(n, -20.0), np.zeros(n, np.float32)]) == pytest.approx(-20.0, abs=0.01)
    assert given_level_db([tone(n, -20.0), tone(n, -20.0)]) == pytest.approx(-20.0, abs=0.01)
    assert given_level_db([tone(n, -20.0), tone(n, -30.0)]) == pytest.approx(10 * np.log10(0.0055), abs=0.01)
    assert given_level_db([np.zeros(n, np.float32)]) is None


@pytest.fixture()
def balanced(tiny_bundle, tmp_path):  # noqa: F811
    root = tmp_path / "b"
    shutil.copytree(tiny_bundle, root)
    m = json.loads((root / "manifest.json").read_text())
    m["level_balance"] = {"source": "test", "offsets_db": TABLE}
    (root / "manifest.json").write_text(json.dumps(m))
    return Bundle.load(root)


def _levels_decoder(bundle, monkeypatch, requested, db_of):
    """The bundle's decoder returning, for block j of call i (take j // R, stem requested[j % R]),
    a tone at `db_of(i, take, stem)` dBFS (None: silence)."""
    calls = [0]

    def decode(z):
        n, R = z.shape[-1] * bundle.D, len(requested)
        out = []
        for j in range(len(z)):
            db = db_of(calls[0], j // R, requested[j % R])
            out.append([np.zeros(n, np.float32) if db is None else tone(n, db)])
        calls[0] += 1
        return np.stack(out)

    monkeypatch.setattr(bundle, "decode", decode)


def _region(bundle, given, requested, n, level, takes=1, **kw):
    t = Timings()
    pieces = list(generate_region(bundle, given, requested, n, seed=3, steps=2, timings=t, takes=takes,
                                  silent_retries=0, level=level, **kw))
    return {(b, s): np.concatenate([p.stems[s] for p in pieces if p.take == b]) for b in range(takes)
            for s in requested}, t


def test_generated_stems_are_balanced_against_the_given_ones_by_one_gain_per_take(balanced, monkeypatch):
    req = ["drums", "guitar", "piano"]
    # window i of take b: every stem at -30 - 4 b + 4 i dBFS (the model's level wanders from window to window)
    n = int(2.5 * WINDOW * HOP)
    bass = noise(n, -26.0)
    _levels_decoder(balanced, monkeypatch, req, lambda i, b, s: -30.0 - 4 * b + 4 * i)
    model, tm = _region(balanced, {"bass": bass}, req, n, "model", takes=2)
    _levels_decoder(balanced, monkeypatch, req, lambda i, b, s: -30.0 - 4 * b + 4 * i)  # from window 0 again
    bal, tb = _region(balanced, {"bass": bass}, req, n, "balance", takes=2)
    assert tm.level == "model" and not tm.level_gain and tb.level == "balance"
    g0 = level_db(bass[: WINDOW * HOP])  # decided over the first window
    for b in range(2):
        for s in req:
            want = g0 + TABLE[s]["bass"] - (-30.0 - 4 * b)
            assert tb.level_gain[b][s] == pytest.approx(want, abs=0.02)
            # one gain over the whole region, held past the deciding window: the model's dynamics stay
            ratio = bal[(b, s)][model[(b, s)] != 0] / model[(b, s)][model[(b, s)] != 0]
            assert np.allclose(ratio, 10 ** (tb.level_gain[b][s] / 20), rtol=1e-3)
    # the first window of the guitar (up to where the next one fades in) sits where the table says
    assert level_db(bal[(0, "guitar")][: (WINDOW - WINDOW // 4) * HOP]) == pytest.approx(g0 - 3.0, abs=0.1)


def test_no_balance_without_given_stems_a_table_or_for_a_redone_stem(balanced, tiny_bundle, monkeypatch):  # noqa: F811
    n = int(1.5 * WINDOW * HOP)
    F = -(-n // HOP)
    plain = Bundle.load(tiny_bundle)  # no level_balance in its manifest
    for bundle, given, req, kw in (
            (balanced, {}, ["drums", "guitar"], {}),  # total generation: nothing to balance against
            (plain, {"bass": noise(n, -10.0)}, ["drums", "guitar"], {}),  # no table: the model's level
            (balanced, {"bass": noise(n, -10.0), "guitar": tone(n, -30.0)}, ["guitar"],  # a redo: the kept
             {"kept_frames": {"guitar": np.arange(F) < F // 2}})):  # half of the stem sets the level
        runs = []
        for level in ("balance", "model"):
            _levels_decoder(bundle, monkeypatch, req, lambda i, b, s: -30.0)
            runs.append(_region(bundle, given, req, n, level, **kw))
        (out, t), (model, _) = runs
        assert t.level == "model" and not t.level_gain
        assert all(np.array_equal(out[k], model[k]) for k in model)
    with pytest.raises(ValueError, match="level"):
        _region(balanced, {"bass": noise(n, -10.0)}, ["guitar"], n, "loud")


def test_a_stem_silent_at_first_is_balanced_from_the_first_window_where_it_sounds(balanced, monkeypatch):
    req = ["guitar"]
    _levels_decoder(balanced, monkeypatch, req, lambda i, b, s: None if i == 0 else -30.0)
    n = int(2.5 * WINDOW * HOP)
    bass = noise(n, -20.0)
    bal, t = _region(balanced, {"bass": bass}, req, n, "balance")
    hop = (WINDOW - WINDOW // 4) * HOP
    assert t.level_gain[0]["guitar"] == pytest.approx(level_db(bass[hop + WINDOW // 4 * HOP: WINDOW * HOP + hop])
                                                      - 3.0 + 30.0, abs=0.05)
    assert level_db(bal[(0, "guitar")][-hop:]) == pytest.approx(-30.0 + t.level_gain[0]["guitar"], abs=0.1)


def test_a_bundle_with_a_bad_table_is_refused(tiny_bundle, tmp_path):  # noqa: F811
    root = tmp_path / "bad"
    shutil.copytree(tiny_bundle, root)
    m = json.loads((root / "manifest.json").read_text())
    m["level_balance"] = {"offsets_db": {"guitar": {"guitar": 1.0}}}
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="level_balance.offsets_db.guitar.guitar"):
        Bundle.load(root)
