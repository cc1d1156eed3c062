"""The spectral SourceVAE's level head (`VAEConfig.level_gain`): it starts at gain 1, so a VAE
given one plays as the VAE it was loaded from; its per-frame gain scales both heads; the losses
on the audio train it and the log-magnitude term does not; it changes no latent; the training
command takes it; and the decoder graph exports it with plain operators at parity."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from msldm.config import get_preset
from msldm.spectral_losses import level_loss, spectral_vae_loss
from msldm.spectral_vae import SpectralVAE, load_with_new_low_head
from tests.script_loader import load_script

SR = 22050
TRUE_SPECTRA = load_script("low_band_check").true_spectra


def _cfg(**fields):
    return dataclasses.replace(get_preset("tiny_spectral").vae, **fields)


@pytest.mark.parametrize("low_n_fft", [0, 1280])
def test_a_level_head_starts_at_gain_one_and_loads_onto_a_vae_without_one(low_n_fft: int) -> None:
    torch.manual_seed(0)
    plain = SpectralVAE(_cfg(low_n_fft=low_n_fft)).eval()
    level = SpectralVAE(_cfg(low_n_fft=low_n_fft, level_gain=True)).eval()
    assert not load_with_new_low_head(level, plain.state_dict(), low_n_fft)
    x = 0.1 * torch.randn(1, 1, 40 * 320)
    with torch.no_grad():
        assert torch.equal(level.decode_spectrum(level.encode(x)[0])["gain"], torch.ones(1, 1, 40))
        assert torch.equal(level.decode(level.encode(x)[0]), plain.decode(plain.encode(x)[0]))


def test_the_gain_scales_the_audio_frame_by_frame() -> None:
    vae = SpectralVAE(_cfg(low_n_fft=1280, level_gain=True)).double()
    t = torch.arange(120 * 320, dtype=torch.float64) / SR
    x = (0.2 * torch.sin(2 * math.pi * 55.0 * t) + 0.1 * torch.sin(2 * math.pi * 900.0 * t))[None, None]
    spec = TRUE_SPECTRA(vae, x)
    T = spec["logmag"].shape[-1]
    y1 = vae.synthesize(dict(spec, gain=torch.ones(1, 1, T, dtype=torch.float64)))
    assert torch.allclose(y1, vae.synthesize(spec))
    y2 = vae.synthesize(dict(spec, gain=torch.full((1, 1, T), 2.0, dtype=torch.float64)))
    assert torch.allclose(y2, 2.0 * y1, atol=1e-9)  # the low tone and the high one alike
    assert torch.allclose(vae.synthesize(dict(spec, gain=2 * y1.new_ones(1, 1, T)), level=False), y1)
    ramp = vae.apply_level(torch.ones(1, 1, T * 320, dtype=torch.float64),
                           torch.arange(T, dtype=torch.float64)[None, None])[0, 0]
    centres = torch.arange(1, T - 1) * 320 + 160  # sample t*D + D/2 is half a sample past the centre
    assert torch.allclose(ramp[centres], torch.arange(1, T - 1, dtype=torch.float64) + 0.5 / 320)
    assert float(ramp[0]) == 0.0 and float(ramp[-1]) == pytest.approx(T - 1)  # held at the ends
    step = torch.ones(1, 1, T, dtype=torch.float64)
    step[..., T // 2:] = 0.5
    y3 = vae.synthesize(dict(spec, gain=step))[0, 0]
    n = y3.shape[-1]
    early, late = y3[n // 8: 3 * n // 8], y3[5 * n // 8: 7 * n // 8]
    assert float(late.std() / early.std()) == pytest.approx(0.5, rel=0.02)


def test_the_level_term_trains_the_gain_and_the_spectral_terms_do_not() -> None:
    # the spectral terms judge the heads' audio, the level term the gained audio: the gain
    # learns the level alone, and the heads learn as without it
    torch.manual_seed(1)
    vae = SpectralVAE(_cfg(level_gain=True))
    torch.nn.init.normal_(vae.level_gain.weight, std=0.01)
    x = 0.1 * torch.randn(2, 1, 24 * 320)
    loss_cfg = dataclasses.replace(get_preset("tiny_spectral").vae_loss, lambda_level=1.0, lambda_flux=1.0,
                                   lambda_low_envelope=1.0)
    terms = spectral_vae_loss(vae, x, loss_cfg, sample_posterior=False)
    (terms["logmag"] + terms["phase"] + terms["stft"] + terms["mel"] + terms["flux"]
     + terms["low_env"]).backward(retain_graph=True)
    assert vae.level_gain.weight.grad is None or float(vae.level_gain.weight.grad.abs().sum()) == 0.0
    heads = vae.decoder[-1].weight.grad.clone()
    terms["level"].backward()
    assert float(vae.level_gain.weight.grad.abs().sum()) > 0.0
    assert torch.equal(vae.decoder[-1].weight.grad, heads)  # the heads are not pushed by the level
    # the spectral terms are the same as a VAE's without the head
    plain = SpectralVAE(_cfg())
    plain.load_state_dict({k: v for k, v in vae.state_dict().items() if not k.startswith("level_gain.")})
    bare = spectral_vae_loss(plain, x, dataclasses.replace(loss_cfg, lambda_level=0.0), sample_posterior=False)
    assert float(bare["stft"]) == pytest.approx(float(terms["stft"]), rel=1e-6)
    # audio at half the level: the level term falls as the gain rises
    true = SpectralVAE(_cfg(level_gain=True)).double()
    t = torch.arange(80 * 320, dtype=torch.float64) / SR
    tone = (0.3 * torch.sin(2 * math.pi * 220.0 * t))[None, None]
    spec = TRUE_SPECTRA(true, tone)
    log_gain = torch.full((1, 1, spec["logmag"].shape[-1]), math.log(0.5), dtype=torch.float64, requires_grad=True)
    level_loss(true.synthesize(dict(spec, gain=torch.exp(log_gain))), tone).backward()
    assert float(log_gain.grad.sum()) < 0.0


def test_a_level_head_keeps_the_latent_space() -> None:
    base = _cfg(low_n_fft=1280)
    assert base.same_latents(dataclasses.replace(base, level_gain=True))
    with pytest.raises(ValueError, match="phase"):
        SpectralVAE(dataclasses.replace(base, low_n_fft=0, phase="free", level_gain=True))


def test_cli_level_gain(monkeypatch, tmp_path: Path) -> None:
    from tests.test_train import _recording_cli

    main, seen, base = _recording_cli(monkeypatch, tmp_path, "train_vae",
                                      ["vae", "--preset", "tiny_spectral", "--data", str(tmp_path)])
    main(base)
    assert not seen[-1].vae.level_gain
    main(base + ["--level-gain", "--level-weight", "4"])
    assert seen[-1].vae.level_gain and seen[-1].vae_loss.lambda_level == 4.0
    assert seen[0].vae_loss.lambda_level == 0.0
    for bad in (["--level-gain", "--vae-phase", "free"], ["--level-weight", "-1"]):
        with pytest.raises(SystemExit):
            main(base + bad)
    main, seen, base = _recording_cli(monkeypatch, tmp_path, "train_vae",
                                      ["vae", "--preset", "tiny", "--data", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(base + ["--level-gain"])  # the DAC-style VAE has no such head


def test_a_level_head_exports_with_plain_operators_at_parity(tmp_path: Path) -> None:
    from export.onnx_export import ExportOptions, export_bundle
    from export.ops import TENSORRT_OPS, check_tensorrt_ops
    from msldm.checkpoint import save_checkpoint
    from msldm.edm import EDMDenoiser

    base = get_preset("tiny_spectral")
    cfg = dataclasses.replace(base, vae=_cfg(low_n_fft=1280, low_gate=True, level_gain=True))
    torch.manual_seed(3)
    model = SpectralVAE(cfg.vae)
    torch.nn.init.normal_(model.level_gain.weight, std=0.05)  # a gain that varies from frame to frame
    vae = save_checkpoint(tmp_path / "vae.safetensors", "vae", cfg, model)
    den = save_checkpoint(tmp_path / "diffusion.safetensors", "diffusion", base, EDMDenoiser(cfg.diffusion),
                          extra={"latent_mean": torch.zeros(80), "latent_std": torch.ones(80)})
    report = export_bundle(vae, den, tmp_path / "bundle", ExportOptions())
    ops = check_tensorrt_ops(tmp_path / "bundle" / "decoder.onnx", "decoder")
    assert set(ops) <= TENSORRT_OPS and not {"DFT", "STFT", "Col2Im"} & set(ops)
    assert report.parity["decoder_max_abs"] < 1e-4 and report.parity["decoder_phase_max_abs"] < 1e-2


def test_the_level_term_is_the_level() -> None:
    torch.manual_seed(4)
    x = 0.1 * torch.randn(2, 1, 26 * 320)
    assert float(level_loss(x, x)) == 0.0
    assert float(level_loss(0.5 * x, x)) == pytest.approx(math.log(2.0), rel=1e-4)
    assert float(level_loss(2.0 * x, x)) == pytest.approx(math.log(2.0), rel=1e-4)
    assert float(level_loss(-x, x)) == pytest.approx(0.0, abs=1e-6)  # the level, not the waveform
    loss_cfg = dataclasses.replace(get_preset("tiny_spectral").vae_loss, lambda_level=2.0)
    vae = SpectralVAE(_cfg(level_gain=True))
    terms = spectral_vae_loss(vae, x, loss_cfg, sample_posterior=False)
    without = spectral_vae_loss(vae, x, dataclasses.replace(loss_cfg, lambda_level=0.0), sample_posterior=False)
    assert "level" not in without
    assert float(terms["loss"]) == pytest.approx(float(without["loss"]) + 2.0 * float(terms["level"]), rel=1e-5)
