"""Latent caches: the SourceVAE posterior mean of every stem of every track, and their chunks.

Layout of a latents folder (written by `extract_latents`, read by `LatentChunks`):

- `<out>/<split>/<track>.npy`: `[K, C, T]` posterior means (float32 or float16), T = ceil(N / D).
- `<out>/<split>/<track>.rms.npy`: `[K, T]` audio RMS of each stem per latent frame (D samples),
  so the MSDM-style activity filter works for any window length without the audio.
- `<out>/index.json`: stems, D, C, sample rate, the VAE checkpoint and its config, frames per track.
- `<out>/stats.json`: per-channel statistics of the train split (see `latent_stats`).

Extraction is resumable: a track whose `.npy` exists is skipped (files are written atomically,
the latents last). Latent normalisation (the diffusion model sees `(z - latent_mean) /
latent_std`) uses `latent_std = channel_std / sigma_data`, so normalised latents have the scale
EDM's preconditioning assumes (sigma_data = 0.4 in Sec. 2.2 of the MSLDM paper).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from msldm.atomic import atomic_write, atomic_write_text
from msldm.data.slakh import ActivityFilter, Track, chunk_rms, find_tracks, frame_rms

FORMAT = "msldm-latents"


def _atomic_save(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, array))


def _atomic_json(path: Path, obj: dict) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True))


def _windows(T: int, window: int, context: int) -> list[tuple[int, int, int, int]]:
    """Encoding windows `(first, last, lo, hi)` in frames: frames [first, last) are kept from the
    encoding of frames [lo, hi), which adds up to `context` frames on each side."""
    out = []
    for f in range(0, T, window):
        last = min(f + window, T)
        out.append((f, last, max(f - context, 0), min(last + context, T)))
    return out


@torch.no_grad()
def encode_track(vae: torch.nn.Module, audio: np.ndarray, window_frames: int = 512,
                 context_frames: int = 16, batch: int = 8,
                 device: torch.device | str = "cpu") -> np.ndarray:
    """Posterior means of every stem of `audio` `[K, N]` -> `[K, C, ceil(N / D)]` float32.

    The track is encoded in windows of `window_frames` frames with `context_frames` of audio
    context on each side (so memory stays bounded); windows of the same length are batched,
    `batch` at a time.
    """
    D, C = vae.hop, vae.latent_dim
    K, N = audio.shape
    T = -(-N // D)
    padded = np.pad(audio, ((0, 0), (0, T * D - N)))
    out = np.zeros((K, C, T), dtype=np.float32)
    jobs = [(k,) + w for w in _windows(T, window_frames, context_frames) for k in range(K)]
    by_length: dict[int, list[tuple[int, ...]]] = {}
    for j in jobs:  # windows of equal length are batched together
        by_length.setdefault(j[4] - j[3], []).append(j)
    for group in by_length.values():
        for i in range(0, len(group), batch):
            _encode_jobs(vae, padded, group[i:i + batch], out, device)
    return out


def _encode_jobs(vae: torch.nn.Module, padded: np.ndarray, jobs: list[tuple[int, ...]],
                 out: np.ndarray, device: torch.device | str) -> None:
    """Encode windows `(k, first, last, lo, hi)` of equal length in one batch `[B, 1, n]`;
    write the kept frames into `out` `[K, C, T]`."""
    D = vae.hop
    x = np.stack([padded[k, lo * D:hi * D] for k, _, _, lo, hi in jobs])[:, None]  # [B, 1, n]
    mean, _ = vae.encode(torch.from_numpy(x).to(device))  # [B, C, hi - lo]
    mean = mean.float().cpu().numpy()
    for b, (k, first, last, lo, _) in enumerate(jobs):
        out[k, :, first:last] = mean[b, :, first - lo:last - lo]


def extract_latents(vae: torch.nn.Module, data_root: str | Path, out_dir: str | Path, *,
                    stems: tuple[str, ...], splits: Iterable[str] = ("train", "validation", "test"),
                    sample_rate: int = 22050, batch: int = 8, window_frames: int = 512,
                    device: torch.device | str = "cpu", dtype: str = "float32",
                    sigma_data: float = 0.4, meta: dict | None = None,
                    progress: bool = True) -> dict:
    """Encode every stem of every track of `splits` under `data_root` into `out_dir`.

    `stems` is the data order (`("mix",)` encodes the sum of the four stems, for MixLDM).
    Resumable: tracks already written are skipped. Returns the index dict (also
    `index.json`); `stats.json` is computed from the train split when it exists.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    header = {"format": FORMAT, "version": 1, "stems": list(stems), "hop": vae.hop,
              "latent_dim": vae.latent_dim, "sample_rate": sample_rate, **(meta or {})}
    _check_header(out_dir, header)
    old = out_dir / "index.json"  # splits extracted by an earlier call stay listed
    index = dict(header, splits=json.loads(old.read_text()).get("splits", {}) if old.is_file() else {})
    for split in splits:
        if not (Path(data_root) / split).is_dir():
            continue
        index["splits"][split] = _extract_split(vae, Path(data_root), out_dir, split, stems,
                                                sample_rate, batch, window_frames, device,
                                                dtype, progress)
    _atomic_json(out_dir / "index.json", index)
    if "train" in index["splits"]:
        _atomic_json(out_dir / "stats.json", latent_stats(out_dir, "train", sigma_data))
    return index


