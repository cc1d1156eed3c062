"""Tests for the held-out composer (msldm.data.synth.heldout, `--composer heldout`).

Composition tests need numpy + mido only; the rendering test skips when libfluidsynth or a GM
soundfont is missing.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf

from msldm.config import STEMS
from msldm.data.synth import COMPOSERS, compose_heldout, compose_song, render_corpus
from msldm.data.synth import cli as synth_cli
from msldm.data.synth.heldout import HELDOUT_PROGRESSIONS, HELDOUT_STYLES
from msldm.data.synth.heldout_parts import HELDOUT_BASS, HELDOUT_GUITAR, HELDOUT_PIANO, guitar_shell, rootless
from msldm.data.synth.midi import song_to_midi
from msldm.data.synth.render import fluidsynth_available
from msldm.data.synth.styles import RIDE
from msldm.data.synth.theory import Chord, parse_numeral

SR = 22050
JITTER_S = 0.021  # humanisation clips timing jitter to 20 ms
GM_PERCUSSION = set(range(35, 82))

needs_fluidsynth = pytest.mark.skipif(not fluidsynth_available(), reason="libfluidsynth or GM soundfont missing")


@pytest.fixture(scope="module")
def songs() -> list:
    """80 held-out songs (no rendering), seed 0, 8 s each."""
    return [compose_heldout(0, i, 8.0) for i in range(80)]


def _pcs(progression: str, tonic_pc: int, beats_per_bar: int = 4) -> list[set[int]]:
    """Returns the pitch-class set of each bar's first chord of `progression` in `tonic_pc`."""
    family = HELDOUT_PROGRESSIONS[progression]
    chords = family.chords_per_beat(tonic_pc, len(family.bars), beats_per_bar)
    return [set(c.pitch_classes) for c in chords[::beats_per_bar]]


def test_seventh_chords_have_the_right_pitch_classes() -> None:
    assert _pcs("ii_V_I", 0)[:3] == [{2, 5, 9, 0}, {7, 11, 2, 5}, {0, 4, 7, 11}]
    assert _pcs("minor_ii_V_i", 9)[:3] == [{11, 2, 5, 9}, {4, 8, 11, 2}, {9, 0, 4, 7}]
    assert parse_numeral("iiø7", 0) == Chord(2, "m7b5") and Chord(2, "m7b5").name == "Dm7b5"
    blues = HELDOUT_PROGRESSIONS["blues_dom7"].chords_per_beat(7, 12)
    assert {c.quality for c in blues} == {"7"} and {c.root_pc for c in blues} == {7, 0, 2}
    assert Chord(7, "7").to_dict(0.0)["pitch_classes"] == [7, 11, 2, 5]


def test_every_progression_is_seventh_chords() -> None:
    for progression in HELDOUT_PROGRESSIONS.values():
        for chord in progression.chords_per_beat(0, len(progression.bars)):
            assert len(chord.pitch_classes) == 4 and chord.quality in {"7", "maj7", "min7", "m7b5"}


def test_styles_reference_registered_families() -> None:
    for held in HELDOUT_STYLES.values():
        style = held.style
        assert set(style.bass) <= set(HELDOUT_BASS) and set(style.guitar) <= set(HELDOUT_GUITAR)
        assert set(style.piano) <= set(HELDOUT_PIANO) and set(style.progressions) <= set(HELDOUT_PROGRESSIONS)
        steps = held.beats_per_bar * style.subdiv
        assert all(len(p) == steps for groove in style.grooves for p in groove.values())


def test_compose_is_deterministic_per_seed_and_index() -> None:
    a, b = compose_heldout(5, 3, 8.0), compose_heldout(5, 3, 8.0)
    assert a.notes == b.notes and a.chords == b.chords and a.annotation("T", SR) == b.annotation("T", SR)
    assert compose_heldout(6, 3, 8.0).notes != a.notes and compose_heldout(5, 4, 8.0).notes != a.notes


def test_covers_styles_keys_and_tempi(songs: list) -> None:
    assert {s.style for s in songs} == set(HELDOUT_STYLES)
    assert len({s.key.tonic_pc for s in songs}) == 12 and {s.key.mode for s in songs} == {"major", "minor"}
    tempos = [s.tempo for s in songs]
    assert 60 <= min(tempos) and max(tempos) <= 200
    for song in songs:
        assert {n.pitch for n in song.notes["drums"]} <= GM_PERCUSSION
        assert all(28 <= n.pitch < 52 for n in song.notes["bass"])  # E1..D#3


def test_annotation_schema_matches_the_training_composer(songs: list) -> None:
    reference = set(compose_song(0, 0, 8.0).annotation("T", SR))
    for song in songs:
        ann = song.annotation("T", SR)
        assert set(ann) == reference
        assert len(ann["chords"]) == len(ann["beats"]) and ann["downbeats"] == ann["bar_times"]
        assert all(len(c["pitch_classes"]) == 4 for c in ann["chords"])
        per_bar = ann["meter"][0]
        assert ann["meter"] == ([6, 8] if song.style == "six_eight" else [4, 4])
        assert np.allclose(np.diff(ann["beats"]), 60.0 / ann["tempo"], atol=1e-5)
        assert np.allclose(ann["downbeats"], ann["beats"][::per_bar][: len(ann["downbeats"])], atol=1e-6)


