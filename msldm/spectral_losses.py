"""Losses of the spectral SourceVAE (`msldm.spectral_vae`): regression terms, and optionally GAN terms.

Per reconstruction of `audio [B, 1, N]` (weights in `VAELossConfig`):
- ``logmag``: L1 between predicted and true log(|X| + LOG_EPS) at the model's own STFT;
- ``phase``: magnitude-weighted anti-wrapping phase terms (APNet, Ai & Ling 2023). For the
  ``if`` / ``if_lock`` decoders: 1 - cos(predicted - true instantaneous-frequency deviation),
  or with `phase_error` "l1" its wrapped absolute value, the direct target of the decoder's
  phase head. For ``free``: instantaneous phase, group delay (difference across bins) and
  instantaneous frequency (difference across frames);
- ``stft``: multi-resolution STFT of the audio (log-magnitude L1 + spectral convergence,
  windows `stft_windows`, hop = window / 4);
- ``mel``: multi-scale log10-mel L1 on the same STFTs (`stft_mel_bands` bands per window);
- ``flux``: on the same STFTs of the windows in `flux_windows`, L1 between the frame-to-frame
  changes of log magnitude of the reconstruction and of the audio, weighted per bin by the
  louder magnitude (`flux_loss`): a held note whose level wavers is heard as struck again, an
  attack that rises slowly as no onset, and the average log-magnitude terms barely see either;
- ``kl``: KL of the posterior to N(0, I), averaged over elements;
- with a low-band head (`VAEConfig.low_n_fft`), ``logmag`` and ``phase`` add the same terms of
  the low head against the low band of the audio's longer STFT;
- ``low_env`` (`low_envelope_loss`): the band below 400 Hz, its level frame by frame at a 256
  window (3 ms hop), log-L1 against the audio's: a kick's attack smeared ahead of it;
- ``adv`` / ``feat`` (only where `lambda_spectral_adversarial` / `lambda_spectral_feature` > 0:
  `adversarial_terms`, stepped by the training task): least-squares GAN and feature matching
  against a `msldm.discriminators.Discriminator` (HiFi-GAN's periods and DAC's banded STFTs),
  an adversarial fine-tune of a decoder the regression terms have trained.

For the ``if`` decoders the audio terms see the synthesis phase detached by default: the
phase head is trained by its direct target only (gradients through the running phase sum
reach every earlier frame and made harmonics glide in a prototype), the magnitudes by
everything. With `phase_grad_frames` > 0 the audio terms reach the phase too, through the
last few frames' deviations only (`msldm.spectral_vae.local_cumsum_grad`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from msldm.config import VAELossConfig
from msldm.losses import kl_divergence

__all__ = ["spectral_vae_loss", "spectral_vae_terms", "adversarial_terms", "multires_stft_loss", "phase_loss",
           "flux_loss", "low_envelope_loss"]

LOW_ENVELOPE_HZ = 400.0
LOW_ENVELOPE_FFT = 256
LEVEL_FRAME = 1024  # `level_loss`'s frame: 46 ms at 22050 Hz


def _weights(logmag: torch.Tensor, eps: float) -> torch.Tensor:
    """Per-bin weights `[B, F, T]` from the true log magnitude: |X| normalised per example."""
    mag = (torch.exp(logmag) - eps).clamp_min(0.0)
    return mag / mag.sum(dim=(1, 2), keepdim=True).clamp_min(1e-8)


def _anti_wrap(cos_a: torch.Tensor, sin_a: torch.Tensor, cos_b: torch.Tensor, sin_b: torch.Tensor
               ) -> torch.Tensor:
    """1 - cos(a - b) from the unit phasors of a and b (0 when equal, 2 when opposite)."""
    return 1.0 - (cos_a * cos_b + sin_a * sin_b)


def _diff(c: torch.Tensor, s: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Phasor of the phase difference to the previous element along `dim` (first dropped)."""
    n = c.shape[dim]
    c1, s1 = c.narrow(dim, 1, n - 1), s.narrow(dim, 1, n - 1)
    c0, s0 = c.narrow(dim, 0, n - 1), s.narrow(dim, 0, n - 1)
    return c1 * c0 + s1 * s0, s1 * c0 - c1 * s0