def _check_header(out_dir: Path, header: dict) -> None:
    """Refuse to resume into a folder made with another VAE / stems; write the header."""
    path = out_dir / "extract.json"
    if path.is_file():
        old = json.loads(path.read_text())
        keys = ("stems", "hop", "latent_dim", "sample_rate", "vae_sha256")
        diff = [k for k in keys if old.get(k) != header.get(k)]
        if diff:
            raise ValueError(f"{out_dir} holds latents made differently ({diff}); use another --out")
    _atomic_json(path, header)


def _extract_split(vae: torch.nn.Module, root: Path, out_dir: Path, split: str,
                   stems: tuple[str, ...], sample_rate: int, batch: int, window_frames: int,
                   device: torch.device | str, dtype: str, progress: bool) -> dict[str, int]:
    """Encode one split; returns {track name: T}."""
    folder = out_dir / split
    folder.mkdir(parents=True, exist_ok=True)
    frames: dict[str, int] = {}
    tracks = find_tracks(root, split)
    for path in tqdm(tracks, desc=f"latents {split}", disable=not progress, unit="track"):
        target = folder / f"{path.name}.npy"
        if target.is_file():  # resume: done before
            frames[path.name] = int(np.load(target, mmap_mode="r").shape[-1])
            continue
        audio = Track(path, sample_rate, stems).read()  # [K, N]
        _atomic_save(folder / f"{path.name}.rms.npy", frame_rms(audio, vae.hop))
        z = encode_track(vae, audio, window_frames, batch=batch, device=device)
        _atomic_save(target, z.astype(dtype))
        frames[path.name] = z.shape[-1]
    return frames


def latent_stats(out_dir: str | Path, split: str = "train", sigma_data: float = 0.4) -> dict:
    """Per-channel statistics of all frames of all stems of `split` (float64 accumulation).

    Returns {"latent_mean": [C], "channel_std": [C], "latent_std": [C] = channel_std /
    sigma_data, "sigma_data", "frames", "split"}: `(z - latent_mean) / latent_std` has
    per-channel std sigma_data.
    """
    s1 = s2 = None
    n = 0
    for f in sorted((Path(out_dir) / split).glob("*.npy")):
        if f.name.endswith(".rms.npy") or ".tmp" in f.name:  # `.tmp.npy`: left by a run before msldm.atomic
            continue
        z = np.load(f, mmap_mode="r").astype(np.float64)  # [K, C, T]
        z = z.transpose(1, 0, 2).reshape(z.shape[1], -1)  # [C, K*T]
        s1 = z.sum(1) if s1 is None else s1 + z.sum(1)
        s2 = (z ** 2).sum(1) if s2 is None else s2 + (z ** 2).sum(1)
        n += z.shape[1]
    if not n:
        raise ValueError(f"no latents in {Path(out_dir) / split}")
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean ** 2, 1e-12))
    return {"latent_mean": mean.tolist(), "channel_std": std.tolist(),
            "latent_std": (std / sigma_data).tolist(), "sigma_data": sigma_data,
            "frames": n, "split": split}


def load_stats(latents_dir: str | Path) -> dict[str, torch.Tensor]:
    """`stats.json` as {"latent_mean": [C], "latent_std": [C]} float32 tensors."""
    s = json.loads((Path(latents_dir) / "stats.json").read_text())
    return {k: torch.tensor(s[k], dtype=torch.float32) for k in ("latent_mean", "latent_std")}


