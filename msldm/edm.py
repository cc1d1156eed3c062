"""EDM preconditioning and training loss (Karras et al. 2022) around the multi-source U-Net.

D(x; sigma) = c_skip(sigma) * x + c_out(sigma) * F_theta(c_in(sigma) * x, c_noise(sigma))
(Table 1 of Karras et al.), with sigma_data = 0.4 as in Sec. 2.2 of the MSLDM paper.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from msldm.config import DiffusionConfig
from msldm.unet import UNet1d


def edm_coefficients(sigma: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, ...]:
    """(c_skip, c_out, c_in, c_noise) for noise levels `sigma` `[B]` (each returned `[B]`)."""
    s2, d2 = sigma * sigma, sigma_data * sigma_data
    c_skip = d2 / (s2 + d2)
    c_out = sigma * sigma_data / torch.sqrt(s2 + d2)
    c_in = 1.0 / torch.sqrt(s2 + d2)
    c_noise = torch.log(sigma.clamp_min(1e-20)) / 4.0
    return c_skip, c_out, c_in, c_noise


class EDMDenoiser(nn.Module):
    """The preconditioned denoiser D(x; sigma) over the joint latent of K stems.

    `forward(x [B, K*C, T], sigma [B]) -> [B, K*C, T]`, an estimate of the clean latent.
    Works in the normalised latent space (see `msldm.checkpoint` for the statistics).

    A conditional denoiser (`cfg.conditional`, given-stem conditioning) also takes
    `given` (shaped like `x`: the given stems' clean latents where `mask` is 1) and `mask`
    (0/1, broadcastable to `x`: per stem and frame, as `msldm.sampling.Imputation` holds it);
    both None means nothing is given (total generation). The joint denoiser ignores them.
    """

    def __init__(self, cfg: DiffusionConfig):
        super().__init__()
        self.cfg = cfg
        self.unet = UNet1d(cfg.unet)

    def condition(self, x: torch.Tensor, given: torch.Tensor | None, mask: torch.Tensor | None) -> torch.Tensor:
        """The U-Net's second input `[B, K*C + K, T]`: the given latents scaled to unit
        spread, zero where not given, then each stem's mask (its first channel's)."""
        if mask is None:
            m = torch.zeros_like(x)
            g = m
        else:
            m = mask.to(x.dtype).expand_as(x)
            g = m if given is None else given.to(x.dtype) * m
        C = self.cfg.latent_dim
        return torch.cat([g * (1.0 / self.cfg.sigma_data), m[:, ::C]], dim=1)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, given: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        sigma = sigma.to(x.dtype).reshape(-1)
        c_skip, c_out, c_in, c_noise = edm_coefficients(sigma, self.cfg.sigma_data)
        cond = self.condition(x, given, mask) if self.cfg.conditional else None
        F_x = self.unet(x * c_in[:, None, None], c_noise, cond)
        return c_skip[:, None, None] * x + c_out[:, None, None] * F_x.to(x.dtype)


def _draw(fn, shape: tuple[int, ...], generator: torch.Generator | None,
          device: torch.device | str) -> torch.Tensor:
    """Draw on the generator's own device (so a CPU generator drives GPU training), then move."""
    where = generator.device if generator is not None else device
    return fn(shape, generator=generator, device=where).to(device)


def sample_training_sigma(cfg: DiffusionConfig, n: int, generator: torch.Generator | None = None,
                          device: torch.device | str = "cpu") -> torch.Tensor:
    """Training noise levels `[n]`: Uniform(0, train_sigma_max) as the MSLDM paper, EDM's
    log-normal(P_mean, P_std), or "mixed": each level drawn from one of the two, with even odds.
    A tiny floor keeps c_noise = log(sigma)/4 finite.

    Why "mixed": under the uniform draw a level below 0.1 is 1 draw in 30, and a denoiser trained
    that way barely denoises there (on 2026-12-05 the CPU denoiser removed 10% of the noise power
    at sigma 0.1 and 54% at 0.3, less than a 3-tap moving average), while the Karras schedule
    spends half of its steps below 0.3: the sample keeps that noise. The log-normal half covers
    the low levels; the uniform half keeps the high ones, where imputation shapes the parts.
    """
    u = _draw(torch.rand, (n,), generator, device)
    if cfg.train_sigma == "uniform":
        return (u * cfg.train_sigma_max).clamp_min(1e-3)
    if cfg.train_sigma == "lognormal":
        return _lognormal(cfg, u)
    if cfg.train_sigma == "mixed":
        pick = _draw(torch.rand, (n,), generator, device) < 0.5
        v = _draw(torch.rand, (n,), generator, device)
        return torch.where(pick, _lognormal(cfg, v), (u * cfg.train_sigma_max).clamp_min(1e-3))
    raise ValueError(f"unknown train_sigma {cfg.train_sigma!r}")


def _lognormal(cfg: DiffusionConfig, u: torch.Tensor) -> torch.Tensor:
    """Log-normal(P_mean, P_std) levels from uniform draws `u` (the inverse CDF)."""
    g = torch.erfinv(2 * u.clamp(1e-6, 1 - 1e-6) - 1) * math.sqrt(2)  # standard normal
    return torch.exp(cfg.lognormal_mean + cfg.lognormal_std * g)


