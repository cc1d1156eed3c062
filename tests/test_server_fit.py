"""The daemon's estimate of a take's fit (`server.fit`): it hears a part on the given stems' beat
and in their key, and tells them from a part off the beat or in another key."""

from __future__ import annotations

import numpy as np
import pytest

from server import fit

SR = 22050
BPM = 120.0
SECONDS = 8.0
N = int(SR * SECONDS)


def clicks(times: np.ndarray, freq: float = 0.0, decay: float = 0.03, seconds: float = SECONDS) -> np.ndarray:
    """Short decaying tones (noise bursts when freq is 0) starting at `times` (s)."""
    n = int(SR * seconds)
    out = np.zeros(n, np.float32)
    rng = np.random.default_rng(0)
    length = int(8 * decay * SR)  # rings out to -70 dB, then a 5 ms fade: no click at the end
    t = np.arange(length) / SR
    env = np.exp(-t / decay) * np.minimum(1.0, (length - np.arange(length)) / (0.005 * SR))
    for start in times:
        i = int(round(start * SR))
        if i >= n:
            continue
        sig = np.sin(2 * np.pi * freq * t) if freq else rng.standard_normal(length)
        seg = (0.3 * env * sig)[: n - i]
        out[i:i + len(seg)] += seg.astype(np.float32)
    return out


def chord_notes(times: np.ndarray, midis: list[int], decay: float = 0.25) -> np.ndarray:
    return sum(clicks(times, 440.0 * 2 ** ((m - 69) / 12), decay) for m in midis)


BEAT = 60.0 / BPM
EIGHTHS = np.arange(0, SECONDS, BEAT / 2)
DRUMS = clicks(np.arange(0, SECONDS, BEAT)) + 0.5 * clicks(EIGHTHS)  # 8ths, the beats accented
PIANO = chord_notes(np.arange(0, SECONDS, BEAT), [60, 64, 67])  # C major on every beat


def test_a_part_on_the_beat_fits_better_than_one_off_it() -> None:
    on = chord_notes(EIGHTHS, [48])  # C, on the 8ths
    off = chord_notes(EIGHTHS + 0.37 * BEAT / 2 + 0.011, [48])  # the same, shifted off every grid point
    given = {"drums": DRUMS, "piano": PIANO}
    a = fit.stem_fits({"bass": on}, given, SR)["bass"]
    b = fit.stem_fits({"bass": off}, given, SR)["bass"]
    assert a.rhythm is not None and b.rhythm is not None
    assert a.rhythm > 0.7 and a.rhythm > b.rhythm + 0.3


def test_a_part_in_the_key_fits_better_than_a_tritone_away() -> None:
    given = {"drums": DRUMS, "piano": PIANO}
    same = fit.stem_fits({"guitar": chord_notes(EIGHTHS, [55, 60, 64])}, given, SR)["guitar"]
    far = fit.stem_fits({"guitar": chord_notes(EIGHTHS, [54, 61, 66])}, given, SR)["guitar"]
    assert same.harmony > 0.7 and same.harmony > far.harmony + 0.5


def test_given_the_bass_a_part_on_its_chords_fits_better_than_the_same_chords_out_of_turn() -> None:
    # the bass plays C then A; a guitar with C major then A minor follows it, the same two
    # chords the other way round are both in the key but off the bass's roots half the time
    half = SECONDS / 2
    first, second = EIGHTHS[EIGHTHS < half], EIGHTHS[EIGHTHS >= half]
    bass = chord_notes(first, [36]) + chord_notes(second, [33])  # C2, A1: only a bass's own band names them
    c_major, a_minor = [60, 64, 67], [57, 60, 64]
    follows = chord_notes(first, c_major) + chord_notes(second, a_minor)
    swapped = chord_notes(first, a_minor) + chord_notes(second, c_major)
    given = {"bass": bass, "drums": DRUMS}
    on = fit.stem_fits({"guitar": follows}, given, SR)["guitar"].harmony
    off = fit.stem_fits({"guitar": swapped}, given, SR)["guitar"].harmony
    assert on > 0.75 and on > off + 0.2, (on, off)  # (the notes ring 2 s, over the change)
    # with a piano given too, its chords count beside the bass's roots
    both = fit.stem_fits({"guitar": follows}, {**given, "piano": PIANO}, SR)["guitar"].harmony
    assert off < both < on


