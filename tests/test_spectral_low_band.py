"""The spectral SourceVAE's low-band head (`VAEConfig.low_n_fft`): the band-limited inverse STFT
equals torch's, the two heads' crossover resynthesises tones across it, the carried phase
covers both heads, a head added to a trained VAE starts from its main head, the loss trains
it, the training command takes it, and the bundle exports it with plain operators."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from msldm.config import get_preset
from msldm.spectral_losses import spectral_vae_loss
from msldm.spectral_vae import SpectralVAE, load_with_new_low_head
from msldm.stft import ConvISTFT, ConvSTFT, FactorisedSTFT, make_stft
from tests.script_loader import load_script

SR = 22050


def _cfg(low_n_fft: int = 2560, n_fft: int = 1280):
    return dataclasses.replace(get_preset("tiny_spectral").vae, n_fft=n_fft, low_n_fft=low_n_fft)


@pytest.mark.parametrize("n_fft,bins", [(2560, 48), (1280, 25)])
def test_band_limited_istft_equals_torch_istft_of_the_low_band(n_fft: int, bins: int) -> None:
    g = torch.Generator().manual_seed(2)
    spec = torch.randn(2, n_fft // 2 + 1, 30, generator=g, dtype=torch.complex128)
    spec[:, bins:] = 0
    y = ConvISTFT(n_fft, 320, bins=bins).double()(spec.real[:, :bins].contiguous(), spec.imag[:, :bins].contiguous())
    ref = torch.istft(spec, n_fft, 320, window=torch.hann_window(n_fft, dtype=torch.float64), center=True,
                      length=y.shape[-1])
    assert float((y[:, 0] - ref).abs().max() / ref.abs().max()) < 1e-5
    with pytest.raises(ValueError):
        ConvISTFT(n_fft, 320, bins=n_fft // 2 + 2)


@pytest.mark.parametrize("kind", [ConvSTFT, FactorisedSTFT])
@pytest.mark.parametrize("bins", [1, 41, 118, 1281])
def test_band_limited_stft_equals_torch_stft_of_the_low_band(kind: type, bins: int) -> None:
    n_fft, hop, pad = 2560, 320, (2560 - 320) // 2  # the low head's framing
    audio = torch.randn(2, 1, 40 * hop, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    re, im = kind(n_fft, hop, pad, bins=bins).double()(audio)
    ref = torch.stft(F.pad(audio[:, 0], (pad, pad)), n_fft, hop, window=torch.hann_window(n_fft, dtype=torch.float64),
                     center=False, return_complex=True)[:, :bins]
    assert re.shape == ref.shape == (2, bins, 40)
    assert float(torch.maximum((re - ref.real).abs(), (im - ref.imag).abs()).max() / ref.abs().max()) < 1e-5
    with pytest.raises(ValueError):
        kind(n_fft, hop, pad, bins=0)


def test_the_low_heads_analysis_computes_only_its_bins() -> None:
    vae = SpectralVAE(_cfg())
    assert isinstance(vae.low_stft, FactorisedSTFT) and vae.low_stft.bins == vae.low_bins
    assert vae.low_stft.cos2.shape[1] < make_stft(2560, 320, 1120)[0].cos2.shape[1]
    assert not any(k.startswith("low_stft") for k in vae.state_dict())  # checkpoints unaffected


def test_crossover_weights_sum_to_one_at_every_shared_frequency() -> None:
    vae = SpectralVAE(_cfg())
    lo, hi = vae.cfg.low_crossover
    main, low = vae.main_gain[0, :, 0], vae.low_gain[0, :, 0]
    ratio = vae.cfg.low_n_fft // vae.cfg.n_fft  # main bin k and low bin ratio*k share a frequency
    shared = torch.arange(0, (vae.low_bins - 1) // ratio + 1)
    assert torch.allclose(main[shared] + low[ratio * shared], torch.ones(len(shared)), atol=1e-6)
    freqs = torch.arange(vae.bins) * SR / vae.cfg.n_fft
    assert torch.all(main[freqs >= hi] == 1) and torch.all(main[freqs <= lo] == 0)
    assert float(low[-1]) == 0.0  # the low head's last bin is above the crossover


CHECK = load_script("low_band_check")  # true_spectra, stray_db, resynthesise
_true_spectra = CHECK.true_spectra


@pytest.mark.parametrize("f0", [41.2, 320.0, 1046.5])  # below, inside and above the crossover
def test_both_heads_fed_the_truth_resynthesise_a_tone(f0: float) -> None:
    # The synthesis path of a VAE with a low head, given the true magnitudes and instantaneous
    # frequencies on both grids, gives the tone back at its level with no frame-rate sidebands.
    vae = SpectralVAE(_cfg()).double()
    t = torch.arange(200 * 320, dtype=torch.float64) / SR
    x = (0.3 * torch.sin(2 * math.pi * f0 * t))[None, None]
    y = vae.synthesize(_true_spectra(vae, x))[0, 0].numpy()
    core = slice(12000, -12000)
    assert np.std(y[core]) == pytest.approx(np.std(x[0, 0, core].numpy()), rel=0.05)
    spec = np.abs(np.fft.rfft(y[core] * np.hanning(len(y[core]))))
    freqs = np.fft.rfftfreq(len(y[core]), 1 / SR)
    peak = spec[np.abs(freqs - f0) < 3].max()
    side = max(spec[np.abs(freqs - (f0 + s * SR / 320)) < 3].max() for s in (1, -1) if f0 - SR / 320 > 10 or s > 0)
    assert 20 * math.log10(side / peak) < -30


def test_the_low_head_resynthesises_crowded_bass_partials_the_main_grid_smears() -> None:
    # E1 (41.2 Hz) with two harmonics: at n_fft 1280 they lie 2.4 bins apart, so each bin's true
    # instantaneous frequency beats between two partials, and the main grid's resynthesis from
    # the true magnitudes and frequencies leaves stray energy 21 dB under the notes (measured);
    # the low head's grid (2560) resolves them: 46 dB under (the original: 60;
    # `python scripts/low_band_check.py` prints these).
    t = torch.arange(200 * 320, dtype=torch.float64) / SR
    f0 = 41.2
    x = sum(a * torch.sin(2 * math.pi * h * f0 * t) for h, a in ((1, 0.3), (2, 0.2), (3, 0.1)))[None, None]
    with_low = CHECK.stray_db(CHECK.resynthesise(SpectralVAE(_cfg()).double(), x), f0)
    main_only = CHECK.stray_db(CHECK.resynthesise(SpectralVAE(_cfg(low_n_fft=0)).double(), x), f0)
    assert with_low < -40.0 and with_low < main_only - 15.0


def test_the_gate_hands_the_band_below_the_crossover_to_one_head_or_the_other() -> None:
    # gate 1: the low head's synthesis (as without a gate); gate 0: the main head's alone, as a
    # decoder without a low head; in between, the weights still sum to one at every frequency.
    vae = SpectralVAE(dataclasses.replace(_cfg(), low_gate=True)).double()
    t = torch.arange(120 * 320, dtype=torch.float64) / SR
    x = (0.3 * torch.sin(2 * math.pi * 55.0 * t) + 0.1 * torch.sin(2 * math.pi * 900.0 * t))[None, None]
    spec = _true_spectra(vae, x)
    T = spec["logmag"].shape[-1]
    ones = torch.ones(1, 1, T, dtype=torch.float64)
    gated = vae.synthesize(dict(spec, low=dict(spec["low"], gate=ones)))
    assert torch.allclose(gated, vae.synthesize(spec))
    main_only = vae.synthesize(dict(spec, low=dict(spec["low"], gate=0 * ones)))
    plain = SpectralVAE(_cfg(low_n_fft=0)).double()
    mag = torch.clamp(torch.exp(spec["logmag"]) - 1e-2, min=0.0)
    assert torch.allclose(main_only, plain.istft(mag * spec["cos"], mag * spec["sin"]), atol=1e-9)
    half = vae.synthesize(dict(spec, low=dict(spec["low"], gate=0.5 * ones)))
    core = slice(10000, -10000)
    assert float(half[0, 0, core].std()) == pytest.approx(float(x[0, 0, core].std()), rel=0.05)


def test_a_gate_starts_nearly_open_and_loads_onto_a_low_head_without_one() -> None:
    torch.manual_seed(4)
    low = SpectralVAE(_cfg())
    gated = SpectralVAE(dataclasses.replace(_cfg(), low_gate=True))
    assert not load_with_new_low_head(gated, low.state_dict())  # the head came with the state
    assert torch.equal(gated.low_head.weight, low.low_head.weight)
    spec = gated.decode_spectrum(torch.randn(1, 80, 12))
    assert torch.allclose(spec["low"]["gate"], torch.full((1, 1, 12), 0.9526), atol=1e-4)


def test_decode_carry_covers_both_heads() -> None:
    torch.manual_seed(0)
    vae = SpectralVAE(dataclasses.replace(get_preset("tiny_spectral").vae, low_n_fft=1280)).eval()
    assert vae.low_bins == 25 and vae.carry_bins == vae.bins + 25
    z = torch.randn(1, 80, 120)
    with torch.no_grad():
        whole, offsets = vae.decode_carry(z, torch.zeros(1, vae.carry_bins))
        assert offsets.shape == (1, vae.carry_bins, 120)
        s, margin = 40, 24
        part, _ = vae.decode_carry(z[..., s:], offsets[..., s])
        fresh = vae.decode(z[..., s:])
        # the low head's offsets alone restarted: its band falls out of phase
        half = offsets[..., s].clone()
        half[:, vae.bins:] = 0
        low_fresh, _ = vae.decode_carry(z[..., s:], half)
    D = vae.hop
    ref = whole[0, 0, (s + margin) * D:100 * D]

    def err(y: torch.Tensor) -> float:
        return float((y[0, 0, margin * D:(100 - s) * D] - ref).norm() / ref.norm())

    assert err(part) < 1e-2 < 0.3 < err(fresh)
    assert err(low_fresh) > 10 * err(part)
    assert torch.equal(vae.decode(z), whole)  # a zero offset is the plain decode


def test_a_new_low_head_starts_from_the_main_head() -> None:
    torch.manual_seed(1)
    plain = SpectralVAE(_cfg(low_n_fft=0))
    vae = SpectralVAE(_cfg())
    assert load_with_new_low_head(vae, plain.state_dict())
    F_, L = vae.bins, vae.low_bins
    main_w, low_w = vae.decoder[-1].weight[..., 0], vae.low_head.weight[..., 0]
    main_b, low_b = vae.decoder[-1].bias, vae.low_head.bias
    for k in range(0, L // 2):  # low bin 2k sits on main bin k: the same row
        assert torch.allclose(low_w[L + 2 * k], main_w[F_ + k])  # deviation
        assert torch.allclose(low_w[2 * k], main_w[k])  # log magnitude, raised by log 2 in its bias
        assert float(low_b[2 * k] - main_b[k]) == pytest.approx(math.log(2.0), abs=1e-6)
    # odd low bins lie halfway: the mean of their neighbours' rows
    assert torch.allclose(low_w[1], 0.5 * (main_w[0] + main_w[1]), atol=1e-6)
    assert not load_with_new_low_head(vae, vae.state_dict())  # a state with the head loads as is
    broken = {k: v for k, v in plain.state_dict().items() if not k.startswith("decoder.0.")}
    with pytest.raises(RuntimeError):
        load_with_new_low_head(SpectralVAE(_cfg()), broken)


def test_a_widened_low_head_keeps_its_trained_bins_and_starts_the_new_ones_from_the_main_head() -> None:
    torch.manual_seed(3)
    narrow = SpectralVAE(dataclasses.replace(_cfg(), low_gate=True))
    with torch.no_grad():  # a "trained" head: rows unlike the main head's
        narrow.low_head.weight.normal_()
        narrow.low_head.bias.normal_()
        narrow.low_gate.bias.fill_(-1.0)
    wide = SpectralVAE(dataclasses.replace(_cfg(), low_gate=True, low_crossover=(700.0, 1000.0)))
    L_old, L = narrow.low_bins, wide.low_bins
    assert (L_old, L) == (48, 118)
    assert load_with_new_low_head(wide, narrow.state_dict(), low_n_fft=2560)
    w, b = wide.low_head.weight[..., 0], wide.low_head.bias
    for part in (0, 1):  # the old bins' rows, log magnitude then deviation, as trained
        assert torch.equal(w[part * L:part * L + L_old], narrow.low_head.weight[part * L_old:(part + 1) * L_old, :, 0])
        assert torch.equal(b[part * L:part * L + L_old], narrow.low_head.bias[part * L_old:(part + 1) * L_old])
    # the new bins from the main head: low bin 2k on main bin k (deviation rows)
    F_ = wide.bins
    main_w = wide.decoder[-1].weight[..., 0]
    assert torch.allclose(w[L + 60], main_w[F_ + 30]) and torch.allclose(w[60], main_w[30])
    assert float(wide.low_gate.bias) == -1.0  # everything else as in the state
    assert torch.equal(wide.decoder[0].weight, narrow.decoder[0].weight)
    with pytest.raises(RuntimeError, match="same long grid"):  # another grid's rows do not carry over
        load_with_new_low_head(SpectralVAE(dataclasses.replace(_cfg(), low_gate=True, low_crossover=(700.0, 1000.0))),
                               narrow.state_dict(), low_n_fft=3840)


def test_the_loss_trains_the_low_head_on_the_low_band() -> None:
    torch.manual_seed(2)
    cfg = dataclasses.replace(get_preset("tiny_spectral").vae, low_n_fft=1280)
    vae = SpectralVAE(cfg)
    x = 0.1 * torch.randn(2, 1, 24 * 320)
    loss_cfg = get_preset("tiny_spectral").vae_loss
    terms = spectral_vae_loss(vae, x, loss_cfg)
    terms["loss"].backward()
    assert float(vae.low_head.weight.grad.abs().sum()) > 0
    # the log-magnitude and phase terms hold the low head's own: without it they are smaller
    plain = SpectralVAE(dataclasses.replace(cfg, low_n_fft=0))
    plain.load_state_dict({k: v for k, v in vae.state_dict().items() if not k.startswith("low_head.")})
    torch.manual_seed(3)
    with_low = spectral_vae_loss(vae, x, loss_cfg, sample_posterior=False)
    without = spectral_vae_loss(plain, x, loss_cfg, sample_posterior=False)
    assert float(with_low["logmag"]) > float(without["logmag"]) + 0.1
    assert float(with_low["phase"]) > float(without["phase"])
    assert float(with_low["kl"]) == pytest.approx(float(without["kl"]))
    # with phase_grad_frames the audio terms reach the low head's phase too (its running sum)
    vae.zero_grad()
    dev_rows = slice(vae.low_bins, None)
    spectral_vae_loss(vae, x, dataclasses.replace(loss_cfg, lambda_phase=0.0, lambda_logmag=0.0))["loss"].backward()
    detached = float(vae.low_head.weight.grad[dev_rows].abs().sum())
    vae.zero_grad()
    spectral_vae_loss(vae, x, dataclasses.replace(loss_cfg, lambda_phase=0.0, lambda_logmag=0.0,
                                                  phase_grad_frames=2))["loss"].backward()
    assert detached == 0.0 < float(vae.low_head.weight.grad[dev_rows].abs().sum())


def test_cli_low_band_options(monkeypatch, tmp_path: Path) -> None:
    from tests.test_train import _recording_cli

    main, seen, base = _recording_cli(monkeypatch, tmp_path, "train_vae",
                                      ["vae", "--preset", "tiny_spectral", "--data", str(tmp_path)])
    main(base)
    assert seen[-1].vae.low_n_fft == 0
    main(base + ["--low-n-fft", "1280", "--low-crossover", "200,350"])
    assert (seen[-1].vae.low_n_fft, seen[-1].vae.low_crossover) == (1280, (200.0, 350.0))
    assert not seen[-1].vae.low_gate
    main(base + ["--low-n-fft", "1280", "--low-gate", "--low-envelope-weight", "1.5"])
    assert seen[-1].vae.low_gate and seen[-1].vae_loss.lambda_low_envelope == 1.5
    assert not seen[-1].vae.encoder_low
    main(base + ["--low-n-fft", "1280", "--encoder-low"])
    assert seen[-1].vae.encoder_low
    # decoder only on a VAE whose encoder already reads the low band: the init must say so
    # (train_vae checks it), and a bare run has nothing to freeze
    main(base + ["--low-n-fft", "1280", "--encoder-low", "--freeze-encoder", "--init", str(tmp_path / "v")])
    assert seen[-1].vae.encoder_low
    for bad in (["--low-n-fft", "1000"], ["--low-n-fft", "640"], ["--low-crossover", "200,350"],
                ["--low-n-fft", "1280", "--low-crossover", "350,200"], ["--low-gate"],
                ["--low-envelope-weight", "-1"], ["--encoder-low"],
                ["--low-n-fft", "1280", "--encoder-low", "--freeze-encoder"],
                ["--low-n-fft", "1280", "--vae-phase", "free"]):
        with pytest.raises(SystemExit):
            main(base + bad)


def _export(tmp: Path, vae_fields: dict, denoiser_names_base: bool, seed: int):
    """Export a tiny_spectral bundle (random weights) whose VAE has `vae_fields`; its denoiser's
    checkpoint names the VAE without them where `denoiser_names_base` (as after a decoder-only
    fine-tune). Returns (bundle folder, export report, config)."""
    from export.onnx_export import ExportOptions, export_bundle
    from msldm.checkpoint import save_checkpoint
    from msldm.edm import EDMDenoiser

    base = get_preset("tiny_spectral")
    cfg = dataclasses.replace(base, vae=dataclasses.replace(base.vae, **vae_fields))
    torch.manual_seed(seed)
    vae = save_checkpoint(tmp / "vae.safetensors", "vae", cfg, SpectralVAE(cfg.vae))
    den = save_checkpoint(tmp / "diffusion.safetensors", "diffusion", base if denoiser_names_base else cfg,
                          EDMDenoiser(cfg.diffusion),
                          extra={"latent_mean": torch.zeros(80), "latent_std": torch.ones(80)})
    return tmp / "bundle", export_bundle(vae, den, tmp / "bundle", ExportOptions()), cfg


@pytest.fixture(scope="module")
def low_bundle(tmp_path_factory) -> tuple:
    """A tiny_spectral bundle with a low head and its gate (random weights) and its export report."""
    return _export(tmp_path_factory.mktemp("low"), {"low_n_fft": 1280, "low_gate": True}, True, 0)


def test_low_band_bundle_exports_with_plain_operators_and_carries_both_phases(low_bundle) -> None:
    from export.ops import TENSORRT_OPS, check_tensorrt_ops
    from server.runtime import Bundle

    root, report, cfg = low_bundle
    ops = check_tensorrt_ops(root / "decoder.onnx", "decoder")
    assert set(ops) <= TENSORRT_OPS and not {"DFT", "STFT", "Col2Im"} & set(ops)
    assert "ConvTranspose" in ops  # the low band's inverse STFT
    assert report.parity["decoder_max_abs"] < 1e-4 and report.parity["decoder_phase_max_abs"] < 1e-2
    b = Bundle.load(root, providers=["CPUExecutionProvider"])
    assert b.phase_bins == SpectralVAE(cfg.vae).carry_bins


def test_a_low_head_keeps_the_latent_space_other_changes_do_not() -> None:
    base = get_preset("tiny_spectral").vae
    assert base.same_latents(dataclasses.replace(base, low_n_fft=1280, low_crossover=(200.0, 300.0)))
    assert not base.same_latents(dataclasses.replace(base, n_fft=1280))
    assert not base.same_latents(dataclasses.replace(base, encoder_dim=32))
    low = dataclasses.replace(base, low_n_fft=1280)
    assert not low.same_latents(dataclasses.replace(low, encoder_low=True))  # the encoder reads more


def test_an_encoder_reading_the_low_band_starts_as_the_one_it_widens_and_learns_from_it() -> None:
    torch.manual_seed(5)
    plain = SpectralVAE(dataclasses.replace(_cfg(), low_gate=True)).eval()
    wide = SpectralVAE(dataclasses.replace(_cfg(), low_gate=True, encoder_low=True)).eval()
    assert wide.encoder[0].weight.shape[1] == 3 * (wide.bins + wide.low_bins) > plain.encoder[0].weight.shape[1]
    assert not load_with_new_low_head(wide, plain.state_dict(), low_n_fft=2560)
    t = torch.arange(40 * 320) / SR
    x = (0.3 * torch.sin(2 * math.pi * 55.0 * t) + 0.2 * torch.sin(2 * math.pi * 110.0 * t))[None, None]
    with torch.no_grad():
        assert torch.equal(wide.encode(x)[0], plain.encode(x)[0])  # zeros on the new inputs
    mean, _ = wide.encode(x)
    mean.square().mean().backward()
    g = wide.encoder[0].weight.grad
    new = g[:, 3 * wide.bins:]
    assert float(new.abs().sum()) > 0  # the low band's features reach the loss
    # a head trained on another long window does not carry over
    with pytest.raises(RuntimeError):
        load_with_new_low_head(SpectralVAE(dataclasses.replace(_cfg(), low_gate=True, encoder_low=True,
                                                               low_crossover=(500.0, 700.0))),
                               plain.state_dict(), low_n_fft=1280)
    with pytest.raises(ValueError):
        dataclasses.replace(_cfg(low_n_fft=0), encoder_low=True).check_low_band()


def test_an_encoder_reading_a_narrower_low_band_widens_with_its_trained_weights() -> None:
    # a low head widened on the same long grid, the encoder reading the band in both: each low
    # feature block (log magnitude, cos, sin) keeps the trained columns of the bins both read
    torch.manual_seed(6)
    narrow = SpectralVAE(dataclasses.replace(_cfg(), low_gate=True, encoder_low=True)).eval()
    with torch.no_grad():
        narrow.encoder[0].weight.normal_()
    wide = SpectralVAE(dataclasses.replace(_cfg(), low_gate=True, encoder_low=True,
                                           low_crossover=(700.0, 1000.0))).eval()
    F_, L_old, L = wide.bins, narrow.low_bins, wide.low_bins
    assert (L_old, L) == (48, 118)
    assert load_with_new_low_head(wide, narrow.state_dict(), low_n_fft=2560)
    w, w_old = wide.encoder[0].weight, narrow.encoder[0].weight
    assert torch.equal(w[:, :3 * F_], w_old[:, :3 * F_])
    for part in range(3):
        a, a_old = 3 * F_ + part * L, 3 * F_ + part * L_old
        assert torch.equal(w[:, a:a + L_old], w_old[:, a_old:a_old + L_old])
        assert not w[:, a + L_old:a + L].any()
    t = torch.arange(40 * 320) / SR
    x = (0.3 * torch.sin(2 * math.pi * 55.0 * t) + 0.2 * torch.sin(2 * math.pi * 660.0 * t))[None, None]
    with torch.no_grad():  # it encodes as the encoder it widens
        torch.testing.assert_close(wide.encode(x)[0], narrow.encode(x)[0], rtol=1e-4, atol=1e-4)


def test_an_encoder_reading_the_low_band_exports_with_plain_operators(tmp_path: Path) -> None:
    from export.ops import TENSORRT_OPS, check_tensorrt_ops

    root, report, _ = _export(tmp_path, {"low_n_fft": 1280, "encoder_low": True}, False, 1)
    ops = check_tensorrt_ops(root / "encoder.onnx", "encoder")
    assert set(ops) <= TENSORRT_OPS and not {"DFT", "STFT"} & set(ops)
    assert report.parity["encoder_max_abs"] < 1e-4


def _kick(smear_ms: float) -> torch.Tensor:
    """A 60 Hz kick with a 5 ms attack at 0.5 s, its low band leading in over `smear_ms`."""
    t = torch.arange(int(SR * 1.0), dtype=torch.float32) / SR
    env = torch.exp(-(t - 0.5).clamp(min=0) / 0.08) * (t >= 0.5)
    if smear_ms:
        lead = (t < 0.5) & (t >= 0.5 - smear_ms / 1000)
        env = env + lead * 0.3 * (1 - (0.5 - t) / (smear_ms / 1000))
    return (env * torch.sin(2 * math.pi * 60 * t))[None, None]


def test_the_low_envelope_term_hears_a_kick_smeared_ahead_of_its_attack() -> None:
    from msldm.spectral_losses import low_envelope_loss

    sharp = _kick(0)
    assert float(low_envelope_loss(sharp, sharp, SR)) == 0.0
    assert float(low_envelope_loss(_kick(50), sharp, SR)) > 3 * float(low_envelope_loss(_kick(10), sharp, SR)) > 0
    # it enters the loss only with a weight, and is not logged without one
    vae = SpectralVAE(dataclasses.replace(get_preset("tiny_spectral").vae, low_n_fft=1280, low_gate=True))
    cfg = get_preset("tiny_spectral").vae_loss
    x = 0.1 * torch.randn(1, 1, 24 * 320)
    off = spectral_vae_loss(vae, x, cfg, sample_posterior=False)
    on = spectral_vae_loss(vae, x, dataclasses.replace(cfg, lambda_low_envelope=2.0), sample_posterior=False)
    assert "low_env" not in off and float(on["low_env"]) > 0
    assert float(on["loss"]) == pytest.approx(float(off["loss"]) + 2.0 * float(on["low_env"]), rel=1e-5)
    on["loss"].backward()
    assert float(vae.low_gate.weight.grad.abs().sum()) > 0  # the gate learns from it
