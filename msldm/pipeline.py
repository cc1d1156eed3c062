"""The PyTorch inference pipeline: encode given stems, sample the joint latent, decode.

Total generation is partial generation with nothing given. The sampling itself is the
framework-free `msldm.sampling.generate`; this module only supplies torch arrays, the
denoiser and the noise source.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from msldm import sampling
from msldm.checkpoint import identity_stats, load_diffusion, load_vae
from msldm.config import ModelConfig, SamplerConfig
from msldm.edm import EDMDenoiser
from msldm.vae import SourceVAE


@dataclass
class GenerationResult:
    """Stems `{name: [N]}` at the model rate (given ones decoded from their latents are NOT
    included: the caller has the originals), the joint latent `[1, K*C, T]`, timings in s."""

    stems: dict[str, torch.Tensor]
    latent: torch.Tensor
    timings: dict[str, float] = field(default_factory=dict)


def validate_request(stems: tuple[str, ...], given: dict, generate: list[str]) -> None:
    """Raise ValueError for unknown stems, overlaps, or an empty request."""
    unknown = [s for s in list(given) + list(generate) if s not in stems]
    if unknown:
        raise ValueError(f"unknown stem(s) {unknown}; the model knows {list(stems)}")
    both = sorted(set(given) & set(generate))
    if both:
        raise ValueError(f"stem(s) {both} are both given and requested")
    if not generate:
        raise ValueError("nothing requested: name at least one stem to generate")


class TorchPipeline:
    """SourceVAE + EDM denoiser, with the latent normalisation of the diffusion checkpoint."""

    def __init__(self, vae: SourceVAE, denoiser: EDMDenoiser, config: ModelConfig,
                 stats: dict[str, torch.Tensor] | None = None, device: str = "cpu"):
        self.vae, self.denoiser, self.config = vae.eval(), denoiser.eval(), config
        self.device = torch.device(device)
        stats = stats or identity_stats(config.vae.latent_dim)
        self.mean = stats["latent_mean"].to(self.device)[None, :, None]  # [1, C, 1]
        self.std = stats["latent_std"].to(self.device)[None, :, None]

    @classmethod
    def from_checkpoints(cls, vae_path: str | Path, diffusion_path: str | Path,
                         device: str = "cpu") -> "TorchPipeline":
        vae, vae_cfg, _ = load_vae(vae_path, device)
        denoiser, cfg, _, stats = load_diffusion(diffusion_path, device)
        if not vae_cfg.vae.same_latents(cfg.vae):
            raise ValueError("the VAE checkpoint does not match the diffusion checkpoint's VAE")
        cfg = dataclasses.replace(cfg, vae=vae_cfg.vae)  # the decoder actually used
        return cls(vae, denoiser, cfg, stats, device)

    @property
    def stems(self) -> tuple[str, ...]:
        return self.config.diffusion.stems

    @torch.no_grad()
    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """audio `[B, 1, N]` -> normalised posterior mean `[B, C, ceil(N/D)]`."""
        mean, _ = self.vae.encode(audio.to(self.device))
        return (mean - self.mean) / self.std

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """normalised latent `[B, C, T]` -> audio `[B, 1, T*D]`."""
        return self.vae.decode(z * self.std + self.mean)

    @property
    def conditional(self) -> bool:
        """The denoiser reads the given part clean too (given-stem conditioning)."""
        return self.config.diffusion.conditional

    @torch.no_grad()
    def denoise(self, x: torch.Tensor, sigma: float, given: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        s = torch.full((x.shape[0],), sigma, device=x.device, dtype=x.dtype)
        return self.denoiser(x, s, given, mask)

    def frames_for(self, n_samples: int) -> int:
        """Latent frames covering `n_samples`, rounded up to the U-Net's multiple."""
        f = self.config.diffusion.unet.total_factor
        t = math.ceil(n_samples / self.config.vae.hop)
        return max(f, math.ceil(t / f) * f)

    @torch.no_grad()
    def generate(self, given: dict[str, torch.Tensor], generate: list[str], n_samples: int, *,
                 seed: int = 0, sampler: SamplerConfig | None = None,
                 noise: torch.Tensor | None = None,
                 callback: Callable[[int, int, float, torch.Tensor, torch.Tensor], None] | None = None
                 ) -> GenerationResult:
        """Partial generation (Eq. 4-6) of the stems in `generate` given mono stems `{name: [N]}`
        at the model rate; total generation when `given` is empty. Returns `n_samples` per stem."""
        validate_request(self.stems, given, generate)
        sc = sampler or self.config.sampler
        C, K, T = self.config.vae.latent_dim, len(self.stems), self.frames_for(n_samples)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        x_given = torch.zeros(1, K * C, T, device=self.device)
        mask = torch.zeros(1, K * C, 1, device=self.device)
        for name, audio in given.items():
            k = self.stems.index(name)
            x_given[:, k * C:(k + 1) * C] = self.encode(_fit(audio, T * self.config.vae.hop))
            mask[:, k * C:(k + 1) * C] = 1.0
        timings["encode"] = time.perf_counter() - t0
        gen = torch.Generator(device="cpu").manual_seed(seed)

        def randn(like: torch.Tensor) -> torch.Tensor:
            return torch.randn(like.shape, generator=gen).to(like.device, like.dtype)

        t0 = time.perf_counter()
        noise = randn(x_given) if noise is None else noise.to(self.device)
        sigmas = sc.sigmas(self.config.diffusion.sigma_data)
        z = sampling.generate(self.denoise, noise, sigmas, randn=randn, given=x_given if given else None,
                              mask=mask if given else None, callback=callback, conditional=self.conditional,
                              concat=lambda tensors: torch.cat(tensors, 0), **sc.sampling_kwargs(total=not given))
        timings["sample"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        idx = [self.stems.index(s) for s in generate]
        lat = torch.cat([z[:, k * C:(k + 1) * C] for k in idx])  # [len(generate), C, T]
        audio = self.decode(lat)[:, 0, :n_samples]
        timings["decode"] = time.perf_counter() - t0
        return GenerationResult({s: audio[i] for i, s in enumerate(generate)}, z, timings)


def _fit(audio: torch.Tensor, n: int) -> torch.Tensor:
    """Mono `[N]` -> `[1, 1, n]`, zero-padded or trimmed."""
    audio = audio.reshape(-1)[:n].float()
    return torch.nn.functional.pad(audio, (0, n - audio.numel()))[None, None]
