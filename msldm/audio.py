"""Audio file helpers (numpy + soundfile + soxr; no torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def load_mono(path: str | Path, sample_rate: int) -> np.ndarray:
    """Read a sound file, mix it down to mono and resample to `sample_rate`. Returns `[N]` float32."""
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # [N, channels]
    mono = data.mean(axis=1)
    if sr != sample_rate:
        import soxr

        mono = soxr.resample(mono, sr, sample_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)

