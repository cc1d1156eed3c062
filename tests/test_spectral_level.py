"""The spectral SourceVAE's level term (`VAELossConfig.lambda_level`): it is the level of the
audio, frame by frame, not its waveform; it joins the loss at its weight and trains the
decoder (the training command's `--level-weight`: tests/test_train.py)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from msldm.config import get_preset
from msldm.spectral_losses import level_loss, spectral_vae_loss
from msldm.spectral_vae import SpectralVAE


def test_the_level_term_is_the_level() -> None:
    torch.manual_seed(4)
    x = 0.1 * torch.randn(2, 1, 26 * 320)
    assert float(level_loss(x, x)) == 0.0
    assert float(level_loss(0.5 * x, x)) == pytest.approx(math.log(2.0), rel=1e-4)
    assert float(level_loss(2.0 * x, x)) == pytest.approx(math.log(2.0), rel=1e-4)
    assert float(level_loss(-x, x)) == pytest.approx(0.0, abs=1e-6)  # the level, not the waveform
    quiet_half = x.clone()
    quiet_half[..., x.shape[-1] // 2:] *= 0.5  # 6 dB under over half the frames
    assert 0.3 * math.log(2.0) < float(level_loss(quiet_half, x)) < 0.7 * math.log(2.0)


def test_the_level_term_joins_the_loss_and_trains_the_decoder() -> None:
    torch.manual_seed(1)
    x = 0.1 * torch.randn(2, 1, 26 * 320)
    loss_cfg = dataclasses.replace(get_preset("tiny_spectral").vae_loss, lambda_level=2.0)
    vae = SpectralVAE(get_preset("tiny_spectral").vae)
    terms = spectral_vae_loss(vae, x, loss_cfg, sample_posterior=False)
    without = spectral_vae_loss(vae, x, dataclasses.replace(loss_cfg, lambda_level=0.0), sample_posterior=False)
    assert "level" not in without
    assert float(terms["loss"]) == pytest.approx(float(without["loss"]) + 2.0 * float(terms["level"]), rel=1e-5)
    terms["level"].backward()
    assert float(vae.decoder[-1].weight.grad.abs().sum()) > 0.0  # the magnitudes answer for it
