"""scripts/vae_phase_check.py: the swapped resyntheses, onset bins and steady peaks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from msldm.config import get_preset
from msldm.spectral_vae import SpectralVAE
from tests.script_loader import load_script


def test_onset_bins_and_steady_peaks() -> None:
    script = load_script("vae_phase_check")
    db = torch.full((1, 5, 8), -60.0)
    db[0, 2, 3:] = -10.0  # bin 2 starts at frame 3 and holds
    db[0, 1, 3:] = -25.0  # its neighbour, quieter
    logmag = db / 20.0 * math.log(10.0)
    on = script.onset_bins(logmag)[0]
    assert on[2].tolist() == [False] * 3 + [True] * 3 + [False] * 2
    assert on[0].sum() == 0
    peaks = script.steady_peaks(logmag)[0]
    assert peaks[2, 6] and not peaks[1, 6]  # the peak, not its quieter neighbour
    assert not peaks[2, 3]  # the onset frame is not steady
    assert peaks[..., :3].sum() == 0  # frames of the rest before it: 50 dB down, noise


@pytest.mark.parametrize("low", [False, True])
def test_variants_swap_the_original_in(low: bool) -> None:
    import dataclasses

    script = load_script("vae_phase_check")
    torch.manual_seed(0)
    cfg = get_preset("tiny_spectral").vae
    if low:  # a low-band head with its gate: both heads' parts are swapped, the tone below its crossover
        cfg = dataclasses.replace(cfg, low_n_fft=2560, low_gate=True, low_crossover=(500.0, 700.0))
    vae = SpectralVAE(cfg).eval()
    t = np.arange(64 * vae.hop) / 22050
    x = torch.tensor(0.3 * np.sin(2 * np.pi * 440.0 * t), dtype=torch.float32)[None, None]
    out, errors, low_errors = script.variants(vae, x)
    assert (low_errors is not None) == low
    assert set(out) == set(script.VARIANTS)
    assert all(y.shape == (x.shape[-1],) for y in out.values())
    ref = x[0, 0].numpy()
    mid = slice(8 * vae.hop, -8 * vae.hop)

    def corr(y):
        return float(np.abs(np.corrcoef(ref[mid], y[mid])[0, 1]))

    # the original's magnitudes and IF deviations resynthesise the tone at its level; an
    # untrained decoder's magnitudes do not, whatever the phase
    assert abs(np.std(out["both-true"][mid]) - np.std(ref[mid])) < 0.05 * np.std(ref[mid])
    assert corr(out["recon"]) < 0.5 and corr(out["true-phase"]) < 0.9
    for e in (errors, low_errors) if low else (errors,):
        assert e.ndim == 1 and len(e) > 0 and (e <= math.pi + 1e-6).all()


def test_a_vae_without_an_if_phase_is_refused_before_any_data_is_read(tmp_path) -> None:
    from msldm.checkpoint import save_checkpoint
    from msldm.vae_models import build_vae

    script = load_script("vae_phase_check")
    config = get_preset("tiny")  # the DAC-style VAE: its config names a phase it does not have
    ckpt = save_checkpoint(tmp_path / "dac.safetensors", "vae", config, build_vae(config.vae))
    with pytest.raises(SystemExit, match="not a spectral SourceVAE"):
        script.main(["--vae", str(ckpt), "--data", str(tmp_path / "no-such-corpus")])
