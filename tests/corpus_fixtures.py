"""A toy corpus in the paper's layout, shared by the latent-extraction and training tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from msldm.config import STEMS

SR = 22050


def write_corpus(root: Path, splits: dict[str, int], seconds: float = 1.0, seed: int = 0, *,
                 burst_threshold: float = 0.5, silent_piano_in_last_train: bool = False) -> None:
    """`<root>/<split>/TrackNNNNN/<stem>.wav`: a tone per tonal stem, noise bursts for drums
    (where a 4 Hz sine exceeds `burst_threshold`); optionally the last train track has a
    silent piano (no file)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    for split, n in splits.items():
        for i in range(n):
            track = root / split / f"Track{i + 1:05d}"
            track.mkdir(parents=True)
            for stem, f0 in zip(STEMS, (55.0, 0.0, 196.0, 392.0)):
                if silent_piano_in_last_train and split == "train" and i == n - 1 and stem == "piano":
                    continue
                x = (rng.normal(0, 0.2, t.size) * (np.sin(2 * np.pi * 4 * t) > burst_threshold)
                     if stem == "drums" else 0.3 * np.sin(2 * np.pi * f0 * rng.uniform(1, 1.5) * t))
                sf.write(str(track / f"{stem}.wav"), x.astype(np.float32), SR, subtype="FLOAT")