def test_chord_tones_of_a_root() -> None:
    root = np.zeros((2, 12))
    root[0, 9] = 4.0  # A
    tones = fit.chord_tones(root)
    assert tones[0].tolist() == [1, 1, 0, 0, 1, 0, 0, 0.5, 0, 1, 0, 0]  # C, C#, E, A; G half
    assert not tones[1].any()  # a silent frame names no chord
    np.testing.assert_allclose(fit.chord_tones(3 * root), tones)


def test_silence_scores_zero_and_drums_alone_give_no_harmony() -> None:
    fits = fit.stem_fits({"bass": np.zeros(N, np.float32), "guitar": chord_notes(EIGHTHS, [60])}, {"drums": DRUMS}, SR)
    assert fits["bass"].score == 0.0
    assert fits["guitar"].harmony is None and fits["guitar"].rhythm is not None
    assert fits["guitar"].score == pytest.approx(fits["guitar"].rhythm)
    drums = fit.stem_fits({"drums": DRUMS}, {"piano": PIANO}, SR)["drums"]  # unpitched: no harmony judged
    assert drums.harmony is None and drums.rhythm is not None


def test_total_generation_scores_a_stem_against_the_other_generated_ones() -> None:
    gen = {"drums": DRUMS, "bass": chord_notes(EIGHTHS, [48]), "piano": PIANO}
    fits = fit.stem_fits(gen, {}, SR)
    assert set(fits) == set(gen) and all(f.harmony is None for f in fits.values())
    assert fits["bass"].rhythm > 0.7


def test_ranks_put_the_highest_score_first_and_keep_order_on_ties() -> None:
    assert fit.rank([0.2, 0.9, 0.5]) == [3, 1, 2]
    assert fit.rank([0.5, 0.5]) == [1, 2]
    assert fit.take_score({}) == 0.0


def test_the_grid_follows_the_tempo() -> None:
    env = fit.onset_envelope(fit.magnitude(DRUMS))
    grid = fit.estimate_grid(env, SR)
    assert grid is not None
    beat_frames = BEAT * SR / fit.HOP
    assert grid.unit * grid.per_beat == pytest.approx(beat_frames, rel=0.04) or \
        grid.unit * grid.per_beat == pytest.approx(2 * beat_frames, rel=0.04)


def test_the_daws_tempo_sets_the_grid_from_the_region_start() -> None:
    from server.requests import beat_seconds

    assert beat_seconds({"tempo": 120, "meter": [4, 4]}) == pytest.approx(0.5)
    assert beat_seconds({"tempo": 180, "meter": [6, 8]}) == pytest.approx(1.0)  # dotted quarters
    assert beat_seconds({"tempo": 90}) == pytest.approx(60 / 90)
    for bad in (None, {}, {"tempo": "fast"}, {"tempo": True}, {"tempo": -5}, {"tempo": 1e9}, [120]):
        assert beat_seconds(bad) is None
    env = fit.onset_envelope(fit.magnitude(DRUMS))
    grid = fit.grid_from_beat(env, SR, BEAT)
    assert grid is not None and grid.phase == 0.0 and grid.per_beat in (4, 3)
    assert grid.unit * grid.per_beat == pytest.approx(BEAT * SR / fit.HOP)
    given = {"drums": DRUMS, "piano": PIANO}
    on = fit.stem_fits({"bass": chord_notes(EIGHTHS, [48])}, given, SR, beat_seconds=BEAT)["bass"]
    off = fit.stem_fits({"bass": chord_notes(EIGHTHS + 0.37 * BEAT / 2 + 0.011, [48])}, given, SR,
                        beat_seconds=BEAT)["bass"]
    assert on.rhythm > 0.7 and on.rhythm > off.rhythm + 0.3