class LatentChunks(Dataset):
    """Windows of `window_frames` latent frames; `ds[i]` -> float32 `[K', C, window_frames]`.

    `stems` picks a subset (ISLDM trains one stem: `stems=("bass",)`); default: all stems of the
    cache, in its order. The MSDM-style `activity` filter uses the stored per-frame RMS.
    Latents are returned raw (not normalised; the trainer normalises with the stats).
    """

    def __init__(self, latents_dir: str | Path, split: str, window_frames: int,
                 hop_frames: int | None = None, stems: tuple[str, ...] | None = None,
                 activity: ActivityFilter = ActivityFilter()):
        self.dir = Path(latents_dir)
        self.header = json.loads((self.dir / "index.json").read_text())
        all_stems = tuple(self.header["stems"])
        self.stems = tuple(stems) if stems else all_stems
        missing = [s for s in self.stems if s not in all_stems]
        if missing:
            raise ValueError(f"{latents_dir} has no stems {missing}; it has {all_stems}")
        self.rows = [all_stems.index(s) for s in self.stems]
        self.window = window_frames
        hop = hop_frames or window_frames
        self.names = sorted(self.header["splits"].get(split, {}))
        self.index: list[tuple[int, int]] = []
        for t, name in enumerate(self.names):
            rms = np.load(self.dir / split / f"{name}.rms.npy")[self.rows]  # [K', T]
            starts, crms = chunk_rms(rms, window_frames, hop)
            keep = activity.keep(crms, self.stems) & activity.keep_frames(rms, starts, window_frames, self.stems)
            self.index += [(t, int(s)) for s in starts[keep]]
        self.split = split
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.index)

    def _array(self, t: int) -> np.ndarray:
        if t not in self._cache:
            self._cache[t] = np.load(self.dir / self.split / f"{self.names[t]}.npy", mmap_mode="r")
        return self._cache[t]

    def __getitem__(self, i: int) -> torch.Tensor:
        t, start = self.index[i]
        z = self._array(t)[self.rows, :, start:start + self.window]  # [K', C, W]
        return torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32))


class ResidentWindows(Dataset):
    """The windows of a `LatentChunks`, held as one tensor on `device`; `gather(items)` cuts a
    whole batch `[B, K', C, W]` there with one indexing operation.

    For a GPU run: a DataLoader's workers would copy every batch (84 MB at batch 256 of the cpu
    preset's `[4, 80, 256]` windows) through shared memory and pinned memory, which held an H200
    run to a few steps per second. Each track contributes only the frames its kept windows cover
    (`ds.index` unchanged, so `gather(items)` equals `stack([ds[i] for i in items])`).
    """

    def __init__(self, chunks: LatentChunks, device: torch.device | str):
        self.window, self.device = chunks.window, torch.device(device)
        spans: dict[int, tuple[int, int]] = {}  # track -> the frames its kept windows cover
        for t, start in chunks.index:
            lo, hi = spans.get(t, (start, start))
            spans[t] = (min(lo, start), max(hi, start + chunks.window))
        K, C = len(chunks.rows), int(chunks.header["latent_dim"])
        self.data = torch.empty(K, C, sum(hi - lo for lo, hi in spans.values()), device=self.device)
        where, offset = {}, 0
        for t, (lo, hi) in sorted(spans.items()):  # one track at a time: no second copy of the set
            self.data[:, :, offset:offset + hi - lo] = torch.from_numpy(
                np.ascontiguousarray(chunks._array(t)[chunks.rows, :, lo:hi], dtype=np.float32))
            where[t] = offset - lo  # frame `start` of track t is column `start + where[t]`
            offset += hi - lo
        self.starts = torch.tensor([start + where[t] for t, start in chunks.index],
                                   dtype=torch.long, device=self.device)
        self._frames = torch.arange(self.window, device=self.device)

    def __len__(self) -> int:
        return int(self.starts.numel())

    def gather(self, items: list[int]) -> torch.Tensor:
        """Windows `items` as float32 `[B, K', C, W]` on the device."""
        idx = torch.as_tensor(items, dtype=torch.long).to(self.device)
        cols = self.starts[idx][:, None] + self._frames[None]  # [B, W]
        return self.data[:, :, cols].permute(2, 0, 1, 3).contiguous()  # [K', C, B, W] -> [B, K', C, W]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.gather([i])[0]
