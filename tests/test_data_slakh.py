"""Slakh loaders: the paper-code layout and the original release give the same `[K, N]` chunks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from msldm.config import STEMS
from msldm.data.slakh import (ActivityFilter, ChunkSpec, SlakhChunks, Track, chunk_rms,
                              find_tracks, frame_rms)

torch.set_num_threads(1)  # the test machine is shared: threads only contend
SR = 22050
SECONDS = 1.5
SPEC = ChunkSpec(chunk_len=320 * 32, hop=320 * 16, frame=320)

# (inst_class, frequency Hz, amplitude); per track. Strings are not a stem and must be ignored.
TRACKS = {
    "Track00001": [("Bass", 55.0, 0.3), ("Bass", 110.0, 0.2), ("Drums", 700.0, 0.25),
                   ("Guitar", 330.0, 0.2), ("Strings", 440.0, 0.5), ("Piano", 523.0, 0.2)],
    "Track00002": [("Bass", 82.0, 0.3), ("Drums", 900.0, 0.2), ("Piano", 262.0, 0.3)],  # no guitar
}


def _tone(freq: float, amp: float, sr: int) -> np.ndarray:
    """A smoothly faded sine (band-limited, so resampling is near exact), `[N]` float32."""
    t = np.arange(int(SECONDS * sr)) / sr
    env = np.clip(np.minimum(t, SECONDS - t) / 0.1, 0.0, 1.0) ** 2
    return (amp * env * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_original(root: Path, sr: int = 44100) -> None:
    """The Slakh2100 release layout: `metadata.yaml` + `stems/SNN.flac` at `sr`."""
    for name, parts in TRACKS.items():
        track = root / "train" / name
        (track / "stems").mkdir(parents=True)
        stems = {}
        for i, (cls, f, a) in enumerate(parts):
            sid = f"S{i:02d}"
            stems[sid] = {"inst_class": cls, "audio_rendered": True, "program_num": 0}
            sf.write(str(track / "stems" / f"{sid}.flac"), _tone(f, a, sr), sr, subtype="PCM_24")
        stems["S99"] = {"inst_class": "Piano", "audio_rendered": False}  # no file: skipped
        (track / "metadata.yaml").write_text(yaml.safe_dump({"UUID": name, "stems": stems}))


def write_paper_layout(root: Path) -> None:
    """The paper-code layout: `{bass,drums,guitar,piano}.wav` at 22050 Hz; no guitar.wav in 2."""
    for name, parts in TRACKS.items():
        track = root / "train" / name
        track.mkdir(parents=True)
        for stem in STEMS:
            tones = [_tone(f, a, SR) for cls, f, a in parts if cls.lower() == stem]
            if tones:
                sf.write(str(track / f"{stem}.wav"), np.sum(tones, axis=0), SR, subtype="FLOAT")


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("slakh")
    write_original(base / "original")
    write_paper_layout(base / "paper")
    return base / "original", base / "paper"


def test_both_layouts_give_the_same_chunks(roots: tuple[Path, Path]) -> None:
    original, paper = roots
    keep_all = ActivityFilter(threshold=0.0)
    a = SlakhChunks(original, "train", SPEC, activity=keep_all)
    b = SlakhChunks(paper, "train", SPEC, activity=keep_all)
    assert a.index == b.index and len(a) == 2 * ((int(SECONDS * SR) - SPEC.chunk_len) // SPEC.hop + 1)
    for i in range(len(a)):
        xa, xb = a[i], b[i]
        assert xa.shape == xb.shape == (4, SPEC.chunk_len) and xa.dtype == torch.float32
        np.testing.assert_allclose(xa.numpy(), xb.numpy(), atol=2e-3)
    # The guitar of track 2 is silence in both layouts; the strings were ignored.
    last = a[len(a) - 1]
    assert float(last[2].abs().max()) == 0.0 and float(last[0].abs().max()) > 0.05


def test_spans_match_whole_file_resampling(roots: tuple[Path, Path]) -> None:
    track = Track(roots[0] / "train" / "Track00001")
    assert track.layout == "original" and track.source_rate == 44100
    assert track.num_samples == int(SECONDS * SR)
    whole = track.read()  # [K, N]
    span = track.read(5000, 3000)
    np.testing.assert_allclose(span, whole[:, 5000:8000], atol=1e-5)
    assert len(track.files["bass"]) == 2 and "S04" not in str(track.files)  # Strings ignored
    tail = track.read(track.num_samples - 10, 50)  # past the end: silence
    assert tail.shape == (4, 50) and np.all(tail[:, 10:] == 0)


def test_activity_filter_drops_chunks_with_a_silent_stem(roots: tuple[Path, Path]) -> None:
    original, paper = roots
    for root in roots:
        ds = SlakhChunks(root, "train", SPEC, cache_dir=root.parent / f"cache-{root.name}")
        assert len(ds) > 0 and all(t == 0 for t, _ in ds.index)  # track 2 has no guitar
    only_bass = SlakhChunks(paper, "train", SPEC, activity=ActivityFilter(stems=("bass",)))
    assert {t for t, _ in only_bass.index} == {0, 1}
    three_of_four = SlakhChunks(paper, "train", SPEC, activity=ActivityFilter(min_active=3))
    assert {t for t, _ in three_of_four.index} == {0, 1}
    mix = SlakhChunks(paper, "train", SPEC, stems=("mix",), activity=ActivityFilter(threshold=0))
    full = SlakhChunks(paper, "train", SPEC, activity=ActivityFilter(threshold=0))
    assert mix[3].shape == (1, SPEC.chunk_len)
    np.testing.assert_allclose(mix[3][0].numpy(), full[3].sum(0).numpy(), atol=1e-6)


def test_index_is_cached_per_root(roots: tuple[Path, Path], tmp_path: Path) -> None:
    paper = roots[1]
    ds = SlakhChunks(paper, "train", SPEC, cache_dir=tmp_path)
    files = list(tmp_path.glob("chunks-train-*.json"))
    assert len(files) == 1
    calls = []
    orig = SlakhChunks.build_index
    try:
        SlakhChunks.build_index = lambda self: calls.append(1) or orig(self)  # type: ignore
        again = SlakhChunks(paper, "train", SPEC, cache_dir=tmp_path)
        other = SlakhChunks(paper, "train", ChunkSpec(320 * 16, 320 * 16), cache_dir=tmp_path)
    finally:
        SlakhChunks.build_index = orig  # type: ignore
    assert again.index == ds.index and calls == [1] and len(other) > len(ds)


def test_rms_helpers_and_track_discovery(roots: tuple[Path, Path]) -> None:
    x = np.zeros((2, 1000), np.float32)
    x[0, :320] = 1.0
    rms = frame_rms(x, 320)  # [2, 4]
    assert rms.shape == (2, 4) and rms[0, 0] == 1.0 and rms[0, 1:].sum() == 0
    starts, c = chunk_rms(rms, 2, 1)
    assert list(starts) == [0, 1, 2] and np.isclose(c[0, 0], np.sqrt(0.5))
    assert [p.name for p in find_tracks(roots[0], "train")] == list(TRACKS)
    with pytest.raises(FileNotFoundError):
        find_tracks(roots[0], "validation")


def test_find_tracks_skips_half_written_dot_folders(tmp_path: Path) -> None:
    for name in ("Track00001", ".Track00002.partial"):
        (tmp_path / "train" / name).mkdir(parents=True)
        sf.write(str(tmp_path / "train" / name / "bass.wav"), np.zeros(100, np.float32), 22050)
    assert [p.name for p in find_tracks(tmp_path, "train")] == ["Track00001"]