def test_an_estimated_grid_does_not_drift_over_a_long_region() -> None:
    """The autocorrelation's whole-frame lag is refined on the onsets: over 12 s at 127 bpm the
    grid must stay on the beats to a fraction of the onset tolerance."""
    bpm, seconds = 127.0, 12.0
    beat = 60.0 / bpm
    drums = clicks(np.arange(0, seconds, beat / 2), seconds=seconds) + clicks(np.arange(0, seconds, beat),
                                                                              seconds=seconds)
    grid = fit.estimate_grid(fit.onset_envelope(fit.magnitude(drums)), SR)
    assert grid is not None
    beat_frames = beat * SR / fit.HOP
    per = grid.unit * grid.per_beat
    assert min(abs(per - beat_frames), abs(per - 2 * beat_frames), abs(per - beat_frames / 2)) < 0.05


def test_a_span_inside_the_region_keeps_the_regions_grid() -> None:
    """A redo scores audio that starts inside the region: the DAW's grid still runs through
    the region start, so a part on the region's beat fits and one half a 16th off does not."""
    start = 0.3  # seconds into the region: not on the beat (0.5 s)
    cut = int(start * SR)
    given = {"drums": DRUMS[cut:], "piano": PIANO[cut:]}
    on = chord_notes(EIGHTHS, [48])[cut:]
    off = chord_notes(EIGHTHS + BEAT / 8, [48])[cut:]
    grid = fit.grid_from_beat(fit.onset_envelope(fit.magnitude(given["drums"])), SR, BEAT, start)
    assert grid is not None and grid.phase == pytest.approx((-start * SR / fit.HOP) % grid.unit)
    a = fit.stem_fits({"bass": on}, given, SR, beat_seconds=BEAT, start_seconds=start)["bass"]
    b = fit.stem_fits({"bass": off}, given, SR, beat_seconds=BEAT, start_seconds=start)["bass"]
    assert a.rhythm > 0.7 and a.rhythm > b.rhythm + 0.3


def test_rank_check_ranks_the_draws_of_an_eval_by_the_daemons_estimate(tmp_path, capsys) -> None:
    """scripts/rank_check.py on two fabricated draws of one clip: the draw whose bass sits on
    the beat is ranked first, and the table reports the ruler's figures of that draw."""
    import json

    import soundfile as sf
    from script_loader import load_script

    rank_check = load_script("rank_check")
    data = tmp_path / "data" / "Track00001"
    data.mkdir(parents=True)
    for stem, audio in (("drums", DRUMS), ("piano", PIANO)):
        sf.write(str(data / f"{stem}.wav"), audio, SR)
    (data / "annotation.json").write_text(json.dumps({"tempo": BPM, "meter": [4, 4],
                                                      "key": {"tonic_pc": 0, "mode": "major"}}))
    on, off = chord_notes(EIGHTHS, [48]), chord_notes(EIGHTHS + 0.37 * BEAT / 2 + 0.011, [48])
    runs = []
    for d, (bass, rhythmic) in enumerate(((off, 0.2), (on, 0.9))):  # draw 1 is the tight one
        run = tmp_path / f"r{d}"
        (run / "audio" / "BG").mkdir(parents=True)
        sf.write(str(run / "audio" / "BG" / "000_bass.wav"), bass, SR)
        sf.write(str(run / "audio" / "BG" / "000_guitar.wav"), chord_notes(EIGHTHS, [55, 60, 64]), SR)
        per = {"rhythmic": [rhythmic], "harmonic": [0.9], "level_db": [-30.0], "empty": [0.0]}
        summary = {"rhythmic_real": 1.0, "rhythmic_mismatched": 0.0, "harmonic_real": 1.0,
                   "harmonic_mismatched": 0.0, "level_db_real": -30.0}
        (run / "metrics.json").write_text(json.dumps({
            "config": {"sample_rate": SR, "seconds": SECONDS},
            "segments": [{"track": "Track00001", "offset": 0.0}],
            "tasks": {"BG": {"per_clip": {"bass": per, "guitar": per},
                             "stems": {"bass": summary, "guitar": summary}}}}))
        runs.append(str(run))
    assert rank_check.main(["--tempo", "--data", str(tmp_path / "data"), *runs]) == 0
    out = capsys.readouterr().out
    assert "| bass rhythmic (pooled) | 0.900 | 0.550 | 0.900 |" in out, out
