"""scripts/vae_level.py: a decoder that gives back half the amplitude reads -6 dB on every
measure, one that gives back the input 0 dB, silent stems are skipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.script_loader import load_script

SR = 22050


class _ScaledVAE:
    """encode: the audio itself; decode: `gain` times it."""

    hop = 320

    def __init__(self, gain: float) -> None:
        self.gain = gain

    def encode(self, audio: torch.Tensor) -> tuple[torch.Tensor, None]:
        return audio, None

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.gain * z


def test_vae_level_reads_a_decoders_gain(tmp_path: Path) -> None:
    script = load_script("vae_level")
    rng = np.random.default_rng(0)
    for i in range(2):
        track = tmp_path / f"Track{i:05d}"
        track.mkdir()
        for stem in ("bass", "drums", "guitar", "piano"):
            audio = np.zeros(SR) if stem == "drums" else 0.1 * rng.standard_normal(SR)
            sf.write(track / f"{stem}.wav", audio.astype(np.float32), SR)
    tracks = sorted(tmp_path.glob("Track*"))
    half = script.offsets(_ScaledVAE(0.5), tracks, 1.0)
    same = script.offsets(_ScaledVAE(1.0), tracks, 1.0)
    assert half["drums"] == {"rms": [], "frames": []}  # silent: skipped
    for stem in ("bass", "guitar", "piano"):
        assert half[stem]["rms"] == pytest.approx([-6.02, -6.02], abs=0.01)
        assert half[stem]["frames"] == pytest.approx([-6.02, -6.02], abs=0.01)
        assert same[stem]["rms"] == pytest.approx([0.0, 0.0], abs=1e-6)
