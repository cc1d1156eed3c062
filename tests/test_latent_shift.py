"""scripts/latent_shift.py: a VAE against itself shifts nothing, against another VAE something,
silent stems are skipped, and an empty split is a clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from msldm.checkpoint import save_checkpoint
from msldm.config import get_preset
from msldm.spectral_vae import SpectralVAE
from tests.script_loader import load_script

SR = 22050


def _corpus(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for i in range(2):
        track = root / "test" / f"Track{i:05d}"
        track.mkdir(parents=True)
        for stem in ("bass", "drums", "guitar", "piano"):
            audio = np.zeros(SR) if stem == "drums" else 0.1 * rng.standard_normal(SR)
            sf.write(track / f"{stem}.wav", audio.astype(np.float32), SR)
    return root


def test_latent_shift_is_zero_against_itself_and_positive_against_another(tmp_path: Path) -> None:
    script = load_script("latent_shift")
    cfg = get_preset("tiny_spectral")
    torch.manual_seed(0)
    a, b = SpectralVAE(cfg.vae).eval(), SpectralVAE(cfg.vae).eval()
    tracks = sorted((_corpus(tmp_path) / "test").glob("Track*"))
    same, other = script.shift(a, a, tracks, 0.5), script.shift(a, b, tracks, 0.5)
    assert same["drums"] == [] and other["drums"] == []  # silent: skipped
    assert all(v == [0.0, 0.0] for k, v in same.items() if k != "drums")
    assert all(len(v) == 2 and min(v) > 0.1 for k, v in other.items() if k != "drums")


def test_latent_shift_cli(tmp_path: Path, capsys) -> None:
    script = load_script("latent_shift")
    cfg = get_preset("tiny_spectral")
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "vae.safetensors", "vae", cfg, SpectralVAE(cfg.vae))
    assert script.main([str(ckpt), "--base", str(ckpt), "--data", str(_corpus(tmp_path / "c")), "--seconds", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "bass: 0.000 over 2 tracks" in out and "drums: silent throughout" in out
    with pytest.raises(SystemExit, match="no Track"):
        script.main([str(ckpt), "--data", str(tmp_path / "empty")])
