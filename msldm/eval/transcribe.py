"""Note transcription with Spotify's Basic Pitch model (Bittner et al., ICASSP 2022) on onnxruntime.

Only the model file comes from the `basic-pitch` wheel (`saved_models/icassp_2022/nmp.onnx`,
installed without its dependencies, so no tensorflow); the windowing and the note extraction
below are ours, following the published method:

- The model takes 22050 Hz mono windows of 43844 samples (2 s less one hop of 256) and
  returns per window 172 frames (86 fps) of note, onset (88 keys from A0) and contour
  posteriorgrams. Windows overlap by 30 frames; the audio is zero-padded by half of that in
  front, and 15 frames are dropped on each side of every window's output before joining.
- Notes: peaks in time of the onset posteriorgram above `onset_threshold` (with onsets also
  inferred from rises of the note posteriorgram) start notes, latest first; a note lasts
  while the note posteriorgram stays above `frame_threshold`, allowing `ENERGY_TOLERANCE`
  frames below it; notes no longer than `MIN_NOTE_FRAMES` are dropped; a note's frames (and
  its neighbouring keys) are then used up. Remaining strong activations are taken as notes
  too, grown both ways from their peak (the "melodia trick").

`Note` times are seconds from the clip start; `pitch` is a MIDI number (21 = A0).
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

SAMPLE_RATE = 22050
HOP = 256
FPS = SAMPLE_RATE / HOP  # 86.13 frames per second
WINDOW = 2 * SAMPLE_RATE - HOP  # 43844 samples
OVERLAP_FRAMES = 30
MIDI_OFFSET = 21  # key 0 of the posteriorgrams is A0
N_KEYS = 88
ONSET_THRESHOLD = 0.5
FRAME_THRESHOLD = 0.3
MIN_NOTE_FRAMES = 11  # 127.7 ms, Basic Pitch's default minimum note length
ENERGY_TOLERANCE = 11
_OUTPUTS = ("StatefulPartitionedCall:1", "StatefulPartitionedCall:2")  # note, onset


class TranscriberUnavailable(RuntimeError):
    """The `basic-pitch` wheel (for its nmp.onnx) or onnxruntime is not installed."""


@dataclass(frozen=True)
class Note:
    start: float  # s
    end: float  # s
    pitch: int  # MIDI
    amplitude: float  # mean note posterior over the note's frames

    @property
    def duration(self) -> float:
        return self.end - self.start


def model_path() -> Path:
    """Path of Basic Pitch's ONNX model inside the installed `basic-pitch` wheel."""
    spec = importlib.util.find_spec("basic_pitch")
    if spec is None or not spec.submodule_search_locations:
        raise TranscriberUnavailable(
            "Basic Pitch is not installed: pip install --no-deps basic-pitch==0.4.0 "
            "(its model file is all we use; its declared dependencies pull tensorflow)")
    path = Path(spec.submodule_search_locations[0]) / "saved_models" / "icassp_2022" / "nmp.onnx"
    if not path.is_file():
        raise TranscriberUnavailable(f"Basic Pitch's model is missing: {path}")
    return path


SESSION_THREADS = 0
"""onnxruntime threads of the transcription session (0: all cores); `msldm eval --threads` sets it."""


@functools.lru_cache(maxsize=1)
def _session():
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if SESSION_THREADS > 0:
        opts.intra_op_num_threads, opts.inter_op_num_threads = SESSION_THREADS, 1
    return ort.InferenceSession(str(model_path()), opts, providers=["CPUExecutionProvider"])


