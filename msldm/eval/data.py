"""Evaluation segments from a data set in the contract's layout (Slakh "paper code" layout).

`<root>/{train,validation,test}/TrackNNNNN/{bass,drums,guitar,piano}.wav` (+ optional
`annotation.json`). A segment is a `seconds`-long region of one track with its four stems
`[N]` at the evaluation rate and its annotation cropped to the region (times relative
to the region start).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from msldm.audio import resample
from msldm.eval.density import is_empty
from msldm.eval.harmony import PITCHED_STEMS
from msldm.eval.rhythm import estimate_grid
from msldm.eval.tables import STEMS

MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
"""Krumhansl-Kessler major key profile (C major), for key estimation without annotations."""


@dataclass
class Segment:
    """A region of a track: stems {name: float32 [N]}, annotation cropped (or None)."""

    track: str
    offset: float
    stems: dict[str, np.ndarray]
    annotation: dict | None = None
    key_pc: int = -1  # tonic of the (relative) major key
    tempo: float = float("nan")
    meta: dict = field(default_factory=dict)

    @property
    def mixture(self) -> np.ndarray:
        """Sum of the stems `[N]`."""
        return np.sum([self.stems[s] for s in STEMS], axis=0).astype(np.float32)


def crop_annotation(ann: dict, offset: float, seconds: float) -> dict:
    """Annotation restricted to [offset, offset + seconds), times made relative to offset.
    The chord sounding at `offset` is kept (moved to time 0)."""
    end = offset + seconds
    out = dict(ann)
    for key in ("beats", "downbeats", "bar_times"):
        out[key] = [t - offset for t in ann.get(key, []) if offset - 1e-6 <= t < end]
    chords = ann.get("chords", [])
    before = [c for c in chords if c["time"] <= offset + 1e-6]
    inside = [c for c in chords if offset + 1e-6 < c["time"] < end]
    kept = ([dict(before[-1], time=0.0)] if before else []) + [dict(c, time=c["time"] - offset) for c in inside]
    out["chords"], out["duration"], out["offset"] = kept, seconds, offset
    return out


def split_dir(data_dir: str | Path, split: str = "test") -> Path:
    """`data_dir/split` when it exists, else `data_dir` itself (a folder of tracks)."""
    d = Path(data_dir)
    return d / split if (d / split).is_dir() else d


class AnnotationError(ValueError):
    """An annotation.json that cannot be read as the contract's schema (the message names the
    file and the field)."""


def _field_error(path: Path, field: str, want: str) -> AnnotationError:
    return AnnotationError(f"{path}: field {field!r} must be {want} (schema: docs/data.md); "
                           "use --no-annotation to estimate chords and beats from the audio instead")


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def read_annotation(path: Path) -> dict:
    """The annotation of a track, checked against the fields the evaluation reads (tempo,
    key.tonic_pc / key.mode, beats, downbeats, meter, chords[].time / pitch_classes).
    Raises `AnnotationError` naming the file and the first bad field."""
    try:
        ann = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnnotationError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(ann, dict):
        raise _field_error(path, "(top level)", "an object")
    if not _is_number(ann.get("tempo")) or ann["tempo"] <= 0:
        raise _field_error(path, "tempo", "a positive number (bpm)")
    key = ann.get("key")
    if not isinstance(key, dict) or not isinstance(key.get("tonic_pc"), int) or \
            key.get("mode", "major") not in ("major", "minor"):
        raise _field_error(path, "key", 'an object {"tonic_pc": 0-11, "mode": "major"|"minor"}')
    for name in ("beats", "downbeats"):
        if not isinstance(ann.get(name, []), list) or not all(_is_number(t) for t in ann.get(name, [])):
            raise _field_error(path, name, "a list of times in seconds")
    meter = ann.get("meter", [4, 4])
    if not (isinstance(meter, list) and len(meter) == 2 and all(isinstance(m, int) and m > 0 for m in meter)):
        raise _field_error(path, "meter", "[beats per bar, beat unit]")
    chords = ann.get("chords", [])
    if not isinstance(chords, list):
        raise _field_error(path, "chords", "a list of chord objects")
    for i, c in enumerate(chords):
        if not (isinstance(c, dict) and _is_number(c.get("time")) and isinstance(c.get("pitch_classes"), list)
                and all(isinstance(p, int) for p in c["pitch_classes"])):
            raise _field_error(path, f"chords[{i}]", 'an object {"time": s, "pitch_classes": [0-11, ...]}')
    return ann


def _read_track(track_dir: Path, sr: int, use_annotation: bool = True) -> tuple[dict[str, np.ndarray], dict | None]:
    import soundfile as sf

    stems = {}
    for s in STEMS:
        path = track_dir / f"{s}.wav"
        if path.is_file():
            audio, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
            stems[s] = resample(audio.mean(axis=1), file_sr, sr).astype(np.float32)
    if not stems:  # e.g. the original Slakh release (stems/SNN.flac): scoring silence would mislead
        raise ValueError(f"{track_dir} has none of {', '.join(f'{s}.wav' for s in STEMS)}; msldm eval reads "
                         "the paper's layout <split>/TrackNNNNN/<stem>.wav (a missing stem is silence)")
    n = max((len(a) for a in stems.values()), default=0)
    stems = {s: np.pad(stems.get(s, np.zeros(0, np.float32)), (0, n - len(stems.get(s, [])))) for s in STEMS}
    ann_path = track_dir / "annotation.json"
    return stems, (read_annotation(ann_path) if use_annotation and ann_path.is_file() else None)


def estimate_key_pc(stems: dict[str, np.ndarray], sr: int) -> int:
    """Tonic pitch class of the (relative) major key: the pitched stems' summed chroma
    (`librosa.feature.chroma_stft`) correlated with the rotated Krumhansl-Kessler major profile."""
    import librosa

    chroma = np.zeros(12)
    for s in PITCHED_STEMS:
        x = np.asarray(stems[s], np.float32)
        if np.any(x):
            chroma += librosa.feature.chroma_stft(y=x, sr=sr, n_fft=4096, hop_length=1024).sum(axis=1)
    if chroma.sum() <= 0 or np.std(chroma) == 0:
        return -1
    return int(np.argmax([np.corrcoef(chroma, np.roll(MAJOR_PROFILE, k))[0, 1] for k in range(12)]))


def _make_segment(track: Path, stems: dict, ann: dict | None, offset: float, seconds: float,
                  sr: int) -> Segment:
    i0, n = int(round(offset * sr)), int(round(seconds * sr))
    cut = {s: np.pad(a[i0:i0 + n], (0, max(0, n - len(a[i0:i0 + n])))).astype(np.float32) for s, a in stems.items()}
    if ann is not None:
        a = crop_annotation(ann, offset, seconds)
        key = ann["key"]["tonic_pc"] + (3 if ann["key"].get("mode") == "minor" else 0)
        return Segment(track.name, offset, cut, a, int(key) % 12, float(ann["tempo"]))
    tempo = estimate_grid({s: cut[s] for s in STEMS}, sr).tempo
    return Segment(track.name, offset, cut, None, estimate_key_pc(cut, sr), tempo)


def load_segments(data_dir: str | Path, n: int, seconds: float, sr: int = 22050, split: str = "test",
                  seed: int = 0, require_all: bool = True, use_annotation: bool = True) -> list[Segment]:
    """Up to `n` segments of `seconds`, spread over the tracks (round robin over tracks in a
    seeded random order, non-overlapping offsets). With `require_all`, only segments where
    none of the four stems is empty (as the paper's sub-FAD set: "all the segments contain
    four instruments"); if too few qualify, the others fill up. Without `use_annotation`
    no annotation.json is read (key and tempo are then estimated from the audio)."""
    tracks = sorted(p for p in split_dir(data_dir, split).iterdir() if p.is_dir() and not p.name.startswith("."))
    rng = np.random.default_rng(seed)
    rng.shuffle(tracks)
    loaded = {t: _read_track(t, sr, use_annotation) for t in tracks}
    cands: list[tuple[int, Path, float]] = []
    for t, (stems, _) in loaded.items():
        dur = len(stems["bass"]) / sr
        offsets = np.arange(0.0, max(dur - seconds, 0.0) + 1e-9, seconds)
        cands += [(k, t, float(o)) for k, o in enumerate(offsets)]
    cands.sort(key=lambda c: c[0])  # round robin: first region of every track first
    good, rest = [], []
    for _, t, o in cands:
        seg = _make_segment(t, *loaded[t], o, seconds, sr)
        full = not any(is_empty(seg.stems[s]) for s in STEMS)
        (good if full or not require_all else rest).append(seg)
        if len(good) >= n:
            break
    return (good + rest)[:n]


def pick_mismatched(segments: list[Segment], i: int, min_tempo_ratio: float = 1.05) -> int:
    """Index of the mismatched reference of segment i: another track, another key (tonic
    of the relative major) and a tempo differing by >= 5 %; the most different tempo among
    those, else any other track (-1 when there is none)."""
    me = segments[i]
    others = [j for j, s in enumerate(segments) if s.track != me.track]
    if not others:
        return -1

    def tempo_gap(j: int) -> float:
        t = segments[j].tempo
        return abs(np.log(t / me.tempo)) if np.isfinite(t) and np.isfinite(me.tempo) else 0.0

    ok = [j for j in others if segments[j].key_pc != me.key_pc and tempo_gap(j) >= np.log(min_tempo_ratio)]
    return max(ok or others, key=lambda j: (tempo_gap(j), -j))
