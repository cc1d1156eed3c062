"""The spectral SourceVAE: in-graph STFT / inverse STFT equal torch's, the IF phase path makes
clean tones (no frame-rate comb), shapes and the training loss, ONNX export with plain operators."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from msldm.config import get_preset
from msldm.spectral_losses import spectral_vae_loss
from msldm.spectral_vae import LOG_EPS, SpectralVAE
from msldm.stft import ConvISTFT, ConvSTFT, FactorisedISTFT, FactorisedSTFT

SR = 22050


@pytest.mark.parametrize("kind", [ConvSTFT, FactorisedSTFT])
@pytest.mark.parametrize("n_fft,hop", [(1280, 320), (1024, 256), (640, 320)])
def test_conv_stft_equals_torch_stft(n_fft: int, hop: int, kind: type) -> None:
    x = torch.randn(2, 1, 9000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    re, im = kind(n_fft, hop).double()(x)
    ref = torch.stft(x[:, 0], n_fft, hop, window=torch.hann_window(n_fft, dtype=torch.float64),
                     center=True, pad_mode="constant", return_complex=True)
    scale = ref.abs().max()
    assert re.shape == ref.shape
    assert float((re - ref.real).abs().max() / scale) < 1e-5
    assert float((im - ref.imag).abs().max() / scale) < 1e-5


@pytest.mark.parametrize("kind", [ConvISTFT, FactorisedISTFT])
@pytest.mark.parametrize("n_fft,hop", [(1280, 320), (1024, 256)])
def test_conv_istft_equals_torch_istft(n_fft: int, hop: int, kind: type) -> None:
    g = torch.Generator().manual_seed(1)
    spec = torch.randn(2, n_fft // 2 + 1, 40, generator=g, dtype=torch.complex128)
    y = kind(n_fft, hop).double()(spec.real.contiguous(), spec.imag.contiguous())
    ref = torch.istft(spec, n_fft, hop, window=torch.hann_window(n_fft, dtype=torch.float64), center=True,
                      length=y.shape[-1])
    assert float((y[:, 0] - ref).abs().max() / ref.abs().max()) < 1e-5


@pytest.mark.parametrize("factorised", [False, True])
def test_vae_framing_round_trip(factorised: bool) -> None:
    # pad = (n_fft - hop) / 2: T*D samples give exactly T frames, and the inverse gives them back.
    stft, istft = ((FactorisedSTFT(1280, 320, 480), FactorisedISTFT(1280, 320, 480)) if factorised else
                   (ConvSTFT(1280, 320, 480), ConvISTFT(1280, 320, 480)))
    x = torch.randn(1, 1, 50 * 320)
    re, im = stft(x)
    assert re.shape[-1] == 50
    assert float((istft(re, im) - x).abs().max()) < 1e-4


def test_the_vae_uses_the_factorised_transforms_and_they_match_the_convolutions() -> None:
    # the same transforms in float32 as trained (the convolutions) to float rounding
    from msldm.stft import make_stft
    vae = SpectralVAE(dataclasses.replace(get_preset("tiny_spectral").vae, n_fft=1280))
    assert isinstance(vae.stft, FactorisedSTFT) and isinstance(vae.istft, FactorisedISTFT)
    x = torch.randn(3, 1, 64 * 320)
    a, b = ConvSTFT(1280, 320, 480)(x), vae.stft(x)
    scale = float(torch.sqrt(a[0] ** 2 + a[1] ** 2).max())
    assert max(float((p - q).abs().max()) for p, q in zip(a, b)) / scale < 1e-5
    y0, y1 = ConvISTFT(1280, 320, 480)(*a), vae.istft(*a)
    assert float((y0 - y1).abs().max() / y0.abs().max()) < 1e-5
    assert isinstance(make_stft(1000, 300)[0], ConvSTFT)  # 1000 is not a multiple of 300: convolutions


def _vae(phase: str) -> SpectralVAE:
    cfg = dataclasses.replace(get_preset("tiny_spectral").vae, n_fft=1280, phase=phase)
    return SpectralVAE(cfg).double()


def _sideband_db(audio: np.ndarray, f0: float, offset: float) -> float:
    """Level (dB) of the spectrum at f0 +- offset relative to f0 (Hann window, centre part)."""
    x = audio[len(audio) // 4: 3 * len(audio) // 4]
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1 / SR)

    def level(f: float) -> float:
        return float(spec[np.abs(freqs - f) < 3.0].max())

    sides = [level(f0 + offset)] + ([level(f0 - offset)] if f0 - offset > 10.0 else [])
    return 20 * math.log10(max(sides) / level(f0))


@pytest.mark.parametrize("phase", ["if", "if_lock"])
@pytest.mark.parametrize("f0", [41.2, 220.0, 1046.5])
def test_true_deviation_resynthesises_a_clean_tone(phase: str, f0: float) -> None:
    # The decoder's phase path fed the true magnitude and instantaneous-frequency deviation of a
    # tone gives the tone back, with no sidebands at the latent frame rate (the comb).
    vae = _vae(phase)
    t = torch.arange(160 * 320, dtype=torch.float64) / SR
    x = (0.3 * torch.sin(2 * math.pi * f0 * t))[None, None]
    logmag, cos_dev, sin_dev = vae.features(x)
    dev = torch.atan2(sin_dev, cos_dev)
    cos, sin = vae.phase_from_deviation(dev, logmag)
    y = vae.synthesize({"logmag": logmag, "cos": cos, "sin": sin})[0, 0].numpy()
    assert _sideband_db(y, f0, SR / 320) < -30.0
    assert np.std(y[8000:-8000]) == pytest.approx(np.std(x[0, 0, 8000:-8000].numpy()), rel=0.05)


def test_shapes_and_loss_terms() -> None:
    vae = SpectralVAE(get_preset("tiny_spectral").vae)
    x = 0.1 * torch.randn(3, 1, 24 * 320)
    mean, logvar = vae.encode(x)
    assert mean.shape == logvar.shape == (3, 80, 24)
    assert vae.decode(mean).shape == (3, 1, 24 * 320)
    recon, _, _ = vae(x[..., :7000])
    assert recon.shape == (3, 1, 7000)
    terms = spectral_vae_loss(vae, x, get_preset("tiny_spectral").vae_loss)
    assert set(terms) == {"loss", "logmag", "phase", "stft", "mel", "flux", "kl"}
    terms["loss"].backward()
    head = vae.decoder[-1].weight.grad
    assert head is not None and float(head.abs().sum()) > 0


def _tone_frames(levels_db: np.ndarray, n_fft: int = 1024) -> torch.Tensor:
    """Magnitudes `[1, F, T]` of a 440 Hz tone whose level follows `levels_db` frame by frame."""
    t = np.arange(len(levels_db) * 256 + n_fft) / SR
    env = np.repeat(10 ** (levels_db / 20), 256)
    env = np.concatenate([env, np.full(len(t) - len(env), env[-1])])
    x = torch.tensor(env * np.sin(2 * np.pi * 440 * t), dtype=torch.float32)
    return torch.stft(x[None], n_fft, n_fft // 4, window=torch.hann_window(n_fft), return_complex=True).abs()


def test_flux_loss_hears_a_wavering_held_note_and_a_smeared_attack() -> None:
    from msldm.spectral_losses import flux_loss, multires_stft_loss

    steady = np.concatenate([np.full(10, -60.0), np.full(30, -10.0)])  # silence, then a held note
    wavering = steady + np.where(np.arange(40) >= 10, 2.0 * np.sin(np.arange(40) * 1.3), 0.0)
    smeared = steady.copy()
    smeared[10:16] = np.linspace(-40, -10, 6)  # the attack rises over 6 frames
    y = _tone_frames(steady)
    assert float(flux_loss(y, y)) == 0.0
    # a gain alone changes no frame-to-frame step (up to the log's floor in the quietest bins)
    assert float(flux_loss(3.0 * y, y)) < 0.02
    assert float(flux_loss(_tone_frames(wavering), y)) > 0.1
    assert float(flux_loss(_tone_frames(smeared), y)) > 0.1
    # the log-magnitude L1 of the wavering note is about what a 1 dB gain error costs; the flux
    # term tells the two apart
    x = torch.tensor(np.sin(2 * np.pi * 440 * np.arange(22050) / SR), dtype=torch.float32)[None, None]
    stft, mel, flux = multires_stft_loss(x, x, (256, 1024), (40, 80), SR, flux_windows=(1024,))
    assert float(flux) == 0.0
    two = multires_stft_loss(x, x, (256, 1024), (40, 80), SR)
    assert len(two) == 2 and float(two[0]) == float(stft)
    # gradients reach the reconstruction
    w = _tone_frames(wavering).requires_grad_(True)
    flux_loss(w, y).backward()
    assert w.grad is not None and float(w.grad.abs().sum()) > 0


def test_flux_weight_enters_the_loss() -> None:
    config = get_preset("tiny_spectral")
    torch.manual_seed(0)
    vae = SpectralVAE(config.vae)
    x = 0.1 * torch.randn(2, 1, 24 * 320)
    off = spectral_vae_loss(vae, x, config.vae_loss, sample_posterior=False)
    on = spectral_vae_loss(vae, x, dataclasses.replace(config.vae_loss, lambda_flux=2.0), sample_posterior=False)
    assert config.vae_loss.lambda_flux == 0.0 and float(off["flux"]) > 0
    assert float(on["loss"]) == pytest.approx(float(off["loss"]) + 2.0 * float(off["flux"]), rel=1e-5)


def test_local_cumsum_grad_keeps_the_values_and_truncates_the_gradient() -> None:
    from msldm.spectral_vae import local_cumsum_grad

    x = torch.randn(2, 3, 10, requires_grad=True)
    y = local_cumsum_grad(x, 3)
    torch.testing.assert_close(y, torch.cumsum(x, -1), rtol=0, atol=1e-6)
    g = torch.zeros_like(y)
    g[..., 7] = 1.0
    y.backward(g)
    expect = torch.zeros(10)
    expect[5:8] = 1.0  # frame 7's phase answers to the deviations of frames 5, 6 and 7 only
    assert torch.equal(x.grad[1, 2], expect)


def test_phase_grad_frames_let_the_audio_terms_train_the_phase_head() -> None:
    config = get_preset("tiny_spectral")
    torch.manual_seed(0)
    vae = SpectralVAE(config.vae)
    x = 0.1 * torch.randn(2, 1, 24 * 320)
    audio_only = dataclasses.replace(config.vae_loss, lambda_logmag=0.0, lambda_phase=0.0,
                                     lambda_spectral_kl=0.0)
    grads = {}
    for n in (0, 4):
        vae.zero_grad()
        terms = spectral_vae_loss(vae, x, dataclasses.replace(audio_only, phase_grad_frames=n),
                                  sample_posterior=False)
        terms["loss"].backward()
        bins = vae.bins
        grads[n] = float(vae.decoder[-1].weight.grad[bins:2 * bins].abs().sum())  # the phase rows
        if n:
            assert float(terms["loss"]) == pytest.approx(loss0, rel=1e-6)  # the same forward pass
        loss0 = float(terms["loss"])
    assert grads[0] == 0.0 and grads[4] > 0.0


def test_phase_error_l1_is_the_wrapped_absolute_error() -> None:
    from msldm.spectral_losses import phase_loss

    true = torch.tensor([[[0.0, 0.1, 3.0, -0.5]]])
    pred = torch.tensor([[[2.0, 0.3, -3.0, -0.5]]])  # frame 0 has no deviation and is not scored
    target = {"logmag": torch.zeros(1, 1, 4), "cos_dev": torch.cos(true), "sin_dev": torch.sin(true)}
    pred.requires_grad_(True)
    l1 = phase_loss({"dev": pred}, target, "if", LOG_EPS, "l1")
    w = 1.0 / 4  # equal magnitudes: each frame a quarter of the weight
    assert float(l1.detach()) == pytest.approx(w * (0.2 + (2 * math.pi - 6.0) + 0.0), rel=1e-5)  # -3 vs 3: 0.28 apart
    cos = phase_loss({"dev": pred.detach()}, target, "if", LOG_EPS, "cos")
    assert float(cos) == pytest.approx(w * ((1 - math.cos(0.2)) + (1 - math.cos(2 * math.pi - 6.0))), rel=1e-5)
    l1.backward()
    g = pred.grad[0, 0]
    assert float(g[0]) == 0.0 and float(g[1]) == pytest.approx(w) and float(g[2]) == pytest.approx(w)
    with pytest.raises(ValueError):
        phase_loss({"dev": pred}, target, "if", LOG_EPS, "l2")
    # a silent bin has no true deviation (its phasor is 0): no error, and a finite gradient
    silent = {"logmag": torch.zeros(1, 1, 4), "cos_dev": torch.zeros(1, 1, 4), "sin_dev": torch.zeros(1, 1, 4)}
    p = torch.tensor([[[0.0, 0.3, -1.0, 2.0]]], requires_grad=True)
    loss = phase_loss({"dev": p}, silent, "if", LOG_EPS, "l1")
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.isfinite(p.grad).all()


def test_silence_decodes_quietly() -> None:
    # log(|X| + LOG_EPS) at the floor means |X| = 0: a predicted floor is exact silence.
    vae = SpectralVAE(get_preset("tiny_spectral").vae)
    floor = torch.full((1, vae.bins, 10), math.log(LOG_EPS))
    y = vae.synthesize({"logmag": floor, "cos": torch.ones_like(floor), "sin": torch.zeros_like(floor)})
    assert float(y.abs().max()) < 1e-6


@pytest.fixture(scope="module")
def spectral_bundle(tmp_path_factory) -> tuple:
    """A tiny_spectral bundle (random weights) and its export report."""
    from export.onnx_export import ExportOptions, export_bundle
    from msldm.checkpoint import save_checkpoint
    from msldm.edm import EDMDenoiser

    tmp = tmp_path_factory.mktemp("spectral")
    cfg = get_preset("tiny_spectral")
    torch.manual_seed(0)
    vae = save_checkpoint(tmp / "vae.safetensors", "vae", cfg, SpectralVAE(cfg.vae))
    den = save_checkpoint(tmp / "diffusion.safetensors", "diffusion", cfg, EDMDenoiser(cfg.diffusion),
                          extra={"latent_mean": torch.zeros(80), "latent_std": torch.ones(80)})
    return tmp / "bundle", export_bundle(vae, den, tmp / "bundle", ExportOptions())


def test_spectral_bundle_exports_with_plain_operators(spectral_bundle) -> None:
    from export.ops import TENSORRT_OPS, check_tensorrt_ops

    root, report = spectral_bundle
    for g in ("encoder", "decoder"):
        ops = check_tensorrt_ops(root / f"{g}.onnx", g)
        assert set(ops) <= TENSORRT_OPS
        assert not {"DFT", "STFT", "Col2Im"} & set(ops)
    assert "CumSum" in report.operators["decoder"]  # the running phase; the inverse STFT is MatMuls
    assert "MatMul" in report.operators["encoder"] and "MatMul" in report.operators["decoder"]
    assert report.parity["encoder_max_abs"] < 1e-4 and report.parity["decoder_max_abs"] < 1e-4
    assert report.parity["decoder_phase_max_abs"] < 1e-2


@pytest.mark.parametrize("carry", [True, False])
def test_windowed_decode_joins_in_phase(spectral_bundle, carry: bool) -> None:
    # The daemon's window chain (decode each overlapping window, crossfade) against one decode
    # of the whole latent: with the carried phase the crossfades match it; restarting every
    # window's phase (the old way) leaves the overlaps partly cancelled.
    from server.runtime import Bundle
    from server.windowing import Crossfader, WindowPlan, _decode_stems

    b = Bundle.load(spectral_bundle[0], providers=["CPUExecutionProvider"])
    plan = WindowPlan(frames=160, window=64, overlap=16)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((1, b.K * b.C, plan.padded_frames)).astype(np.float32)
    whole = b.decode(z[:, :b.C])[0, 0]  # stem 0 ("bass") decoded at once
    fader, phase, parts = Crossfader(plan.overlap * b.D, plan.hop * b.D), None, []
    for i, s in enumerate(plan.starts):
        out, phase = _decode_stems(b, z[:, :, s:s + plan.window], ["bass"], phase, plan.hop)
        if not carry:
            phase = None
        parts.append(fader.join("bass", out[0]["bass"], i == len(plan.starts) - 1))
    joined = np.concatenate(parts)
    seams = [(s * b.D, (s + plan.overlap) * b.D) for s in plan.starts[1:]]
    err = max(float(np.linalg.norm(joined[a:c] - whole[a:c]) / np.linalg.norm(whole[a:c])) for a, c in seams)
    assert (err < 0.15) if carry else (err > 0.3)


@pytest.mark.parametrize("phase", ["if", "if_lock"])
def test_phase_offsets_continue_a_decode_exactly(phase: str) -> None:
    # The phase path started at frame s with the offset an earlier run returned at s gives that
    # run's phasors from s on, exactly; started at 0 it does not.
    vae = _vae(phase)
    g = torch.Generator().manual_seed(3)
    dev = math.pi * (2 * torch.rand(2, vae.bins, 50, generator=g) - 1)
    logmag = torch.randn(2, vae.bins, 50, generator=g)
    cos, sin, offsets = vae.phase_from_deviation(dev, logmag, with_offsets=True)
    assert float(offsets.min()) >= 0.0 and float(offsets.max()) < 2 * math.pi
    s = 17
    c2, s2 = vae.phase_from_deviation(dev[..., s:], logmag[..., s:], offsets[..., s])
    assert float((c2 - cos[..., s:]).abs().max()) < 1e-4 and float((s2 - sin[..., s:]).abs().max()) < 1e-4
    c0, _ = vae.phase_from_deviation(dev[..., s:], logmag[..., s:])
    assert float((c0 - cos[..., s:]).abs().max()) > 0.5


def test_decode_carry_makes_overlapping_windows_agree() -> None:
    # A decoder (random weights) run on a later window with the carried offset agrees with the
    # whole decode once past its receptive field; with no carry the two are out of phase.
    torch.manual_seed(0)
    vae = SpectralVAE(get_preset("tiny_spectral").vae).eval()
    z = torch.randn(1, 80, 120)
    with torch.no_grad():
        whole, offsets = vae.decode_carry(z, torch.zeros(1, vae.bins))
        s, margin = 40, 20
        part, _ = vae.decode_carry(z[..., s:], offsets[..., s])
        fresh = vae.decode(z[..., s:])
    D = vae.hop
    ref = whole[0, 0, (s + margin) * D:100 * D]
    err_carry = float((part[0, 0, margin * D:(100 - s) * D] - ref).norm() / ref.norm())
    err_fresh = float((fresh[0, 0, margin * D:(100 - s) * D] - ref).norm() / ref.norm())
    assert err_carry < 1e-2 < 0.3 < err_fresh
    assert torch.equal(vae.decode(z), whole)  # a zero offset is the plain decode