PHASE_ERRORS = ("cos", "l1")


def phase_loss(spec: dict[str, torch.Tensor], target: dict[str, torch.Tensor], phase: str,
               eps: float, error: str = "cos") -> torch.Tensor:
    """The magnitude-weighted phase term (module docstring). Shapes `[B, F, T]`. `error` (``if``
    phases): "cos" = 1 - cos of the deviation's error, "l1" = its absolute value wrapped to
    [-pi, pi) (`VAELossConfig.phase_error`)."""
    if error not in PHASE_ERRORS:
        raise ValueError(f"unknown phase error {error!r}; choose from {PHASE_ERRORS}")
    w = _weights(target["logmag"], eps)
    if phase != "free":
        w = w[..., 1:]  # frame 0 has no deviation
        c, s = torch.cos(spec["dev"]), torch.sin(spec["dev"])
        if error == "cos":
            err = _anti_wrap(c, s, target["cos_dev"], target["sin_dev"])[..., 1:]
        else:  # the angle of (predicted phasor) x conj(true phasor), in (-pi, pi]
            y = s * target["cos_dev"] - c * target["sin_dev"]
            x = c * target["cos_dev"] + s * target["sin_dev"]
            # a silent bin's true phasor is 0 (no deviation): angle 0 there, and no 0/0 gradient
            x = torch.where(x * x + y * y < 1e-12, torch.ones_like(x), x)
            err = torch.atan2(y, x).abs()[..., 1:]
        return (w * err).sum(dim=(1, 2)).mean()
    c, s, tc, ts = spec["cos"], spec["sin"], target["cos"], target["sin"]
    ip = (w * _anti_wrap(c, s, tc, ts)).sum(dim=(1, 2))
    gd = (w[:, 1:] * _anti_wrap(*_diff(c, s, 1), *_diff(tc, ts, 1))).sum(dim=(1, 2))
    iaf = (w[..., 1:] * _anti_wrap(*_diff(c, s, 2), *_diff(tc, ts, 2))).sum(dim=(1, 2))
    return (ip + gd + iaf).mean()


