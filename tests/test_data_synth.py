"""Tests for the synthetic Slakh-like corpus (msldm.data.synth).

Composition tests need numpy + mido only; rendering tests are marked `fluidsynth` and skip
when libfluidsynth or a GM soundfont is missing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf

from msldm.config import STEMS
from msldm.data.synth import compose_song, corpus_statistics, render_corpus, split_of
from msldm.data.synth import cli as synth_cli
from msldm.data.synth.compose import BEATS_PER_BAR, RELEASE_ALLOWANCE
from msldm.data.synth.corpus import TRACK_FILES
from msldm.data.synth.render import FluidSynthUnavailable, find_soundfont, fluidsynth_available, gate_inactive
from msldm.data.synth.styles import STYLES
from msldm.data.synth.theory import PROGRESSIONS, Chord, Key, parse_numeral, voice_lead

ROOT = Path(__file__).resolve().parents[1]
SECONDS = 6.0
SR = 22050
SILENT_RMS = 1e-6
ACTIVE_RMS = 1e-3
GM_PERCUSSION = set(range(35, 82))
ANNOTATION_KEYS = {"track", "sample_rate", "duration", "style", "tempo", "meter", "key", "progression",
                   "beats", "downbeats", "chords", "programs", "active_bars", "bar_times"}

needs_fluidsynth = pytest.mark.skipif(not fluidsynth_available(), reason="libfluidsynth or GM soundfont missing")


@pytest.fixture(scope="module")
def songs() -> list:
    """300 composed songs (no rendering), seed 0, 4 s each."""
    return [compose_song(0, i, 4.0) for i in range(300)]


def _full_inactive_bars(song) -> list[tuple[str, int]]:
    """Returns (stem, bar) for inactive bars that end inside the track (room for the silence check)."""
    bar_s = BEATS_PER_BAR * song.beat_seconds
    return [(stem, b) for stem in STEMS for b, on in enumerate(song.active_bars[stem])
            if not on and (b + 1) * bar_s <= song.duration]


def _seed_with_dropout(tracks: int) -> int:
    """Returns the first seed whose first `tracks` tracks include a full inactive bar."""
    for seed in range(1000):
        if any(_full_inactive_bars(compose_song(seed, i, SECONDS)) for i in range(tracks)):
            return seed
    raise AssertionError("no seed with a drop-out found")


def test_theory_numerals_and_voicing() -> None:
    assert parse_numeral("bVII", 0) == Chord(10, "maj")
    assert parse_numeral("ii7", 0).name == "Dm7"
    assert parse_numeral("viio", 0).pitch_classes == [11, 2, 5]
    assert Key(10, "minor").name == "Bb minor" and Key(1, "major").name == "Db major"
    voicing = voice_lead(Chord(9, "min"), (60, 64, 67), 57, 79)
    assert sorted(p % 12 for p in voicing) == [0, 4, 9] and max(voicing) - min(voicing) < 12


def test_compose_is_torch_free() -> None:
    code = "import sys, msldm.data.synth, msldm.data.synth.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_compose_covers_families(songs: list) -> None:
    assert len(STYLES) >= 6 and len(PROGRESSIONS) >= 8
    assert {s.style for s in songs} == set(STYLES)
    assert {s.progression for s in songs} == set(PROGRESSIONS)
    assert len({(s.key.tonic_pc, s.key.mode) for s in songs}) == 24
    tempos = [s.tempo for s in songs]
    assert 70 <= min(tempos) < 90 and 150 < max(tempos) <= 170
    for stem in STEMS:
        assert len({s.programs[stem] for s in songs}) >= 4, stem
        assert any(not all(s.active_bars[stem]) for s in songs), f"{stem} is always present"
    assert {s.programs["bass"] for s in songs} <= set(range(32, 40))
    assert {s.programs["guitar"] for s in songs} <= set(range(24, 32))
    assert len({s.parts["bass"] for s in songs}) >= 7


def test_chords_fit_the_key(songs: list) -> None:
    for song in songs:
        allowed, scale = song.key.allowed_pcs(), song.key.scale_pcs()
        pcs = [pc for chord in song.chords for pc in chord.pitch_classes]
        assert set(pcs) <= allowed, (song.key.name, song.progression)
        assert sum(pc in scale for pc in pcs) / len(pcs) > 0.75
        assert song.chords[0].root_pc in scale


def test_bass_plays_chord_roots_on_downbeats(songs: list) -> None:
    checked = 0
    for song in songs:
        for bar, start in enumerate(song.bar_times()):
            if not song.active_bars["bass"][bar]:
                continue
            onsets = [n for n in song.notes["bass"] if abs(n.start - start) < 0.021]
            assert onsets, (song.index, bar)
            root = song.chords[bar * BEATS_PER_BAR].root_pc
            assert onsets[0].pitch % 12 == root and 28 <= onsets[0].pitch < 52
            checked += 1
    assert checked > 500


def test_notes_respect_arrangement(songs: list) -> None:
    for song in songs:
        bar_s = BEATS_PER_BAR * song.beat_seconds
        for bar in range(song.n_bars):
            assert sum(song.active_bars[s][bar] for s in STEMS) >= 2
        for stem in STEMS:
            for note in song.notes[stem]:
                bar = int((note.start + 0.021) // bar_s)
                assert song.active_bars[stem][min(bar, song.n_bars - 1)], (song.index, stem)
                later_off = [b for b in range(bar + 1, song.n_bars) if not song.active_bars[stem][b]]
                if later_off:
                    assert note.end <= later_off[0] * bar_s + 1e-9
                assert 0 <= note.start < note.end <= song.duration
        assert {n.pitch for n in song.notes["drums"]} <= GM_PERCUSSION


def test_full_composer_keeps_parts_playing_through() -> None:
    from msldm.data.synth.corpus import COMPOSERS

    assert "synth-full" in synth_cli.COMPOSER_NAMES and set(synth_cli.COMPOSER_NAMES) == set(COMPOSERS)
    varied = [compose_song(3, i) for i in range(60)]
    full = [COMPOSERS["synth-full"](3, i, 15.0) for i in range(60)]

    def through(song) -> bool:
        return all(all(flags) for flags in song.active_bars.values())

    def active_share(songs) -> float:
        return float(np.mean([np.mean(flags) for song in songs for flags in song.active_bars.values()]))

    assert sum(map(through, full)) >= 2 * sum(map(through, varied)) and sum(map(through, full)) >= 30
    assert active_share(full) > 0.95 > active_share(varied)
    assert all(song.n_bars >= 2 and any(song.notes[s] for s in STEMS) for song in full)
    assert full[0].style == varied[0].style and full[0].tempo == varied[0].tempo  # the same draw order


def test_changes_composer_moves_the_chord_every_half_bar() -> None:
    from msldm.data.synth.corpus import COMPOSERS
    from msldm.data.synth.theory import CHANGES_PROGRESSIONS, PROGRESSIONS

    assert not set(CHANGES_PROGRESSIONS) & set(PROGRESSIONS)
    for family in CHANGES_PROGRESSIONS.values():  # two numerals in every bar, each a triad
        assert all(len(bar.split()) == 2 for bar in family.bars)
        assert all(len(chord.pitch_classes) == 3 for chord in family.chords_per_beat(0, len(family.bars)))
    songs = [COMPOSERS["synth-changes"](3, i, 15.0) for i in range(40)]
    full = [COMPOSERS["synth-full"](3, i, 15.0) for i in range(40)]
    assert {s.progression for s in songs} == set(CHANGES_PROGRESSIONS)
    for song, other in zip(songs, full):
        assert (song.style, song.tempo, song.active_bars) == (other.style, other.tempo, other.active_bars)
        beats = song.chords
        assert all(beats[b] == beats[b + 1] for b in range(0, len(beats) - 1, 2))  # held for two beats
        assert sum(beats[b] != beats[b - 1] for b in range(2, len(beats), 4)) >= (len(beats) // 4) * 3 // 4
    # the training composer's songs are unchanged for every seed
    assert [compose_song(3, i).progression for i in range(40)] == [f.progression for f in full]
    assert all(s.progression in PROGRESSIONS for s in full)


def test_sevenths_composer_plays_seventh_chords_a_chord_a_bar() -> None:
    from msldm.data.synth.corpus import COMPOSERS
    from msldm.data.synth.theory import PROGRESSIONS, SEVENTHS_PROGRESSIONS

    assert not set(SEVENTHS_PROGRESSIONS) & set(PROGRESSIONS)
    for family in SEVENTHS_PROGRESSIONS.values():
        assert all(len(bar.split()) == 1 for bar in family.bars)
        assert all(len(chord.pitch_classes) == 4 for chord in family.chords_per_beat(0, len(family.bars)))
    songs = [COMPOSERS["synth-sevenths"](3, i, 15.0) for i in range(40)]
    assert {s.progression for s in songs} == set(SEVENTHS_PROGRESSIONS)
    pitched = [n for s in songs for stem in ("guitar", "piano") for n in s.notes[stem]]
    assert pitched and all(s.style == COMPOSERS["synth-full"](3, s.index, 15.0).style for s in songs[:5])


def test_voicings_composer_takes_the_root_from_under_the_chords_and_nothing_else() -> None:
    from msldm.data.synth.comping import guitar_voicing
    from msldm.data.synth.corpus import COMPOSERS
    from msldm.data.synth.theory import parse_numeral

    for numeral in ("I", "ii", "V7", "vi", "IVmaj7"):
        chord = parse_numeral(numeral, 4)
        inv = guitar_voicing(chord, inverted=True)
        assert inv == sorted(inv) and 40 <= inv[0] < 52 and inv[0] % 12 == (chord.root_pc + chord.third) % 12
        assert {p % 12 for p in inv} <= set(chord.pitch_classes) and chord.root_pc in {p % 12 for p in inv}
        assert guitar_voicing(chord)[0] % 12 == chord.root_pc  # as the training composer voices it
    songs = [COMPOSERS["synth-voicings"](3, i, 15.0) for i in range(40)]
    full = [COMPOSERS["synth-full"](3, i, 15.0) for i in range(40)]
    changed = {"piano": 0, "guitar": 0}
    for song, other in zip(songs, full):  # the same songs: only the guitar's and piano's voicings differ
        assert (song.style, song.tempo, song.progression, song.key, song.parts, song.active_bars) == \
            (other.style, other.tempo, other.progression, other.key, other.parts, other.active_bars)
        assert song.notes["bass"] == other.notes["bass"] and song.notes["drums"] == other.notes["drums"]
        # no left hand: nothing under the right hand's register, where the root octave was
        assert all(n.pitch >= 57 for n in song.notes["piano"]) and min(n.pitch for n in other.notes["piano"]) < 48
        changed["piano"] += song.notes["piano"] != other.notes["piano"]
        changed["guitar"] += song.notes["guitar"] != other.notes["guitar"]
        if song.parts["guitar"] not in ("strum", "arpeggio"):
            assert song.notes["guitar"] == other.notes["guitar"]
    assert changed["piano"] == 40 and changed["guitar"] >= 10


def test_varied_composer_mixes_both_voicings_over_the_same_songs() -> None:
    from msldm.data.synth.corpus import COMPOSERS

    songs = [COMPOSERS["synth-varied"](5, i, 15.0) for i in range(40)]
    full = [COMPOSERS["synth-full"](5, i, 15.0) for i in range(40)]
    voiced = [COMPOSERS["synth-voicings"](5, i, 15.0) for i in range(40)]
    right_hand = 0
    for song, plain, other in zip(songs, full, voiced):
        assert song.notes["bass"] == plain.notes["bass"] and song.progression == plain.progression
        assert song.notes["piano"] in (plain.notes["piano"], other.notes["piano"])
        assert song.notes["guitar"] in (plain.notes["guitar"], other.notes["guitar"])
        right_hand += song.notes["piano"] == other.notes["piano"]
    assert 10 <= right_hand <= 30  # about half the tracks each way
    assert [s.notes for s in songs[:3]] == [COMPOSERS["synth-varied"](5, i, 15.0).notes for i in range(3)]


def test_compose_reproducible_per_seed_and_index() -> None:
    a, b = compose_song(5, 3), compose_song(5, 3)
    assert a.notes == b.notes and a.active_bars == b.active_bars
    assert compose_song(6, 3).notes != a.notes and compose_song(5, 4).notes != a.notes


def test_split_of_is_80_10_10() -> None:
    counts = Counter(split_of(i) for i in range(1000))
    assert counts == {"train": 800, "validation": 100, "test": 100}


def test_gate_inactive_silences_after_release() -> None:
    audio = np.ones(3 * SR, dtype=np.float32)
    out = gate_inactive(audio, [True, False, True], [0.0, 1.0, 2.0], 3.0, SR, release=0.25)
    assert np.all(out[: int(1.25 * SR)] == 1.0) and np.all(out[int(1.3 * SR): int(1.97 * SR)] == 0.0)
    assert np.all(out[2 * SR:] == 1.0)


def test_missing_soundfont_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FluidSynthUnavailable, match="soundfont not found"):
        render_corpus(tmp_path, 1, 0, soundfont=tmp_path / "nope.sf2")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    """Two renders of the same 3 tracks (workers 1 and 2) with a seed that has a drop-out."""
    if not fluidsynth_available():
        pytest.skip("libfluidsynth or GM soundfont missing")
    seed = _seed_with_dropout(3)
    a, b = tmp_path_factory.mktemp("synth_a"), tmp_path_factory.mktemp("synth_b")
    render_corpus(a, 3, seed, seconds=SECONDS, progress=False)
    render_corpus(b, 3, seed, seconds=SECONDS, workers=2, progress=False)
    return a, b, seed


def _tracks(root: Path) -> list[Path]:
    return sorted(root.glob("*/Track*"))


@pytest.mark.fluidsynth
@needs_fluidsynth
def test_layout_and_exact_mixture(corpus: tuple[Path, Path, int]) -> None:
    tracks = _tracks(corpus[0])
    assert [t.name for t in tracks] == ["Track00001", "Track00002", "Track00003"]
    assert not list(corpus[0].rglob(".*.partial"))  # every track was renamed into place whole
    for track in tracks:
        stems = {}
        for stem in STEMS:
            info = sf.info(track / f"{stem}.wav")
            assert info.subtype == "FLOAT" and info.channels == 1 and info.samplerate == SR
            stems[stem], _ = sf.read(track / f"{stem}.wav", dtype="float32")
            assert len(stems[stem]) == int(SECONDS * SR)
        mixture, _ = sf.read(track / "mixture.wav", dtype="float32")
        total = stems[STEMS[0]].copy()
        for stem in STEMS[1:]:
            total += stems[stem]
        assert np.array_equal(total, mixture)
        assert 0.01 < np.abs(mixture).max() <= 0.951


@pytest.mark.fluidsynth
@needs_fluidsynth
def test_active_bars_match_audio(corpus: tuple[Path, Path, int]) -> None:
    silent_checked = 0
    for track in _tracks(corpus[0]):
        ann = json.loads((track / "annotation.json").read_text())
        ends = ann["bar_times"][1:] + [ann["duration"]]
        for stem in STEMS:
            audio, _ = sf.read(track / f"{stem}.wav", dtype="float32")
            for bar, (t0, t1) in enumerate(zip(ann["bar_times"], ends)):
                if ann["active_bars"][stem][bar]:
                    seg = audio[int(t0 * SR): int(min(t1, t0 + 1.0) * SR)]
                    assert np.sqrt(np.mean(seg ** 2)) > ACTIVE_RMS, (track.name, stem, bar)
                elif t1 - t0 > RELEASE_ALLOWANCE + 0.2:
                    seg = audio[int((t0 + RELEASE_ALLOWANCE + 0.06) * SR): int((t1 - 0.04) * SR)]
                    assert np.sqrt(np.mean(seg ** 2)) < SILENT_RMS, (track.name, stem, bar)
                    silent_checked += 1
    assert silent_checked >= 1


@pytest.mark.fluidsynth
@needs_fluidsynth
def test_bit_identical_across_runs_and_workers(corpus: tuple[Path, Path, int]) -> None:
    a, b, _ = corpus
    for ta, tb in zip(_tracks(a), _tracks(b)):
        for name in [f"{s}.wav" for s in STEMS] + ["mixture.wav", "all_src.mid", "annotation.json"]:
            assert (ta / name).read_bytes() == (tb / name).read_bytes(), (ta.name, name)


@pytest.mark.fluidsynth
@needs_fluidsynth
def test_resume_keeps_whole_tracks_and_renders_the_rest_identically(corpus: tuple[Path, Path, int],
                                                                     tmp_path: Path) -> None:
    import shutil

    a, _, seed = corpus
    out = tmp_path / "c"
    shutil.copytree(a, out)
    tracks = _tracks(out)
    shutil.rmtree(tracks[0])                              # killed before it was renamed into place
    (tracks[1] / "piano.wav").unlink()                    # damaged
    note = json.loads((tracks[2] / "annotation.json").read_text())
    untouched = (tracks[2] / "mixture.wav").stat().st_mtime_ns
    summary = render_corpus(out, 3, seed, seconds=SECONDS, progress=False, resume=True)
    assert summary.kept == 1 and sum(summary.splits.values()) == 3
    assert (tracks[2] / "mixture.wav").stat().st_mtime_ns == untouched
    for ta, tb in zip(_tracks(a), _tracks(out)):
        for name in TRACK_FILES:
            assert (ta / name).read_bytes() == (tb / name).read_bytes(), (ta.name, name)
    note["seed"] = seed + 1                               # a track of another corpus is not kept
    (tracks[2] / "annotation.json").write_text(json.dumps(note))
    assert render_corpus(out, 3, seed, seconds=SECONDS, progress=False, resume=True).kept == 2
    assert (tracks[2] / "annotation.json").read_bytes() == (_tracks(a)[2] / "annotation.json").read_bytes()
    assert render_corpus(out, 3, seed, seconds=SECONDS + 1.0, progress=False, resume=True).kept == 0


@pytest.mark.fluidsynth
@needs_fluidsynth
def test_splits_render_only_those_tracks_and_the_same_ones(corpus: tuple[Path, Path, int],
                                                           tmp_path: Path) -> None:
    a, _, seed = corpus
    summary = render_corpus(tmp_path / "t", 10, seed, seconds=SECONDS, progress=False, splits=("test",))
    assert summary.tracks == 1 and summary.splits == {"train": 0, "validation": 0, "test": 1}
    assert [p.relative_to(tmp_path / "t").as_posix() for p in (tmp_path / "t").glob("*/*")] == ["test/Track00010"]
    render_corpus(tmp_path / "r", 3, seed, seconds=SECONDS, progress=False, splits=("train", "test"))
    for ta, tb in zip(_tracks(a), _tracks(tmp_path / "r"), strict=True):   # train tracks 0-2: as in the whole corpus
        for name in TRACK_FILES:
            assert (ta / name).read_bytes() == (tb / name).read_bytes(), (ta.name, name)
    with pytest.raises(ValueError, match="splits"):
        render_corpus(tmp_path / "x", 3, seed, seconds=SECONDS, progress=False, splits=("tset",))


@pytest.mark.fluidsynth
@needs_fluidsynth
def test_different_seed_differs(corpus: tuple[Path, Path, int], tmp_path: Path) -> None:
    render_corpus(tmp_path, 1, corpus[2] + 1, seconds=2.0, progress=False)
    other, _ = sf.read(tmp_path / "train/Track00001/mixture.wav", dtype="float32")
    mine, _ = sf.read(corpus[0] / "train/Track00001/mixture.wav", dtype="float32")
    assert not np.array_equal(other, mine[: len(other)])


@pytest.mark.fluidsynth
@needs_fluidsynth
def test_annotation_and_midi(corpus: tuple[Path, Path, int]) -> None:
    for track in _tracks(corpus[0]):
        ann = json.loads((track / "annotation.json").read_text())
        assert ANNOTATION_KEYS <= set(ann) and ann["track"] == track.name
        assert len(ann["chords"]) == len(ann["beats"]) and ann["downbeats"] == ann["bar_times"]
        assert all(len(ann["active_bars"][s]) == len(ann["bar_times"]) for s in STEMS)
        key = Key(ann["key"]["tonic_pc"], ann["key"]["mode"])
        assert all(set(c["pitch_classes"]) <= key.allowed_pcs() for c in ann["chords"])
        midi = mido.MidiFile(track / "all_src.mid")
        assert [t.name for t in midi.tracks[1:]] == list(STEMS)
        for stem, midi_track in zip(STEMS, midi.tracks[1:]):
            change = next(m for m in midi_track if m.type == "program_change")
            assert change.program == ann["programs"][stem]
            assert (change.channel == 9) == (stem == "drums")


def test_cli_registers_and_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    parser = argparse.ArgumentParser(prog="msldm")
    synth_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", "synth", "--out", str(tmp_path), "--tracks", "1", "--seconds", "2",
                              "--seed", "4", "--quiet"])
    assert args.workers == 1 and args.sample_rate == SR
    if not fluidsynth_available():
        pytest.skip("libfluidsynth or GM soundfont missing")
    args.func(args)
    stats_args = parser.parse_args(["data", "stats", str(tmp_path)])
    stats_args.func(stats_args)
    out = capsys.readouterr().out
    assert "wrote 1 tracks" in out and "tracks: 1" in out
    stats = corpus_statistics(tmp_path)
    assert stats["tracks"] == 1 and sum(stats["styles"].values()) == 1
    assert "silent_stems" not in stats  # the audio is read only when asked for
    counts = corpus_statistics(tmp_path, audio_tracks=5)["silent_stems"]
    assert sum(total for fonts in counts.values() for _, total in fonts.values()) == 4  # 1 track x 4 stems
    assert counts["drums"][find_soundfont().name][0] == 0  # a complete soundfont's drums sound
    stats_args = parser.parse_args(["data", "stats", str(tmp_path), "--audio", "1"])
    stats_args.func(stats_args)
    assert "silent files by soundfont" in capsys.readouterr().out


GM_FONT, HELD_OUT_FONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"), Path("/usr/share/sounds/sf2/TimGM6mb.sf2")


@pytest.mark.fluidsynth
@pytest.mark.skipif(not (GM_FONT.is_file() and HELD_OUT_FONT.is_file()), reason="needs FluidR3_GM and TimGM6mb")
def test_held_out_soundfont_and_augmentation(tmp_path: Path) -> None:
    # Training tracks use only the training soundfonts, validation and test only the held-out
    # one; augmentation is recorded, keeps silence silent and is byte-deterministic.
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        render_corpus(out, 10, 4, seconds=3.0, progress=False, soundfonts=(GM_FONT,),
                      holdout_soundfont=HELD_OUT_FONT, augment=True)
    gains = []
    for track in sorted(a.glob("*/Track*")):
        ann = json.loads((track / "annotation.json").read_text())
        fonts = {ann["render"][s]["soundfont"] for s in STEMS}
        assert fonts == ({GM_FONT.name} if track.parent.name == "train" else {HELD_OUT_FONT.name}), track
        for s in STEMS:
            audio, _ = sf.read(track / f"{s}.wav", dtype="float32")
            rec = ann["render"][s]
            if not np.any(audio):
                assert rec["effects"] == [] and rec["gain_db"] == 0.0
            else:
                assert -6.0 <= rec["gain_db"] <= 6.0
                gains.append(rec["gain_db"])
        assert (track / "mixture.wav").read_bytes() == (b / track.parent.name / track.name / "mixture.wav").read_bytes()
    assert len(set(gains)) > 5  # drawn, not constant
    with pytest.raises(ValueError, match="held-out soundfont"):
        render_corpus(tmp_path / "c", 1, 0, soundfonts=(HELD_OUT_FONT,), holdout_soundfont=HELD_OUT_FONT)


GS_VARIATIONS = Path("/usr/share/sounds/sf2/FluidR3_GS.sf2")


@needs_fluidsynth
def test_a_soundfont_without_gm_presets_is_refused_before_rendering(tmp_path: Path) -> None:
    from msldm.data.synth.render import SoundfontIncomplete, check_soundfont, find_soundfont

    assert check_soundfont(None) == find_soundfont()  # the default soundfont is complete
    if not GS_VARIATIONS.is_file():
        pytest.skip("fluid-soundfont-gs not installed")
    # FluidR3_GS.sf2 holds only GS variation banks: every stem drawn from it rendered silence
    with pytest.raises(SoundfontIncomplete, match="bank 0"):
        check_soundfont(GS_VARIATIONS)
    with pytest.raises(SoundfontIncomplete):
        render_corpus(tmp_path / "c", 2, 0, soundfonts=(str(find_soundfont()), str(GS_VARIATIONS)), seconds=2.0,
                      progress=False)
    with pytest.raises(SoundfontIncomplete, match="not a drum-kit soundfont"):
        render_corpus(tmp_path / "c", 2, 0, drum_kits=(str(GS_VARIATIONS),), seconds=2.0, progress=False)
    assert not list((tmp_path / "c").glob("*/Track*"))


KIT_FONT = Path("/usr/share/sounds/sf2/Black_Pearl_4_LV2.sf2")  # Debian's avldrums.lv2-soundfont


def test_drum_kits_join_only_the_drums_draw_of_training_tracks() -> None:
    from msldm.data.synth.corpus import RenderPlan

    plan = RenderPlan(("gm.sf2", "other.sf2"), "held.sf2", drum_kits=("kit.sf2",))
    assert plan.fonts_for("train", "drums") == ("gm.sf2", "other.sf2", "kit.sf2")
    for stem in ("bass", "guitar", "piano", None):
        assert plan.fonts_for("train", stem) == ("gm.sf2", "other.sf2")
    assert plan.fonts_for("test", "drums") == plan.fonts_for("validation", "drums") == ("held.sf2",)
    # without kits every stem draws from the soundfonts alone, as corpora rendered before kits did
    assert RenderPlan(("gm.sf2",)).fonts_for("train", "drums") == ("gm.sf2",)


@pytest.mark.fluidsynth
@pytest.mark.skipif(not (GM_FONT.is_file() and HELD_OUT_FONT.is_file()), reason="needs FluidR3_GM and TimGM6mb")
def test_a_drum_kit_plays_the_drum_channel_from_its_bank_0(tmp_path: Path) -> None:
    from msldm.data.synth.compose import TimedNote
    from msldm.data.synth.render import DRUM_CHANNEL, SoundfontIncomplete, check_drum_kit, check_soundfont, render_notes

    hits = [TimedNote(0.1 + 0.25 * i, 0.3 + 0.25 * i, pitch, 100) for i, pitch in enumerate([36, 38, 42, 38])]
    gm_kit, _ = render_notes(hits, 0, DRUM_CHANNEL, 22050, 22050, GM_FONT)
    # a soundfont's bank 0 on the drum channel: its preset 0 (here TimGM6mb's piano, not a kit)
    as_kit, used = render_notes(hits, 33, DRUM_CHANNEL, 22050, 22050, HELD_OUT_FONT, kit=True)
    assert used == 0 and np.sqrt(np.mean(as_kit ** 2)) > 1e-3
    assert not np.allclose(as_kit, render_notes(hits, 0, DRUM_CHANNEL, 22050, 22050, HELD_OUT_FONT)[0], atol=1e-4)
    assert check_drum_kit(HELD_OUT_FONT) == HELD_OUT_FONT
    with pytest.raises(ValueError, match="held-out soundfont"):
        render_corpus(tmp_path / "h", 1, 0, soundfonts=(GM_FONT,), holdout_soundfont=HELD_OUT_FONT,
                      drum_kits=(HELD_OUT_FONT,))
    with pytest.raises(ValueError, match="both as a soundfont and as a drum kit"):
        render_corpus(tmp_path / "b", 1, 0, soundfonts=(GM_FONT,), drum_kits=(GM_FONT,))
    assert not (tmp_path / "h").exists() and not (tmp_path / "b").exists()
    if not KIT_FONT.is_file():
        pytest.skip("avldrums.lv2-soundfont not installed")
    with pytest.raises(SoundfontIncomplete, match="bank 128"):
        check_soundfont(KIT_FONT)  # a kit alone is no General MIDI soundfont
    assert check_drum_kit(KIT_FONT) == KIT_FONT
    kit, _ = render_notes(hits, 0, DRUM_CHANNEL, 22050, 22050, KIT_FONT, kit=True)
    assert np.sqrt(np.mean(kit ** 2)) > 1e-3 and np.sqrt(np.mean(gm_kit ** 2)) > 1e-3
    onsets = [int((0.1 + 0.25 * i) * 22050) for i in range(4)]
    for start in onsets:  # every hit sounds where it was played
        assert np.abs(kit[start:start + 2000]).max() > 4 * np.abs(kit[max(0, start - 300):start - 50]).max() + 1e-4
    out = tmp_path / "c"
    render_corpus(out, 10, 4, seconds=2.0, progress=False, soundfonts=(GM_FONT,),
                  holdout_soundfont=HELD_OUT_FONT, drum_kits=(KIT_FONT,))
    drawn = {s: set() for s in STEMS}
    for track in sorted(out.glob("train/Track*")):
        ann = json.loads((track / "annotation.json").read_text())
        for s in STEMS:
            drawn[s].add(ann["render"][s]["soundfont"])
    assert drawn["drums"] == {GM_FONT.name, KIT_FONT.name}
    assert all(drawn[s] == {GM_FONT.name} for s in ("bass", "guitar", "piano"))
    assert render_corpus(out, 10, 4, seconds=2.0, progress=False, soundfonts=(GM_FONT,), resume=True,
                         holdout_soundfont=HELD_OUT_FONT, drum_kits=(KIT_FONT,)).kept == 10


def test_synth_cli_answers_a_missing_soundfont_or_kit_with_one_line(tmp_path: Path, capsys) -> None:
    from msldm.cli import main

    for flag in ("--soundfonts", "--drum-kits"):
        out = tmp_path / flag.strip("-")
        assert main(["data", "synth", "--out", str(out), "--tracks", "1", flag, str(tmp_path / "none.sf2")]) == 2
        err = capsys.readouterr().err
        assert "soundfont not found" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert not out.exists()