def test_swing_offbeats_fall_at_two_thirds_of_the_beat(songs: list) -> None:
    offbeats = 0
    for song in (s for s in songs if s.style == "swing"):
        beat_s = song.beat_seconds
        notes = song.notes["bass"] + song.notes["guitar"] + song.notes["piano"]
        notes += [n for n in song.notes["drums"] if n.pitch == RIDE]
        for note in notes:
            phase = note.start / beat_s % 1.0
            distance = min(phase, 1.0 - phase, abs(phase - 2 / 3)) * beat_s
            assert distance <= JITTER_S, (song.index, note)
            offbeats += abs(phase - 2 / 3) * beat_s <= JITTER_S
    assert offbeats > 50


def test_walking_bass_plays_a_chord_tone_on_every_downbeat() -> None:
    checked = 0
    for index in range(60):
        song = compose_heldout(1, index, 8.0)
        if song.parts["bass"] != "jazz_walking":
            continue
        for bar, start in enumerate(song.bar_times()):
            if not song.active_bars["bass"][bar]:
                continue
            onsets = [n for n in song.notes["bass"] if abs(n.start - start) <= JITTER_S]
            chord = song.chords[bar * song.beats_per_bar]
            assert onsets and onsets[0].pitch % 12 in chord.pitch_classes, (index, bar)
            checked += 1
    assert checked > 30


def test_comping_plays_chord_tones_with_third_and_seventh(songs: list) -> None:
    assert {p % 12 for p in guitar_shell(Chord(7, "7"))} == {7, 11, 5}
    assert {p % 12 for p in rootless(55, 74)(Chord(2, "min7"), None)} == {5, 9, 0}
    for song in songs:
        for stem in ("guitar", "piano"):
            for note in song.notes[stem]:
                beat = min(int((note.start + JITTER_S) / song.beat_seconds), len(song.chords) - 1)
                assert note.pitch % 12 in song.chords[beat].pitch_classes, (song.index, stem, note)


def test_six_eight_midi_has_the_meter_and_the_timing(songs: list) -> None:
    song = next(s for s in songs if s.style == "six_eight")
    midi = mido.MidiFile(file=io.BytesIO(_midi_bytes(song)))
    signature = next(m for m in midi.tracks[0] if m.type == "time_signature")
    assert (signature.numerator, signature.denominator) == (6, 8)
    onsets, now = [], 0.0
    for message in midi:
        now += message.time
        if message.type == "note_on" and message.velocity > 0:
            onsets.append(now)
    expected = sorted(n.start for stem in STEMS for n in song.notes[stem])
    assert np.allclose(sorted(onsets), expected, atol=2e-3)


def _midi_bytes(song) -> bytes:
    """Returns the song's all_src.mid bytes."""
    buffer = io.BytesIO()
    song_to_midi(song).save(file=buffer)
    return buffer.getvalue()


def test_cli_takes_the_composer_option(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="msldm")
    synth_cli.register(parser.add_subparsers(dest="command", required=True))
    base = ["data", "synth", "--out", str(tmp_path), "--tracks", "1"]
    assert parser.parse_args(base).composer == "synth"
    assert parser.parse_args(base + ["--composer", "heldout"]).composer == "heldout"
    assert set(COMPOSERS) == {"synth", "synth-full", "synth-changes", "synth-sevenths", "synth-voicings", "synth-varied",
                              "heldout"} \
        == set(synth_cli.COMPOSER_NAMES)
    assert "--composer heldout" in synth_cli.SYNTH_EXAMPLE
    with pytest.raises(ValueError, match="unknown composer"):
        render_corpus(tmp_path, 1, 0, composer="nope")


@pytest.mark.fluidsynth
@needs_fluidsynth
def test_render_two_heldout_tracks(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        render_corpus(out, 2, 3, seconds=4.0, progress=False, composer="heldout")
    tracks = sorted(a.glob("*/Track*"))
    assert [t.name for t in tracks] == ["Track00001", "Track00002"] and not list(a.rglob(".*.partial"))
    for track in tracks:
        ann = json.loads((track / "annotation.json").read_text())
        song = compose_heldout(3, ann["index"], 4.0)
        assert ann["track"] == track.name and ann["style"] == song.style and ann["seed"] == 3
        assert ann["chords"] == song.annotation(track.name, SR)["chords"]
        stems = {s: sf.read(track / f"{s}.wav", dtype="float32")[0] for s in STEMS}
        mixture = sf.read(track / "mixture.wav", dtype="float32")[0]
        assert np.array_equal(sum(stems[s] for s in STEMS), mixture) and len(mixture) == 4 * SR
        for stem in STEMS:
            assert any(ann["active_bars"][stem]) == (np.abs(stems[stem]).max() > 1e-3), stem
        for name in [f"{s}.wav" for s in STEMS] + ["mixture.wav", "all_src.mid", "annotation.json"]:
            assert (track / name).read_bytes() == (b / track.relative_to(a) / name).read_bytes(), name
