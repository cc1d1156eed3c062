"""EDM preconditioning and training loss (Karras et al. 2022) around the multi-source U-Net.

D(x; sigma) = c_skip(sigma) * x + c_out(sigma) * F_theta(c_in(sigma) * x, c_noise(sigma))
(Table 1 of Karras et al.), with sigma_data = 0.4 as in Sec. 2.2 of the MSLDM paper.
"""

from __future__ import annotations

import math

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
    """

    def __init__(self, cfg: DiffusionConfig):
        super().__init__()
        self.cfg = cfg
        self.unet = UNet1d(cfg.unet)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = sigma.to(x.dtype).reshape(-1)
        c_skip, c_out, c_in, c_noise = edm_coefficients(sigma, self.cfg.sigma_data)
        F_x = self.unet(x * c_in[:, None, None], c_noise)
        return c_skip[:, None, None] * x + c_out[:, None, None] * F_x.to(x.dtype)


def _draw(fn, shape: tuple[int, ...], generator: torch.Generator | None,
          device: torch.device | str) -> torch.Tensor:
    """Draw on the generator's own device (so a CPU generator drives GPU training), then move."""
    where = generator.device if generator is not None else device
    return fn(shape, generator=generator, device=where).to(device)


def sample_training_sigma(cfg: DiffusionConfig, n: int, generator: torch.Generator | None = None,
                          device: torch.device | str = "cpu") -> torch.Tensor:
    """Training noise levels `[n]`: Uniform(0, train_sigma_max) as the MSLDM paper, or EDM's
    log-normal(P_mean, P_std). A tiny floor keeps c_noise = log(sigma)/4 finite."""
    u = _draw(torch.rand, (n,), generator, device)
    if cfg.train_sigma == "uniform":
        return (u * cfg.train_sigma_max).clamp_min(1e-3)
    if cfg.train_sigma == "lognormal":
        g = torch.erfinv(2 * u.clamp(1e-6, 1 - 1e-6) - 1) * math.sqrt(2)  # standard normal
        return torch.exp(cfg.lognormal_mean + cfg.lognormal_std * g)
    raise ValueError(f"unknown train_sigma {cfg.train_sigma!r}")


def edm_loss(model: EDMDenoiser, z0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """EDM loss: E[ lambda(sigma) * ||D(z0 + sigma n; sigma) - z0||^2 ] with
    lambda = (sigma^2 + sigma_data^2) / (sigma * sigma_data)^2 (Eq. 8, Table 1 of Karras et al.).

    `z0`: normalised clean latents `[B, K*C, T]`. Returns a scalar tensor.
    """
    cfg = model.cfg if not hasattr(model, "module") else model.module.cfg
    B = z0.shape[0]
    sigma = sample_training_sigma(cfg, B, generator, z0.device).to(z0.dtype)
    noise = _draw(torch.randn, tuple(z0.shape), generator, z0.device).to(z0.dtype)
    denoised = model(z0 + noise * sigma[:, None, None], sigma)
    d2 = cfg.sigma_data ** 2
    weight = (sigma ** 2 + d2) / (sigma * cfg.sigma_data) ** 2
    return (weight[:, None, None] * (denoised - z0) ** 2).mean()
