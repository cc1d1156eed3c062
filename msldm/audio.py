"""Audio file helpers (numpy + soundfile + soxr; no torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def convert_rate(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Sample-rate conversion (soxr, HQ, as the daemon's `server.audio.convert_rate`): `x [N]`
    (or `[N, channels]`) from sr_in to sr_out Hz. Not "resample", the sampler's RePaint takes."""
    x = np.asarray(x, dtype=np.float32)
    if sr_in == sr_out:
        return x
    import soxr

    return np.ascontiguousarray(soxr.resample(x, sr_in, sr_out, quality="HQ"), dtype=np.float32)


resample = convert_rate
"""Old name of `convert_rate`, kept while msldm/eval still imports it."""


def load_mono(path: str | Path, sample_rate: int) -> np.ndarray:
    """Read a sound file, mix it down to mono and convert it to `sample_rate`. Returns `[N]` float32."""
    import soundfile as sf  # here: training on latents (a lent GPU box) has no soundfile

    data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # [N, channels]
    mono = data.mean(axis=1)
    mono = convert_rate(mono, sr, sample_rate)
    return np.ascontiguousarray(mono, dtype=np.float32)

