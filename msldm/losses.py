"""SourceVAE losses, optimisers and the single GAN training step (Eq. 1 of the MSLDM paper).

`L_SourceVAE = lambda_1 L_Mel + lambda_2 L_feature + lambda_3 L_adversarial + lambda_4 L_KL`
with lambda = (15, 2, 1, 10) (`VAELossConfig`). L_Mel, L_feature and L_adversarial are DAC's
(multi-scale log-mel L1, discriminator feature-map L1, least-squares GAN); L_KL is the KL of
the posterior to N(0, I), averaged over elements (as the paper's code).

Optimisers follow the paper's released SourceVAE configuration: AdamW (generator) and Adam
(discriminator), lr 5e-5, betas (0.8, 0.99), exponential LR decay 0.999996 per step, gradient
norm clipping 1e3 (generator) and 10 (discriminator) as DAC.
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from msldm.config import VAELossConfig
from msldm.discriminators import Discriminator, FeatureMaps
from msldm.vae import SourceVAE

__all__ = [
    "mel_filterbank", "mel_spectrogram", "multiscale_mel_loss", "kl_divergence",
    "discriminator_loss", "adversarial_loss", "feature_matching_loss", "generator_loss",
    "vae_reconstruction_loss", "vae_train_step", "VAEOptimConfig", "VAEOptimizers",
    "vae_optimizers",
]

MEL_CLAMP_EPS: float = 1e-5  # DAC: log10(clamp(mel, 1e-5))


# ----------------------------------------------------------------------------- mel spectrograms

def _hz_to_mel(f: torch.Tensor, htk: bool) -> torch.Tensor:
    if htk:
        return 2595.0 * torch.log10(1.0 + f / 700.0)
    # Slaney (Auditory Toolbox): linear below 1 kHz, logarithmic above.
    linear = f / (200.0 / 3.0)
    log = 15.0 + torch.log(f.clamp(min=1e-10) / 1000.0) / (math.log(6.4) / 27.0)
    return torch.where(f >= 1000.0, log, linear)


def _mel_to_hz(m: torch.Tensor, htk: bool) -> torch.Tensor:
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    linear = m * (200.0 / 3.0)
    log = 1000.0 * torch.exp((math.log(6.4) / 27.0) * (m - 15.0))
    return torch.where(m >= 15.0, log, linear)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None, htk: bool = False,
                   slaney_norm: bool = True) -> torch.Tensor:
    """Triangular mel filterbank `[n_mels, n_fft // 2 + 1]` (float32).

    Slaney mel scale and area normalisation by default (librosa's default), HTK with `htk`.
    """
    fmax = sample_rate / 2.0 if fmax is None else fmax
    fft_hz = torch.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1, dtype=torch.float64)
    lo, hi = _hz_to_mel(torch.tensor([fmin, fmax], dtype=torch.float64), htk)
    edges = _mel_to_hz(torch.linspace(float(lo), float(hi), n_mels + 2,
                                      dtype=torch.float64), htk)  # [n_mels + 2]
    width = edges.diff()  # [n_mels + 1]
    ramps = edges[:, None] - fft_hz[None, :]  # [n_mels + 2, bins]
    rising = -ramps[:-2] / width[:-1, None]
    falling = ramps[2:] / width[1:, None]
    fb = torch.clamp(torch.minimum(rising, falling), min=0.0)  # [n_mels, bins]
    if slaney_norm:
        fb = fb * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return fb.float()


@functools.lru_cache(maxsize=64)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached `(filterbank [n_mels, bins], hann window [n_fft])` on `device`."""
    fb = mel_filterbank(sample_rate, n_fft, n_mels).to(device)
    return fb, torch.hann_window(n_fft, device=device)


def mel_spectrogram(x: torch.Tensor, sample_rate: int, n_fft: int,
                    n_mels: int) -> torch.Tensor:
    """Magnitude mel spectrogram (hop n_fft/4, hann, centred): `x [B, 1, N] -> [B, n_mels, F]`."""
    fb, window = _mel_basis(sample_rate, n_fft, n_mels, x.device)
    spec = torch.stft(x.squeeze(1).float(), n_fft, n_fft // 4, window=window, center=True,
                      pad_mode="constant", return_complex=True)  # [B, bins, F]
    return torch.matmul(fb, spec.abs())


def multiscale_mel_loss(recon: torch.Tensor, audio: torch.Tensor, sample_rate: int,
                        cfg: VAELossConfig, mag_weight: float = 0.0,
                        log_weight: float = 1.0) -> torch.Tensor:
    """DAC's multi-scale mel loss, summed over the (window, n_mels) scales of `cfg`.

    Per scale: `log_weight * L1(log10 clamp(mel)) + mag_weight * L1(mel)` (the paper's config
    uses mag_weight 0). `recon, audio [B, 1, N]` -> scalar.
    """
    total = recon.new_zeros((), dtype=torch.float32)
    both = torch.cat([recon, audio], dim=0)  # [2B, 1, N]: one STFT per scale
    for n_fft, n_mels in zip(cfg.mel_windows, cfg.mel_bands):
        mel_x, mel_y = mel_spectrogram(both, sample_rate, n_fft, n_mels).chunk(2, dim=0)
        log_x = mel_x.clamp(min=MEL_CLAMP_EPS).log10()
        log_y = mel_y.clamp(min=MEL_CLAMP_EPS).log10()
        total = total + log_weight * F.l1_loss(log_x, log_y)
        if mag_weight:
            total = total + mag_weight * F.l1_loss(mel_x, mel_y)
    return total


# ----------------------------------------------------------------------------- KL and GAN losses

def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)), averaged over all elements of `[B, C, T]`."""
    mean, logvar = mean.float(), logvar.float()
    return 0.5 * torch.mean(mean.pow(2) + logvar.exp() - 1.0 - logvar)


def discriminator_loss(d_real: list[FeatureMaps], d_fake: list[FeatureMaps]) -> torch.Tensor:
    """Least-squares GAN loss of the discriminator: sum_k E[(1 - D_k(s))^2] + E[D_k(s_hat)^2]."""
    loss = d_real[0][-1].new_zeros((), dtype=torch.float32)
    for real, fake in zip(d_real, d_fake):
        loss = loss + torch.mean((1.0 - real[-1].float()) ** 2) + torch.mean(fake[-1].float() ** 2)
    return loss


def adversarial_loss(d_fake: list[FeatureMaps]) -> torch.Tensor:
    """Least-squares GAN loss of the generator: sum_k E[(1 - D_k(s_hat))^2]."""
    loss = d_fake[0][-1].new_zeros((), dtype=torch.float32)
    for fake in d_fake:
        loss = loss + torch.mean((1.0 - fake[-1].float()) ** 2)
    return loss


def feature_matching_loss(d_real: list[FeatureMaps], d_fake: list[FeatureMaps]) -> torch.Tensor:
    """Sum over sub-discriminators and layers (logits excluded) of L1(f(s_hat), f(s))."""
    loss = d_fake[0][-1].new_zeros((), dtype=torch.float32)
    for real, fake in zip(d_real, d_fake):
        for r, f in zip(real[:-1], fake[:-1]):
            loss = loss + F.l1_loss(f.float(), r.detach().float())
    return loss


def _split_real_fake(maps: list[FeatureMaps], batch: int
                     ) -> tuple[list[FeatureMaps], list[FeatureMaps]]:
    """Split the outputs of the discriminator run on `cat([real, fake])` (batch 2B)."""
    real = [[f[:batch] for f in sub] for sub in maps]
    fake = [[f[batch:] for f in sub] for sub in maps]
    return real, fake


# ----------------------------------------------------------------------------- generator loss

def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def generator_loss(audio: torch.Tensor, recon: torch.Tensor, mean: torch.Tensor,
                   logvar: torch.Tensor, cfg: VAELossConfig, sample_rate: int,
                   disc: Discriminator | None = None) -> dict[str, torch.Tensor]:
    """Eq. 1 for a reconstruction: `{"loss", "mel", "kl"[, "adv", "feat"]}` (scalar tensors).

    `audio, recon [B, 1, N]`, `mean, logvar [B, C, T]`. With `disc` the adversarial and
    feature-matching terms are added (the discriminator runs on real and fake together).
    """
    with torch.autocast(device_type=audio.device.type, enabled=False):
        out = {"mel": multiscale_mel_loss(recon.float(), audio.float(), sample_rate, cfg),
               "kl": kl_divergence(mean, logvar)}
    loss = cfg.lambda_mel * out["mel"] + cfg.lambda_kl * out["kl"]
    if disc is not None:
        d_real, d_fake = _split_real_fake(disc(torch.cat([audio, recon], 0)), audio.shape[0])
        out["adv"] = adversarial_loss(d_fake)
        out["feat"] = feature_matching_loss(d_real, d_fake)
        loss = loss + cfg.lambda_adversarial * out["adv"] + cfg.lambda_feature * out["feat"]
    out["loss"] = loss
    return out


def vae_reconstruction_loss(vae: SourceVAE, audio: torch.Tensor, cfg: VAELossConfig, *,
                            disc: Discriminator | None = None, adversarial: bool = False,
                            sample_posterior: bool = True) -> dict[str, torch.Tensor]:
    """Run the VAE on `audio [B, 1, N]` and return the generator loss terms (scalar tensors).

    With `adversarial=False` (warm-up, validation) only `lambda_mel L_Mel + lambda_KL L_KL`;
    with `adversarial=True` `disc` is required and the GAN terms are added.
    """
    if adversarial and disc is None:
        raise ValueError("adversarial=True needs a discriminator")
    recon, mean, logvar = vae(audio, sample_posterior=sample_posterior)
    return generator_loss(audio, recon, mean, logvar, cfg, vae.cfg.sample_rate,
                          disc if adversarial else None)


# ----------------------------------------------------------------------------- optimisation

@dataclass(frozen=True)
class VAEOptimConfig:
    """Optimiser settings of the paper's released SourceVAE config (plus DAC's grad clipping)."""

    lr: float = 5e-5
    betas: tuple[float, float] = (0.8, 0.99)
    lr_decay: float = 0.999996  # ExponentialLR gamma, stepped once per training step
    grad_clip_generator: float = 1e3
    grad_clip_discriminator: float = 10.0


@dataclass
class VAEOptimizers:
    """Optimisers and per-step exponential LR schedulers of the generator and discriminator."""

    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    sched_g: torch.optim.lr_scheduler.ExponentialLR
    sched_d: torch.optim.lr_scheduler.ExponentialLR

    def step_schedulers(self) -> None:
        """Decay both learning rates by one step (call once per `vae_train_step`)."""
        self.sched_g.step()
        self.sched_d.step()


def vae_optimizers(vae: nn.Module, disc: nn.Module,
                   cfg: VAEOptimConfig = VAEOptimConfig()) -> VAEOptimizers:
    """AdamW for the VAE, Adam for the discriminator, both with ExponentialLR(cfg.lr_decay)."""
    opt_g = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=cfg.betas)
    return VAEOptimizers(opt_g, opt_d,
                         torch.optim.lr_scheduler.ExponentialLR(opt_g, gamma=cfg.lr_decay),
                         torch.optim.lr_scheduler.ExponentialLR(opt_d, gamma=cfg.lr_decay))


def _apply_gradients(loss: torch.Tensor, opt: torch.optim.Optimizer, params: list[nn.Parameter],
                     clip: float, scaler: torch.amp.GradScaler | None) -> float:
    """zero_grad, backward, (unscale), clip, step. Returns the pre-clip gradient norm."""
    opt.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
    else:
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
    norm = torch.nn.utils.clip_grad_norm_(params, clip)
    if scaler is None:
        opt.step()
    else:
        scaler.step(opt)
    return float(norm)


@contextlib.contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """Temporarily turn off `requires_grad` of a module's parameters."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