def random_given_mask(cfg: DiffusionConfig, B: int, T: int, given_prob: float,
                      generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                      prefix_prob: float = 0.25, stem_probs: Sequence[float] | None = None) -> torch.Tensor:
    """Training masks of given-stem conditioning, `[B, K*C, T]` of 0/1 (1: given).

    Each row is conditioned with probability `given_prob` (else all zero: total generation);
    a conditioned row gives each stem with probability 1/2 (stem k with `stem_probs[k]` where
    given) but never all K (one drawn stem is then generated), and with probability
    `prefix_prob` also gives the first L frames of every stem, L ~ U{1..T/2}: the daemon's
    continuation of a window in time.
    """
    K, C = cfg.K, cfg.latent_dim
    row = _draw(torch.rand, (B, 1), generator, device) < given_prob
    p = torch.full((K,), 0.5) if stem_probs is None else torch.as_tensor([float(v) for v in stem_probs])
    if p.numel() != K or not bool(((p >= 0) & (p <= 1)).all()):
        raise ValueError(f"stem_probs: one probability in [0, 1] per stem ({K}), got {list(stem_probs or [])}")
    stems = _draw(torch.rand, (B, K), generator, device) < p.to(device)[None, :]
    drop = (_draw(torch.rand, (B,), generator, device) * K).long().clamp_max(K - 1)
    full = stems.all(dim=1)
    stems[full, drop[full]] = False
    prefix = _draw(torch.rand, (B,), generator, device) < prefix_prob
    length = 1 + (_draw(torch.rand, (B,), generator, device) * max(T // 2, 1)).long()
    frames = torch.arange(T, device=device)[None, :] < torch.where(prefix, length, 0)[:, None]  # [B, T]
    m = (stems[:, :, None] | frames[:, None, :]) & row[:, :, None]  # [B, K, T]
    return m.to(torch.float32).repeat_interleave(C, dim=1)


def edm_loss(model: EDMDenoiser, z0: torch.Tensor, generator: torch.Generator | None = None,
             given_prob: float = 0.0, mask: torch.Tensor | None = None,
             sigma: float | None = None, given_noise: float | None = None,
             stem_probs: Sequence[float] | None = None) -> torch.Tensor:
    """EDM loss: E[ lambda(sigma) * ||D(z0 + sigma n; sigma) - z0||^2 ] with
    lambda = (sigma^2 + sigma_data^2) / (sigma * sigma_data)^2 (Eq. 8, Table 1 of Karras et al.).

    `z0`: normalised clean latents `[B, K*C, T]`. Returns a scalar tensor.

    A conditional denoiser is shown a given part (`mask`, or `random_given_mask` with
    `given_prob` when None): noised like the rest, as imputation's Eq. 5 shows it, and clean
    through its second input. With a mask the loss is the mean over the generated positions
    only (for a joint denoiser too, which sees the given part noised only: the figure
    imputation's first step starts from). `sigma`: score at this noise level instead of drawn
    ones (the draws are made all the same, so the noise is the one a drawn run would use).

    `given_noise` r0 (a joint denoiser, 0 <= r0 <= 1): a share `given_prob` of the rows is shown
    a random given part (`random_given_mask`) noised less than the rest, at r * sigma with r ~
    U[r0, 1] per row, and scored where nothing is given: the model learns to read a given stem
    that imputation shows it under less noise (`msldm.sampling.Imputation`'s `given_noise`), so
    that at the high levels where a part's key and rhythm are decided it still hears them.
    With a `mask` given, its given part is noised at exactly r0 * sigma. `stem_probs`: each
    stem's chance to be given in a row with a given part (`random_given_mask`; default 1/2).
    """
    cfg = model.cfg if not hasattr(model, "module") else model.module.cfg
    B = z0.shape[0]
    drawn = sample_training_sigma(cfg, B, generator, z0.device).to(z0.dtype)
    sigma = drawn if sigma is None else torch.full_like(drawn, float(sigma))
    noise = _draw(torch.randn, tuple(z0.shape), generator, z0.device).to(z0.dtype)
    d2 = cfg.sigma_data ** 2
    weight = (sigma ** 2 + d2) / (sigma * cfg.sigma_data) ** 2
    less = given_noise is not None and not cfg.conditional  # a joint model shown its given part less noisy
    if less and not 0.0 <= given_noise <= 1.0:
        raise ValueError(f"given_noise must be in [0, 1], got {given_noise}")
    drawn_mask = mask is None and (cfg.conditional or less)
    if drawn_mask:
        mask = random_given_mask(cfg, B, z0.shape[-1], given_prob, generator, z0.device, stem_probs=stem_probs)
    if mask is None:
        return (weight[:, None, None] * (model(z0 + noise * sigma[:, None, None], sigma) - z0) ** 2).mean()
    mask = mask.to(z0.dtype).expand_as(z0)
    scale = sigma[:, None, None]
    if less:  # r ~ U[r0, 1] per row for a drawn mask, exactly r0 for a fixed one
        r = (given_noise + (1.0 - given_noise) * _draw(torch.rand, (B,), generator, z0.device).to(z0.dtype)
             if drawn_mask else torch.full((B,), float(given_noise), dtype=z0.dtype, device=z0.device))
        scale = scale * (1.0 - mask * (1.0 - r[:, None, None]))
    x = z0 + noise * scale
    denoised = model(x, sigma, z0, mask) if cfg.conditional else model(x, sigma)
    keep = 1.0 - mask
    return (weight[:, None, None] * keep * (denoised - z0) ** 2).sum() / keep.sum().clamp_min(1.0)