def flux_loss(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Flux term of magnitudes `x` (reconstruction) and `y` (target), `[B, F, T]`: the L1 of
    the difference of their frame-to-frame log-magnitude changes, each bin and frame pair
    weighted by the larger of the four magnitudes involved (detached), normalised per example.
    0 when x == y; it grows when a steady partial of y wavers in x or an onset of y is smeared."""
    dx = torch.diff(torch.log(x + eps), dim=-1)
    dy = torch.diff(torch.log(y + eps), dim=-1)
    with torch.no_grad():
        m = torch.maximum(x, y)
        w = torch.maximum(m[..., 1:], m[..., :-1])
        w = w / w.sum(dim=(1, 2), keepdim=True).clamp_min(1e-8)
    return (w * (dx - dy).abs()).sum(dim=(1, 2)).mean()


def low_envelope_loss(recon: torch.Tensor, audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """L1 between the log envelopes of the band below LOW_ENVELOPE_HZ of `recon` and `audio`
    `[B, 1, N]`: per frame of a LOW_ENVELOPE_FFT window (hop a quarter of it), the root of the
    band's summed power. 0 when equal; a kick's low band spread ahead of its attack raises the
    frames before it, which the log weighs as much as the attack itself."""
    both = torch.cat([recon, audio], dim=0).squeeze(1)
    window = torch.hann_window(LOW_ENVELOPE_FFT, device=audio.device)
    spec = torch.stft(both, LOW_ENVELOPE_FFT, LOW_ENVELOPE_FFT // 4, window=window, center=True,
                      pad_mode="constant", return_complex=True)
    bins = int(LOW_ENVELOPE_HZ * LOW_ENVELOPE_FFT / sample_rate) + 1
    env = torch.sqrt((spec[:, :bins].abs() ** 2).sum(dim=1) + 1e-10)  # [2B, frames]
    x, y = env.chunk(2, dim=0)
    return F.l1_loss(torch.log(x + 1e-4), torch.log(y + 1e-4))


def level_loss(recon: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """L1 between the log RMS of `recon` and `audio` `[B, 1, N]` in frames of LEVEL_FRAME
    samples (hop a quarter of it): 0 when equal, log(2) where the reconstruction is 6 dB under."""
    power = F.avg_pool1d(torch.cat([recon, audio], dim=0) ** 2, LEVEL_FRAME, LEVEL_FRAME // 4)
    x, y = (0.5 * torch.log(power + 1e-8)).chunk(2, dim=0)
    return F.l1_loss(x, y)


def multires_stft_loss(recon: torch.Tensor, audio: torch.Tensor, windows: tuple[int, ...],
                       mel_bands: tuple[int, ...], sample_rate: int,
                       flux_windows: tuple[int, ...] | None = None) -> tuple[torch.Tensor, ...]:
    """Multi-resolution STFT and mel terms from one STFT per window (hop = window / 4).

    Returns (sum over windows of log-magnitude L1 + spectral convergence, sum over windows of
    the log10 mel L1 with `mel_bands[i]` bands at window i), and with `flux_windows` a third,
    the sum of `flux_loss` over the windows in both lists. `[B, 1, N]` -> scalars."""
    from msldm.losses import MEL_CLAMP_EPS, _mel_basis

    stft_total, mel_total = recon.new_zeros(()), recon.new_zeros(())
    flux_total = recon.new_zeros(())
    both = torch.cat([recon, audio], dim=0).squeeze(1)  # [2B, N]: one STFT per resolution
    for n_fft, n_mels in zip(windows, mel_bands):
        fb, window = _mel_basis(sample_rate, n_fft, n_mels, audio.device)
        spec = torch.stft(both, n_fft, n_fft // 4, window=window, center=True, pad_mode="constant",
                          return_complex=True).abs()  # [2B, bins, frames]
        x, y = spec.chunk(2, dim=0)
        log_l1 = F.l1_loss(torch.log(x + 1e-5), torch.log(y + 1e-5))
        sc = (torch.linalg.norm(y - x, dim=(1, 2)) / torch.linalg.norm(y, dim=(1, 2)).clamp_min(1e-5)).mean()
        stft_total = stft_total + log_l1 + sc
        mel_x, mel_y = torch.matmul(fb, x), torch.matmul(fb, y)
        mel_total = mel_total + F.l1_loss(mel_x.clamp(min=MEL_CLAMP_EPS).log10(),
                                          mel_y.clamp(min=MEL_CLAMP_EPS).log10())
        if flux_windows is not None and n_fft in flux_windows:
            flux_total = flux_total + flux_loss(x, y)
    if flux_windows is not None:
        return stft_total, mel_total, flux_total
    return stft_total, mel_total


def spectral_vae_loss(vae: torch.nn.Module, audio: torch.Tensor, cfg: VAELossConfig, *,
                      sample_posterior: bool = True) -> dict[str, torch.Tensor]:
    """Run the spectral VAE on `audio [B, 1, N]` (N a multiple of D). Returns the scalar terms
    {"loss", "logmag", "phase", "stft", "mel", "flux", "kl"} ("flux" is computed, and logged,
    whatever its weight: the curve of a run without it can be compared), "low_env" where
    `lambda_low_envelope` > 0 and "level" where `lambda_level` > 0."""
    return spectral_vae_terms(vae, audio, cfg, sample_posterior=sample_posterior)[0]


def spectral_vae_terms(vae: torch.nn.Module, audio: torch.Tensor, cfg: VAELossConfig, *,
                       sample_posterior: bool = True) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """`spectral_vae_loss`'s terms and the reconstruction `[B, 1, N]` they were computed on
    (for an adversarial term, `adversarial_terms`)."""
    from msldm.spectral_vae import LOG_EPS

    mean, logvar = vae.encode(audio)
    z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean) if sample_posterior else mean
    spec = vae.decode_spectrum(z)
    with torch.no_grad():
        logmag, cos_dev, sin_dev = vae.features(audio)
        re, im = vae.stft(audio)
        norm = torch.sqrt(re * re + im * im + 1e-12)
        target = {"logmag": logmag, "cos_dev": cos_dev, "sin_dev": sin_dev,
                  "cos": re / norm, "sin": im / norm}
        low_target = None
        if "low" in spec:
            low_logmag, low_cos, low_sin = vae.low_features(audio)
            low_target = {"logmag": low_logmag, "cos_dev": low_cos, "sin_dev": low_sin}
    phase = vae.cfg.phase
    synth = dict(spec)
    if phase != "free" and cfg.phase_grad_frames > 0:
        synth["cos"], synth["sin"] = vae.phase_from_deviation(spec["dev"], spec["logmag"],
                                                              grad_frames=cfg.phase_grad_frames)
        if low_target is not None:
            low = spec["low"]
            synth["low"] = dict(low, **dict(zip(("cos", "sin"), vae.low_phase_from_deviation(
                low["dev"], low["logmag"], grad_frames=cfg.phase_grad_frames))))
    elif phase != "free":
        synth["cos"], synth["sin"] = spec["cos"].detach(), spec["sin"].detach()
        if low_target is not None:
            synth["low"] = dict(spec["low"], cos=spec["low"]["cos"].detach(), sin=spec["low"]["sin"].detach())
    recon = vae.synthesize(synth)[..., : audio.shape[-1]]
    stft, mel, flux = multires_stft_loss(recon, audio, cfg.stft_windows, cfg.stft_mel_bands,
                                         vae.cfg.sample_rate, flux_windows=cfg.flux_windows)
    terms = {
        "logmag": F.l1_loss(spec["logmag"], logmag),
        "phase": phase_loss(spec, target, phase, LOG_EPS, cfg.phase_error),
        "stft": stft,
        "mel": mel,
        "flux": flux,
        "kl": kl_divergence(mean, logvar),
    }
    if cfg.lambda_low_envelope > 0:
        terms["low_env"] = low_envelope_loss(recon, audio, vae.cfg.sample_rate)
    if cfg.lambda_level > 0:
        terms["level"] = level_loss(recon, audio)
    if low_target is not None:
        terms["logmag"] = terms["logmag"] + F.l1_loss(spec["low"]["logmag"], low_target["logmag"])
        terms["phase"] = terms["phase"] + phase_loss(spec["low"], low_target, phase, LOG_EPS, cfg.phase_error)
    terms["loss"] = (cfg.lambda_logmag * terms["logmag"] + cfg.lambda_phase * terms["phase"]
                     + cfg.lambda_stft * terms["stft"] + cfg.lambda_spectral_mel * terms["mel"]
                     + cfg.lambda_flux * terms["flux"]
                     + cfg.lambda_spectral_kl * terms["kl"])
    if "low_env" in terms:
        terms["loss"] = terms["loss"] + cfg.lambda_low_envelope * terms["low_env"]
    if "level" in terms:
        terms["loss"] = terms["loss"] + cfg.lambda_level * terms["level"]
    return terms, recon


def adversarial_terms(disc: torch.nn.Module, audio: torch.Tensor, recon: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The GAN terms of a spectral VAE step, with the least-squares losses of `msldm.losses`.

    Returns (discriminator loss on real and the detached reconstruction, the generator's
    adversarial loss, its feature-matching loss). The discriminator runs twice: once on
    `cat([audio, recon.detach()])` with its parameters trainable, once on `recon` alone with
    them frozen (the real features for feature matching come from the first run, detached), so
    the generator terms' gradients reach the VAE only and the discriminator loss's reach the
    discriminator only. The caller steps the two optimisers."""
    from msldm.losses import _frozen, adversarial_loss, discriminator_loss, feature_matching_loss

    batch = audio.shape[0]
    maps = disc(torch.cat([audio, recon.detach()], dim=0))
    d_real = [[f[:batch] for f in sub] for sub in maps]
    d_fake = [[f[batch:] for f in sub] for sub in maps]
    loss_d = discriminator_loss(d_real, d_fake)
    with _frozen(disc):
        g_fake = disc(recon)
    real_features = [[f.detach() for f in sub] for sub in d_real]
    return loss_d, adversarial_loss(g_fake), feature_matching_loss(real_features, g_fake)
