"""Slakh2100 loaders: the paper-code layout and the original release, as `[K, N]` chunks.

Two on-disk layouts give the same stems (Sec. 3 of the MSLDM paper: K = 4 stems bass, drums,
guitar, piano at 22050 Hz):

- "stems" (the layout of the MSDM/MSLDM code, and what `msldm data synth` writes):
  `<root>/<split>/TrackNNNNN/{bass,drums,guitar,piano}.wav`. A missing file is silence.
- "original" (the Slakh2100 release): `<root>/<split>/TrackNNNNN/metadata.yaml` +
  `stems/SNN.flac`. Each stem of `metadata.yaml` has an `inst_class`; `CLASS_TO_STEM` groups
  the classes into our stems (Bass -> bass, Drums -> drums, Guitar -> guitar, Piano -> piano).
  Several Slakh stems of one class are summed; stems of any other class (Strings, Organ,
  Synth Lead, ...) are ignored, like the paper's code does; a class a track lacks is silence;
  stems marked `audio_rendered: false` or without a file are skipped. Audio is resampled to the
  model rate with soxr.

`SlakhChunks` cuts every track into chunks of `chunk_len` samples every `hop` samples and keeps
(MSDM-style) only the chunks where the chosen stems are active (RMS above a threshold). The
chunk index is built once and cached per root (JSON next to the data, or in `cache_dir`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from msldm.atomic import atomic_write_text
from msldm.audio import convert_rate
from msldm.config import MIX, STEMS

CLASS_TO_STEM: dict[str, str] = {"Bass": "bass", "Drums": "drums", "Guitar": "guitar",
                                 "Piano": "piano"}
"""Slakh `inst_class` -> stem; classes not listed are ignored (not part of any stem)."""


_CONTEXT_S = 0.05  # resampler context read around a chunk of the original layout, seconds


@dataclass(frozen=True)
class ActivityFilter:
    """Keep a chunk if at least `min_active` of `stems` have RMS > `threshold` (MSDM-style).

    `stems=None` means all stems of the data set; `min_active=None` means all chosen stems.
    `threshold=0` keeps every chunk. `min_frame_share` > 0 (latent chunks only, where the
    per-frame RMS is stored): a stem counts as active only if that share of the chunk's
    frames is above `frame_threshold` too, so parts that play through the window are kept
    and parts that drop out for most of it are not. `stem_frame_share` sets that share for
    named stems (`(("guitar", 0.8),)`), the others keep `min_frame_share`.
    """

    stems: tuple[str, ...] | None = None
    threshold: float = 1e-3  # linear RMS, -60 dBFS
    min_active: int | None = None
    min_frame_share: float = 0.0
    frame_threshold: float = 3e-4  # linear RMS of one latent frame, -70 dBFS
    stem_frame_share: tuple[tuple[str, float], ...] = ()

    def keep_frames(self, frames_rms: np.ndarray, starts: np.ndarray, chunk_frames: int,
                    names: tuple[str, ...]) -> np.ndarray:
        """`frames_rms` `[K, T]`, chunk `starts` `[M]` -> bool `[M]`: the `min_frame_share` rule."""
        chosen = [s for s in (self.stems or names) if s in names]
        shares = dict(self.stem_frame_share)
        need_share = np.array([shares.get(s, self.min_frame_share) for s in chosen])[:, None]
        if not (need_share > 0).any() or not len(starts):
            return np.ones(len(starts), dtype=bool)
        rows = [names.index(s) for s in chosen]
        on = np.concatenate([np.zeros((len(rows), 1)), np.cumsum(frames_rms[rows] > self.frame_threshold, axis=1)], 1)
        share = (on[:, starts + chunk_frames] - on[:, starts]) / chunk_frames  # [K', M]
        active = (share >= need_share).sum(axis=0)
        need = len(rows) if self.min_active is None else min(self.min_active, len(rows))
        return active >= need

    def keep(self, rms: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
        """`rms` `[K, M]` per stem and chunk -> bool `[M]`, the chunks to keep."""
        if self.threshold <= 0:
            return np.ones(rms.shape[1], dtype=bool)
        chosen = self.stems or names
        rows = [names.index(s) for s in chosen if s in names]
        active = (rms[rows] > self.threshold).sum(axis=0) if rows else np.zeros(rms.shape[1])
        need = len(rows) if self.min_active is None else min(self.min_active, len(rows))
        return active >= need


def find_tracks(root: str | Path, split: str | None = None) -> list[Path]:
    """Track folders (`Track*` with stem wavs or `metadata.yaml`) under `root[/split]`, sorted."""
    base = Path(root) / split if split else Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"no data folder {base}")
    return sorted(p for p in base.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and _layout(p) is not None)


def _layout(track: Path) -> str | None:
    if (track / "metadata.yaml").is_file():
        return "original"
    if any((track / f"{s}.wav").is_file() for s in STEMS):
        return "stems"
    return None


def _to_mono(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=1) if x.ndim == 2 else x


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """Crop or zero-pad the last axis of `x` to `n` samples."""
    if x.shape[-1] >= n:
        return x[..., :n]
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n - x.shape[-1])])


class Track:
    """One Slakh track in either layout; reads spans of its K stems at `sample_rate`.

    `files[stem]` lists the audio files summed into that stem (empty: silence).
    """

    def __init__(self, path: str | Path, sample_rate: int = 22050,
                 stems: tuple[str, ...] = STEMS, class_map: dict[str, str] | None = None):
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.stems = tuple(stems)
        self.layout = _layout(self.path)
        if self.layout is None:
            raise FileNotFoundError(f"{self.path} is not a Slakh track folder")
        source = list(STEMS) if MIX in self.stems else list(self.stems)
        self.files = (self._original_files(source, class_map or CLASS_TO_STEM)
                      if self.layout == "original" else
                      {s: [f] for s in source if (f := self.path / f"{s}.wav").is_file()})
        import soundfile as sf  # here: training on latents (a lent GPU box) has no soundfile

        infos = [sf.info(str(f)) for fs in self.files.values() for f in fs]
        self.source_rate = infos[0].samplerate if infos else sample_rate
        if any(i.samplerate != self.source_rate for i in infos):
            raise ValueError(f"{self.path}: stems have different sample rates")
        n_src = max((i.frames for i in infos), default=0)
        self.num_samples = n_src * sample_rate // self.source_rate  # N at the model rate

    def _original_files(self, source: list[str], class_map: dict[str, str]) -> dict[str, list[Path]]:
        import yaml

        meta = yaml.safe_load((self.path / "metadata.yaml").read_text()) or {}
        files: dict[str, list[Path]] = {}
        for sid, info in sorted((meta.get("stems") or {}).items()):
            stem = class_map.get(str((info or {}).get("inst_class")))
            f = self.path / "stems" / f"{sid}.flac"
            if stem in source and (info or {}).get("audio_rendered", True) and f.is_file():
                files.setdefault(stem, []).append(f)
        return files

    def _read_stem(self, stem: str, start_src: int, stop_src: int) -> np.ndarray:
        """Sum of the stem's files over source samples [start_src, stop_src) `[n]`."""
        import soundfile as sf

        out = np.zeros(max(stop_src - start_src, 0), dtype=np.float32)
        for f in self.files.get(stem, []):
            x = _to_mono(sf.read(str(f), start=start_src, stop=stop_src, dtype="float32",
                                 always_2d=False)[0])
            out[: len(x)] += x
        return out

    def read(self, start: int = 0, length: int | None = None) -> np.ndarray:
        """Samples [start, start + length) of every stem at the model rate -> `[K, length]`.

        Past the end of the track is silence. With resampling, the span is read with
        `_CONTEXT_S` of context on each side, aligned so that it matches resampling the
        whole file.
        """
        length = self.num_samples - start if length is None else length
        names = list(STEMS) if MIX in self.stems else list(self.stems)
        if self.source_rate == self.sample_rate:
            x = np.stack([_fit(self._read_stem(s, start, start + length), length) for s in names])
        else:
            x = self._read_resampled(names, start, length)
        x[:, max(self.num_samples - start, 0):] = 0.0  # past the end of the track: silence
        if MIX in self.stems:
            x = x.sum(axis=0, keepdims=True)
        return x.astype(np.float32, copy=False)

    def _read_resampled(self, names: list[str], start: int, length: int) -> np.ndarray:
        g = math.gcd(self.source_rate, self.sample_rate)
        p, q = self.source_rate // g, self.sample_rate // g  # source/model = p/q
        ctx = int(_CONTEXT_S * self.sample_rate)
        m0 = max(start - ctx, 0) // q * q  # model-rate sample aligned with a source sample
        stop_src = math.ceil((start + length + ctx) * p / q)
        rows = []
        for s in names:
            y = convert_rate(self._read_stem(s, m0 * p // q, stop_src), self.source_rate,
                             self.sample_rate)
            rows.append(_fit(y[start - m0:], length))
        return np.stack(rows)


def frame_rms(audio: np.ndarray, frame: int) -> np.ndarray:
    """Per-frame RMS of `audio` `[K, N]` in frames of `frame` samples -> `[K, ceil(N / frame)]`."""
    K, N = audio.shape
    T = -(-N // frame)
    x = _fit(audio, T * frame).reshape(K, T, frame)  # [K, T, frame]
    return np.sqrt((x.astype(np.float64) ** 2).mean(axis=2)).astype(np.float32)


def chunk_rms(frames_rms: np.ndarray, chunk_frames: int, hop_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Chunk RMS from frame RMS `[K, T]` -> (starts `[M]` in frames, rms `[K, M]`).

    Only whole chunks (start + chunk_frames <= T) are returned.
    """
    K, T = frames_rms.shape
    starts = np.arange(0, T - chunk_frames + 1, hop_frames) if T >= chunk_frames else np.zeros(0, int)
    ms = np.concatenate([np.zeros((K, 1)), np.cumsum(frames_rms.astype(np.float64) ** 2, axis=1)], 1)
    rms = np.sqrt((ms[:, starts + chunk_frames] - ms[:, starts]) / chunk_frames)
    return starts.astype(np.int64), rms.astype(np.float32)


@dataclass(frozen=True)
class ChunkSpec:
    """How tracks are cut: `chunk_len` samples every `hop` samples (both multiples of `frame`)."""

    chunk_len: int
    hop: int
    frame: int = 320  # RMS resolution; D of the SourceVAE


class SlakhChunks(Dataset):
    """Active chunks of a Slakh split in either layout; `ds[i]` -> float32 tensor `[K, chunk_len]`.

    Stems come in `stems` order (a `"mix"` stem gives `[1, chunk_len]`, the sum of the four).
    The chunk index (track, start) is built once per root and cached as JSON in `cache_dir`
    (default: `<root>/.msldm_cache`, skipped if not writable).
    """

    def __init__(self, root: str | Path, split: str | None, spec: ChunkSpec,
                 stems: tuple[str, ...] = STEMS, sample_rate: int = 22050,
                 activity: ActivityFilter = ActivityFilter(), cache_dir: str | Path | None = None,
                 class_map: dict[str, str] | None = None):
        self.root, self.split, self.spec = Path(root), split, spec
        self.stems, self.sample_rate, self.activity = tuple(stems), sample_rate, activity
        self.class_map = class_map
        self.tracks = [Track(p, sample_rate, self.stems, class_map) for p in find_tracks(root, split)]
        cache = Path(cache_dir) if cache_dir else self.root / ".msldm_cache"
        self.index: list[tuple[int, int]] = self._load_or_build_index(cache)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> torch.Tensor:
        t, start = self.index[i]
        return torch.from_numpy(self.tracks[t].read(start, self.spec.chunk_len))

    def _key(self) -> str:
        files = [(str(f), os.stat(f).st_mtime_ns, os.stat(f).st_size)
                 for tr in self.tracks for fs in tr.files.values() for f in fs]
        blob = json.dumps([self.split, self.stems, self.sample_rate, asdict(self.spec),
                           asdict(self.activity), self.class_map, files], default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def _load_or_build_index(self, cache: Path) -> list[tuple[int, int]]:
        key = self._key()
        path = cache / f"chunks-{self.split or 'all'}-{key}.json"
        if path.is_file():
            return [tuple(x) for x in json.loads(path.read_text())["index"]]
        index = self.build_index()
        try:
            cache.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps({"key": key, "index": index}))
        except OSError:
            pass  # read-only data: the index is rebuilt next time
        return index

    def build_index(self) -> list[tuple[int, int]]:
        """Scan every track once: [(track number, start sample)] of the chunks that pass the filter."""
        s = self.spec
        if s.chunk_len % s.frame or s.hop % s.frame:
            raise ValueError("chunk_len and hop must be multiples of frame")
        index: list[tuple[int, int]] = []
        for t, track in enumerate(self.tracks):
            rms = frame_rms(track.read(), s.frame)  # [K, T]
            starts, crms = chunk_rms(rms, s.chunk_len // s.frame, s.hop // s.frame)
            keep = self.activity.keep(crms, self.stems)
            index += [(t, int(st) * s.frame) for st in starts[keep]]
        return index
