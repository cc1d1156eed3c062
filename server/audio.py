"""Audio plumbing of the daemon: mono mixdown, rate conversion (soxr), validation, WAV I/O.

Everything here is numpy on `[N]` mono or `[N, ch]` interleaved float32 audio. Changing an
audio signal's sample rate is "rate conversion" (`convert_rate`, `StreamRateConverter`):
"resample" is the sampler's word (RePaint passes per step, a `generate` field on the wire).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from plugin_bridge.protocol import ErrorCode, ProtocolError

SILENCE = 1e-7
"""Peak amplitude at or below which a stem counts as digital silence (-140 dBFS)."""


def to_mono(audio: np.ndarray) -> np.ndarray:
    """`[N]` or `[N, ch]` -> `[N]` float32, the mean of the channels (the mixdown used for conditioning)."""
    a = np.asarray(audio, dtype=np.float32)
    return a if a.ndim == 1 else a.mean(axis=1, dtype=np.float32)


def convert_rate(audio: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Convert `[N]` or `[N, ch]` from `in_rate` to `out_rate` (soxr HQ). Same rate: a copy.

    Returns exactly `round(N * out_rate / in_rate)` frames (soxr's length, padded or cut by
    at most a sample), so lengths stay predictable."""
    a = np.asarray(audio, dtype=np.float32)
    n_out = exact_length(a.shape[0], in_rate, out_rate)
    if in_rate == out_rate or a.shape[0] == 0:
        return a.copy()
    y = soxr.resample(a, in_rate, out_rate, quality="HQ").astype(np.float32)
    return fit_length(y, n_out)


def exact_length(n: int, in_rate: int, out_rate: int) -> int:
    """Frames of `n` frames at `in_rate` once converted to `out_rate`: round(n * out / in)."""
    return (n * out_rate + in_rate // 2) // in_rate


def fit_length(a: np.ndarray, n: int) -> np.ndarray:
    """Cut or zero-pad the first axis of `a` to `n`."""
    if a.shape[0] >= n:
        return a[:n]
    pad = [(0, n - a.shape[0])] + [(0, 0)] * (a.ndim - 1)
    return np.pad(a, pad)


class StreamRateConverter:
    """Chunked rate conversion of one mono stream that adds up to exactly `total_out` samples.

    `push(chunk, last)` returns the output available so far; after the last push the
    concatenated outputs are `total_out` samples long (soxr's streaming output, cut or
    zero-padded at the end by at most a few samples)."""

    def __init__(self, in_rate: int, out_rate: int, total_out: int):
        self.total_out, self.emitted = total_out, 0
        self.stream = None if in_rate == out_rate else soxr.ResampleStream(
            in_rate, out_rate, 1, dtype="float32", quality="HQ")

    def push(self, chunk: np.ndarray, last: bool = False) -> np.ndarray:
        x = np.ascontiguousarray(chunk, dtype=np.float32)
        y = x if self.stream is None else self.stream.resample_chunk(x, last=last)
        y = y[: max(0, self.total_out - self.emitted)]
        if last and self.emitted + len(y) < self.total_out:
            y = fit_length(y, self.total_out - self.emitted)
        self.emitted += len(y)
        return np.asarray(y, dtype=np.float32)


def check_finite(audio: np.ndarray, what: str, job_id: str | None = None) -> None:
    """Raise NON_FINITE if `audio` holds NaN or Inf."""
    if not np.isfinite(audio).all():
        raise ProtocolError(ErrorCode.NON_FINITE, f"{what} contains NaN or Inf samples", job_id)


def is_silent(audio: np.ndarray) -> bool:
    """True when the peak amplitude is at most SILENCE (or the array is empty)."""
    return audio.size == 0 or float(np.max(np.abs(audio))) <= SILENCE


# ----------------------------------------------------------------------------- files

def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """`(audio [N] or [N, ch] float32, sample_rate)` of a sound file."""
    audio, rate = sf.read(str(path), dtype="float32", always_2d=False)
    return audio, int(rate)