def posteriorgrams(audio: np.ndarray, batch: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """`audio [N]` at 22050 Hz -> (note, onset) posteriorgrams, each `[floor(N * FPS / SR), 88]`."""
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    n_frames = int(np.floor(len(x) * FPS / SAMPLE_RATE))
    overlap = OVERLAP_FRAMES * HOP
    hop = WINDOW - overlap
    x = np.concatenate([np.zeros(overlap // 2, np.float32), x])
    starts = list(range(0, len(x), hop)) or [0]
    windows = np.zeros((len(starts), WINDOW, 1), np.float32)
    for i, s in enumerate(starts):
        chunk = x[s:s + WINDOW]
        windows[i, :len(chunk), 0] = chunk
    session = _session()
    name = session.get_inputs()[0].name
    notes, onsets = [], []
    for i in range(0, len(windows), batch):
        note, onset = session.run(list(_OUTPUTS), {name: windows[i:i + batch]})
        notes.append(note)
        onsets.append(onset)
    trim = OVERLAP_FRAMES // 2

    def join(parts: list[np.ndarray]) -> np.ndarray:
        out = np.concatenate(parts)[:, trim:-trim]  # [W, frames, 88]
        return out.reshape(-1, N_KEYS)[:n_frames]

    return join(notes), join(onsets)


def _inferred_onsets(onsets: np.ndarray, frames: np.ndarray, n_diff: int = 2) -> np.ndarray:
    """Onsets where the note posteriorgram rises (largest rise over 1..n_diff frames), scaled
    to the onset posteriorgram's maximum, combined with it by maximum."""
    rise = np.zeros_like(frames)
    for n in range(1, n_diff + 1):
        d = np.zeros_like(frames)
        d[n:] = frames[n:] - frames[:-n]
        rise = np.maximum(rise, d)
    rise[:n_diff] = 0.0
    rise = np.clip(rise, 0.0, None)
    if rise.max() > 0:
        rise *= onsets.max() / rise.max()
    return np.maximum(onsets, rise)


def _grow(energy: np.ndarray, key: int, start: int, step: int) -> int:
    """Frame where a note at `key` starting at `start` ends when walking by `step` (+1 / -1)."""
    i, below, last = start, 0, energy.shape[0] - 1
    while 0 < i < last and below < ENERGY_TOLERANCE:
        below = below + 1 if energy[i, key] < FRAME_THRESHOLD else 0
        i += step
    return i - step * below


def _use_up(energy: np.ndarray, a: int, b: int, key: int) -> None:
    energy[a:b, max(0, key - 1):key + 2] = 0.0


def notes_from_posteriorgrams(frames: np.ndarray, onsets: np.ndarray,
                              onset_threshold: float = ONSET_THRESHOLD) -> list[Note]:
    """Notes from `[T, 88]` note and onset posteriorgrams (module docstring). Sorted by start."""
    T = frames.shape[0]
    if T < 3:
        return []
    energy = frames.copy()
    on = _inferred_onsets(onsets, frames)
    peaks = (on[1:-1] > on[:-2]) & (on[1:-1] > on[2:]) & (on[1:-1] >= onset_threshold)
    t_idx, k_idx = np.nonzero(peaks)
    t_idx = t_idx + 1
    found: list[tuple[int, int, int, float]] = []
    for t, k in sorted(zip(t_idx.tolist(), k_idx.tolist()), reverse=True):  # latest onsets first
        if t >= T - 1:
            continue
        end = _grow(energy, k, t + 1, +1)
        if end - t <= MIN_NOTE_FRAMES:
            continue
        found.append((t, end, k, float(frames[t:end, k].mean())))
        _use_up(energy, t, end, k)
    while energy.max() > FRAME_THRESHOLD:  # strong activations without an onset peak
        mid, k = np.unravel_index(int(np.argmax(energy)), energy.shape)
        energy[mid, k] = 0.0
        end = _grow(energy, k, mid + 1, +1)
        start = _grow(energy, k, mid - 1, -1) + 1 if mid > 0 else 0
        start = max(0, start)
        _use_up(energy, start, end, k)
        if end - start <= MIN_NOTE_FRAMES:
            continue
        found.append((start, end, k, float(frames[start:end, k].mean())))
    notes = [Note(float(a / FPS), float(b / FPS), int(k) + MIDI_OFFSET, amp) for a, b, k, amp in found]
    return sorted(notes, key=lambda n: (n.start, n.pitch))


def transcribe(audio: np.ndarray, sr: int = SAMPLE_RATE) -> list[Note]:
    """Notes of a mono clip `audio [N]` at `sr` (resampled to 22050 Hz with soxr if needed)."""
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    if sr != SAMPLE_RATE:
        from msldm.audio import resample
        x = resample(x, sr, SAMPLE_RATE)
    if not np.any(x):
        return []
    frames, onsets = posteriorgrams(x)
    return notes_from_posteriorgrams(frames, onsets)


# ----------------------------------------------------------------------------- summaries

def note_time(notes: Sequence[Note]) -> float:
    """Total note duration (s), overlapping notes counted each."""
    return float(sum(n.duration for n in notes))


def pitch_diagnostics(notes: Sequence[Note], seconds: float, comb_hz: float) -> dict[str, float]:
    """notes per second, pitch range (lowest, highest MIDI; NaN without notes), and the share of
    note time at the MIDI pitch nearest `comb_hz` (the latent frame rate: a decoder comb)."""
    total = note_time(notes)
    comb_pitch = int(round(69 + 12 * np.log2(comb_hz / 440.0)))
    at_comb = sum(n.duration for n in notes if n.pitch == comb_pitch)
    nan = float("nan")
    return {"notes_per_s": len(notes) / max(seconds, 1e-9),
            "pitch_low": float(min(n.pitch for n in notes)) if notes else nan,
            "pitch_high": float(max(n.pitch for n in notes)) if notes else nan,
            "comb_share": at_comb / total if total > 0 else nan}


def note_f1(reference: Sequence[Note], estimate: Sequence[Note], onset_tolerance: float = 0.05) -> float:
    """Onset-only note F1 (mir_eval.transcription: pitch within 50 cents, onset within
    `onset_tolerance` s, offsets ignored). 1.0 when both are empty, 0.0 when only one is."""
    if not reference and not estimate:
        return 1.0
    if not reference or not estimate:
        return 0.0
    import mir_eval

    def arrays(notes: Sequence[Note]) -> tuple[np.ndarray, np.ndarray]:
        iv = np.array([[n.start, max(n.end, n.start + 1e-3)] for n in notes])
        hz = 440.0 * 2.0 ** ((np.array([n.pitch for n in notes], float) - 69) / 12)
        return iv, hz

    ri, rp = arrays(reference)
    ei, ep = arrays(estimate)
    _, _, f, _ = mir_eval.transcription.precision_recall_f1_overlap(
        ri, rp, ei, ep, onset_tolerance=onset_tolerance, offset_ratio=None)
    return float(f)