def vae_train_step(vae: SourceVAE, disc: Discriminator | None, opt_g: torch.optim.Optimizer,
                   opt_d: torch.optim.Optimizer | None, audio: torch.Tensor,
                   loss_cfg: VAELossConfig, *, adversarial: bool = True,
                   optim_cfg: VAEOptimConfig = VAEOptimConfig(),
                   scaler: torch.amp.GradScaler | None = None,
                   amp_dtype: torch.dtype | None = None) -> dict[str, float]:
    """One SourceVAE training step on `audio [B, 1, N]` (as the paper's code / DAC).

    One VAE forward (posterior sample decoded); if `adversarial`, a discriminator update on
    (real, detached fake) with the LSGAN loss; then a generator update with Eq. 1. With
    `adversarial=False` (warm-up) `disc`/`opt_d` may be None and only mel + KL are used.
    Mixed precision: `amp_dtype` autocasts the networks (losses stay fp32), `scaler` scales
    fp16 gradients. LR schedulers are the caller's (`VAEOptimizers.step_schedulers`).
    Returns floats: loss, mel, kl, grad_norm_g [, adv, feat, disc, grad_norm_d].
    """
    if adversarial and (disc is None or opt_d is None):
        raise ValueError("adversarial=True needs disc and opt_d")
    vae.train()
    logs: dict[str, float] = {}
    with _autocast(audio.device, amp_dtype):
        recon, mean, logvar = vae(audio, sample_posterior=True)
    if adversarial:
        disc.train()
        with _autocast(audio.device, amp_dtype):
            d_real, d_fake = _split_real_fake(
                disc(torch.cat([audio, recon.detach()], 0)), audio.shape[0])
        loss_d = discriminator_loss(d_real, d_fake)
        logs["grad_norm_d"] = _apply_gradients(loss_d, opt_d, list(disc.parameters()),
                                               optim_cfg.grad_clip_discriminator, scaler)
        logs["disc"] = float(loss_d.detach())
    with _frozen(disc) if adversarial else contextlib.nullcontext():
        with _autocast(audio.device, amp_dtype):
            terms = generator_loss(audio, recon, mean, logvar, loss_cfg, vae.cfg.sample_rate,
                                   disc if adversarial else None)
        logs["grad_norm_g"] = _apply_gradients(terms["loss"], opt_g, list(vae.parameters()),
                                               optim_cfg.grad_clip_generator, scaler)
    if scaler is not None:
        scaler.update()
    logs.update({k: float(v.detach()) for k, v in terms.items()})
    return logs
