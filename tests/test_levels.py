"""The balance of generated stems against the given ones (`server.levels`) and its use in the windows."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from server_fixtures import HOP, WINDOW, tiny_bundle  # noqa: F401  (fixture)
from msldm.eval.dsp import level_db
from server.levels import (HEADROOM_DBFS, MAX_GAIN_DB, LevelBalance, RunningBalance, given_key, given_level_db,
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
    assert b.offset_db("guitar", ["piano", "bass"], STEMS) == -1.0  # the key is in model order
    assert b.offset_db("guitar", ["drums"], STEMS) is None  # no row for that set
    assert given_key(["piano", "drums"], STEMS) == "drums+piano"
    for bad, field in (({"offsets_db": {"tuba": {"bass": 0}}}, "tuba"),
                       ({"offsets_db": {"guitar": {"guitar": 0}}}, "guitar.guitar"),
                       ({"offsets_db": {"guitar": {"piano+bass": 0}}}, "piano\\+bass"),
                       ({"offsets_db": {"guitar": {"bass": float("nan")}}}, "finite"),
                       ({"offsets_db": {"guitar": {"bass": True}}}, "finite"),
                       ({"offsets": {}}, "offsets_db"), ([], "offsets_db")):
        with pytest.raises(ValueError, match=field):
            LevelBalance.from_manifest(bad, STEMS)


def test_the_running_gain_brings_a_stem_to_its_offset_over_the_windows_so_far():
    n = 22050
    r = RunningBalance(-3.0)
    assert r.update(np.zeros(n, np.float32), -20.0) is None  # silent: nothing decided yet
    assert r.update(tone(n, -30.0), None) is None  # no given stem sounds: nor here
    assert r.update(tone(n, -30.0), -20.0) == pytest.approx(7.0, abs=0.01)  # -23 wanted
    # a louder second window: the gain is judged on both (power means), not on the last alone
    both = 10 * np.log10((10 ** -3.0 + 10 ** -2.6) / 2)
    assert r.update(tone(n, -26.0), -20.0) == pytest.approx(-23.0 - both, abs=0.01)
    assert r.update(np.zeros(n, np.float32), -20.0) == pytest.approx(-23.0 - both, abs=0.01)  # a rest: kept
    # never over +-MAX_GAIN_DB, never a frame above the headroom
    assert RunningBalance(-40.0).update(tone(n, -30.0), -20.0) == -MAX_GAIN_DB
    assert RunningBalance(+10.0).update(tone(n, -30.0), -20.0) == MAX_GAIN_DB
    assert RunningBalance(+13.0).update(tone(n, -15.0), -20.0) == pytest.approx(HEADROOM_DBFS + 15.0, abs=0.05)


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


def test_generated_stems_are_balanced_window_by_window_on_the_windows_so_far(balanced, monkeypatch):
    req = ["drums", "guitar", "piano"]
    level = lambda i, b, s: -30.0 - 4 * b + 4 * i  # noqa: E731  (window i of take b: the model's level wanders)
    n = int(2.5 * WINDOW * HOP)
    bass = noise(n, -26.0)
    _levels_decoder(balanced, monkeypatch, req, level)
    model, tm = _region(balanced, {"bass": bass}, req, n, "model", takes=2)
    _levels_decoder(balanced, monkeypatch, req, level)  # from window 0 again
    bal, tb = _region(balanced, {"bass": bass}, req, n, "balance", takes=2)
    assert tm.level == "model" and not tm.level_gain and tb.level == "balance"
    O, H = WINDOW // 4, WINDOW - WINDOW // 4
    starts = [0, H, 2 * H]  # frames; each window's new samples: all of window 0, then past the overlap
    spans = [((s + (O if i else 0)) * HOP, min((s + WINDOW) * HOP, n)) for i, s in enumerate(starts)]
    for b in range(2):
        for s in req:
            run = RunningBalance(TABLE[s]["bass"])
            want = [run.update(tone(span[1] - span[0], level(i, b, s)), level_db(bass[span[0]:span[1]]))
                    for i, span in enumerate(spans)]
            assert tb.level_gain[b][s] == pytest.approx(want, abs=0.02)
            for i, g in enumerate(want):  # each window scaled by its own gain (crossfades between them)
                lo, hi = spans[i][0], (starts[i + 1] * HOP if i + 1 < len(starts) else n)
                m = model[(b, s)][lo:hi]
                assert np.allclose(bal[(b, s)][lo:hi][m != 0] / m[m != 0], 10 ** (g / 20), rtol=1e-3)
    # the first window of the guitar (up to where the next one fades in) sits where the table says
    g0 = level_db(bass[: WINDOW * HOP])
    assert level_db(bal[(0, "guitar")][: H * HOP]) == pytest.approx(g0 - 3.0, abs=0.1)


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
    O, H = WINDOW // 4, WINDOW - WINDOW // 4
    gains = t.level_gain[0]["guitar"]
    assert gains[0] == 0.0  # nothing to judge in the silent window
    assert gains[1] == pytest.approx(level_db(bass[(H + O) * HOP:(H + WINDOW) * HOP]) - 3.0 + 30.0, abs=0.05)
    assert level_db(bal[(0, "guitar")][-H * HOP:]) == pytest.approx(-30.0 + gains[2], abs=0.1)


def test_a_bundle_with_a_bad_table_is_refused(tiny_bundle, tmp_path):  # noqa: F811
    root = tmp_path / "bad"
    shutil.copytree(tiny_bundle, root)
    m = json.loads((root / "manifest.json").read_text())
    m["level_balance"] = {"offsets_db": {"guitar": {"guitar": 1.0}}}
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="level_balance.offsets_db.guitar.guitar"):
        Bundle.load(root)


def test_the_script_measures_a_corpus_and_writes_the_table_into_a_bundle(tiny_bundle, tmp_path, capsys):  # noqa: F811
    import soundfile as sf
    from script_loader import load_script

    root = tmp_path / "b"
    shutil.copytree(tiny_bundle, root)
    n = 3 * WINDOW * HOP
    for i in range(2):
        track = tmp_path / "corpus" / f"Track{i:05d}"
        track.mkdir(parents=True)
        for stem, db in (("bass", -20.0), ("drums", -16.0), ("guitar", -25.0), ("piano", -23.0)):
            sf.write(str(track / f"{stem}.wav"), noise(n, db, 7 * i + len(stem)), 22050, subtype="FLOAT")
    load_script("level_balance").main([str(tmp_path / "corpus"), "--tracks", "5", "--bundle", str(root),
                                       "--source", "two noise tracks"])
    assert "guitar" in capsys.readouterr().out
    b = Bundle.load(root)  # the manifest still loads: the graphs' hashes untouched
    assert b.level_balance.source == "two noise tracks"
    assert b.level_balance.offsets["guitar"]["bass"] == pytest.approx(-5.0, abs=0.1)
    assert b.level_balance.offsets["drums"]["bass"] == pytest.approx(4.0, abs=0.1)
    assert len(b.level_balance.offsets["piano"]) == 7  # every set of the other three stems
    with pytest.raises(SystemExit, match="no Track"):
        load_script("level_balance").main([str(tmp_path), "--bundle", str(root)])
    with pytest.raises(SystemExit, match="no manifest.json"):
        load_script("level_balance").main([str(tmp_path / "corpus"), "--bundle", str(tmp_path / "corpus")])
    before = (root / "manifest.json").read_text()
    (tmp_path / "corpus" / "Track00001" / "piano.wav").unlink()  # a track without every stem: refused,
    with pytest.raises(SystemExit, match="no piano.wav"):
        load_script("level_balance").main([str(tmp_path / "corpus"), "--bundle", str(root)])
    assert (root / "manifest.json").read_text() == before  # and the manifest left as it was


def test_the_window_levels_script_prints_each_window_against_the_given_stems(tiny_bundle, tmp_path, capsys):  # noqa: F811
    from corpus_fixtures import write_corpus
    from script_loader import load_script

    seconds = 2.5 * WINDOW * HOP / 22050  # three windows
    write_corpus(tmp_path / "corpus", {"test": 2}, seconds=seconds + 0.1)
    load_script("window_levels").main([str(tiny_bundle), "--generate", "drums,guitar", "--data",
                                       str(tmp_path / "corpus"), "--clips", "2", "--seconds", str(seconds)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["window", "drums", "guitar"]
    assert [int(x.split()[0]) for x in lines[1:]] == [0, 1, 2]  # both clips in each
    assert all(x.split()[-1] == "2" for x in lines[1:])
    with pytest.raises(SystemExit, match="--generate"):
        load_script("window_levels").main([str(tiny_bundle), "--generate", "tuba", "--data", str(tmp_path / "corpus")])


def test_the_shipped_bundle_carries_a_whole_balance_table():
    from pathlib import Path

    m = json.loads((Path(__file__).resolve().parents[1] / "msldm/assets/bundle/manifest.json").read_text())
    table = LevelBalance.from_manifest(m["level_balance"], tuple(m["stems"]))
    assert {s: len(row) for s, row in table.offsets.items()} == {s: 7 for s in STEMS}  # every set of the others
    assert all(-8.0 < v < 8.0 for row in table.offsets.values() for v in row.values())
    assert "train split" in table.source  # measured on training data, never on an evaluation split
