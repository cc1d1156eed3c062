"""What is trained: the SourceVAE (Sec. 2.1 of the MSLDM paper) and the latent denoiser (Sec. 2.2).

A task owns its modules, optimisers, schedulers and random generators and knows one training
step, one validation step, how to export its (EMA) weights as a checkpoint and what media to
log. `msldm.train.loop.train` runs any task.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any

import torch
from torch import nn

from msldm import sampling
from msldm.checkpoint import save_checkpoint
from msldm.config import ModelConfig
from msldm.train.distributed import DistInfo, average_gradients, broadcast_parameters, wrap
from msldm.train.media import log_audio

AMP_DTYPE = torch.bfloat16


def amp_dtype(info: DistInfo, amp: bool) -> torch.dtype | None:
    """bf16 autocast on CUDA when `amp`; full precision on CPU."""
    return AMP_DTYPE if amp and info.device.type == "cuda" else None


class TrainTask:
    """Interface of a trainable task (see the module docstring)."""

    kind: str = ""
    config: ModelConfig
    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, Any]
    generators: dict[str, torch.Generator]
    ema_name: str  # the module whose EMA is exported

    def prepare(self, batch: torch.Tensor) -> torch.Tensor:
        """A data set batch on the task's device, in the shape the model takes."""
        raise NotImplementedError

    def train_step(self, batch: torch.Tensor, step: int) -> dict[str, float]:
        raise NotImplementedError

    def val_step(self, batch: torch.Tensor) -> dict[str, float]:
        raise NotImplementedError

    def export(self, path: Path, ema_module: nn.Module, meta: dict[str, Any]) -> Path:
        raise NotImplementedError

    def log_media(self, writer: Any, step: int, ema_module: nn.Module, batch: torch.Tensor) -> None:
        """Optional TensorBoard audio / images."""


class VAETask(TrainTask):
    """SourceVAE training on single-stem (or mixture, MixLDM) segments, Eq. 1 of the paper.

    Batches `[B, K, N]` become `[B*K, 1, N]`: every stem is one training example (one VAE is
    shared by all stems); rows quieter than `min_rms` are dropped (one row is always kept).
    The discriminator joins after `adversarial_start` steps (mel + KL warm-up before).
    """

    kind = "vae"

    def __init__(self, config: ModelConfig, info: DistInfo, lr: float | None = None,
                 amp: bool = True, adversarial_start: int = 0, min_rms: float = 1e-3):
        from msldm.discriminators import Discriminator
        from msldm.losses import VAEOptimConfig, vae_optimizers
        from msldm.vae_models import build_vae

        self.config, self.info = config, info
        vae = build_vae(config.vae).to(info.device)
        disc = Discriminator(config.vae_loss).to(info.device)
        self.optim_cfg = VAEOptimConfig(lr=lr) if lr else VAEOptimConfig()
        self.opts = vae_optimizers(vae, disc, self.optim_cfg)
        self.modules = {"vae": vae, "disc": disc}
        self.optimizers = {"vae": self.opts.opt_g, "disc": self.opts.opt_d}
        self.schedulers = {"vae": self.opts.sched_g, "disc": self.opts.sched_d}
        self.generators = {}
        self.ema_name = "vae"
        self.vae = wrap(vae, info)
        self.disc = wrap(disc, info, find_unused=True)  # frozen during the generator update
        self.amp, self.adversarial_start, self.min_rms = amp_dtype(info, amp), adversarial_start, min_rms

    def prepare(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.to(self.info.device).reshape(-1, 1, batch.shape[-1])  # [B*K, 1, N]
        rms = x.pow(2).mean(dim=(1, 2)).sqrt()
        keep = rms > self.min_rms
        if not bool(keep.any()):
            keep[rms.argmax()] = True
        return x[keep]

    def train_step(self, batch: torch.Tensor, step: int) -> dict[str, float]:
        from msldm.losses import vae_train_step

        adversarial = step >= self.adversarial_start
        logs = vae_train_step(self.vae, self.disc if adversarial else None, self.opts.opt_g,
                              self.opts.opt_d if adversarial else None, self.prepare(batch),
                              self.config.vae_loss, adversarial=adversarial,
                              optim_cfg=self.optim_cfg, amp_dtype=self.amp)
        self.opts.sched_g.step()
        if adversarial:  # the discriminator's LR decays with its own updates
            self.opts.sched_d.step()
        return logs

    @torch.no_grad()
    def val_step(self, batch: torch.Tensor) -> dict[str, float]:
        from msldm.losses import vae_reconstruction_loss

        vae = self.modules["vae"].eval()
        terms = vae_reconstruction_loss(vae, self.prepare(batch), self.config.vae_loss,
                                        sample_posterior=False)
        vae.train()
        return {k: float(v) for k, v in terms.items()}

    def export(self, path: Path, ema_module: nn.Module, meta: dict[str, Any]) -> Path:
        return save_checkpoint(path, "vae", self.config, ema_module, meta=meta)

    @torch.no_grad()
    def log_media(self, writer: Any, step: int, ema_module: nn.Module, batch: torch.Tensor) -> None:
        x = self.prepare(batch)[:1]  # [1, 1, N]
        recon, _, _ = ema_module.eval()(x)
        sr = self.config.vae.sample_rate
        log_audio(writer, "vae/input", x[0, 0], sr, step)
        log_audio(writer, "vae/reconstruction", recon[0, 0], sr, step)


class SpectralVAETask(VAETask):
    """The spectral SourceVAE (`msldm.spectral_vae`): regression losses, and a discriminator
    where the config's `vae_loss.spectral_adversarial` asks for one.

    Same batches as `VAETask` (`[B, K, N]` -> one example per active stem row). AdamW (lr 6e-4
    by default, betas (0.9, 0.99), weight decay 0.01) with a linear warm-up over `warmup`
    steps, gradient norm clipped at `grad_clip`.

    `freeze_encoder`: train the decoder only. The encoder (and so every latent it makes) stays
    exactly as loaded, so a denoiser trained on its latents keeps working with the new decoder.

    Adversarial (`msldm.spectral_losses.adversarial_terms`): the discriminator (AdamW, `disc_lr`,
    betas (0.8, 0.99) as HiFi-GAN) is updated every step; its terms reach the VAE from step
    `adversarial_start` on, so that a discriminator starting from scratch first learns to tell
    a trained decoder's output from real audio before the decoder follows it.

    Distributed: the loss calls the VAE's methods (encode, decode_spectrum, features), not its
    forward, so DDP's hooks would not fire; the task starts every process from rank 0's weights
    and averages the gradients itself (`average_gradients`) before each optimiser step.
    """

    def __init__(self, config: ModelConfig, info: DistInfo, lr: float | None = None,
                 min_rms: float = 1e-3, warmup: int = 300, grad_clip: float = 10.0,
                 freeze_encoder: bool = False, disc_lr: float = 1e-4, adversarial_start: int = 0):
        from msldm.vae_models import build_vae

        self.config, self.info = config, info
        vae = build_vae(config.vae).to(info.device)
        if freeze_encoder:
            vae.encoder.requires_grad_(False)
        params = [p for p in vae.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=lr or 6e-4, betas=(0.9, 0.99), weight_decay=0.01)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, functools.partial(_warmup, steps=warmup))
        self.modules, self.optimizers, self.schedulers = {"vae": vae}, {"vae": opt}, {"vae": sched}
        self.disc = None
        if config.vae_loss.spectral_adversarial:
            from msldm.discriminators import Discriminator

            self.disc = Discriminator(config.vae_loss).to(info.device)
            self.modules["disc"] = self.disc
            self.optimizers["disc"] = torch.optim.AdamW(self.disc.parameters(), lr=disc_lr,
                                                        betas=(0.8, 0.99), weight_decay=0.01)
        self.generators = {}
        self.ema_name = "vae"
        for m in self.modules.values():
            broadcast_parameters(m, info)
        self.vae = vae
        self.min_rms, self.grad_clip, self.params = min_rms, grad_clip, params
        self.adversarial_start = adversarial_start

    def train_step(self, batch: torch.Tensor, step: int) -> dict[str, float]:
        from msldm.spectral_losses import adversarial_terms, spectral_vae_terms

        opt = self.optimizers["vae"]
        vae = self.modules["vae"].train()
        audio = self.prepare(batch)
        cfg = self.config.vae_loss
        terms, recon = spectral_vae_terms(vae, audio, cfg)
        logs: dict[str, float] = {}
        if self.disc is not None:
            self.disc.train()
            loss_d, adv, feat = adversarial_terms(self.disc, audio, recon)
            opt_d = self.optimizers["disc"]
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            average_gradients(list(self.disc.parameters()), self.info)
            logs["grad_norm_d"] = float(torch.nn.utils.clip_grad_norm_(self.disc.parameters(), self.grad_clip))
            terms.update(disc=loss_d, adv=adv, feat=feat)
            if step >= self.adversarial_start:
                terms["loss"] = (terms["loss"] + cfg.lambda_spectral_adversarial * adv
                                 + cfg.lambda_spectral_feature * feat)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        average_gradients(self.params, self.info)
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        opt.step()
        if self.disc is not None:  # after the VAE's backward, which reads the discriminator's weights
            self.optimizers["disc"].step()
        self.schedulers["vae"].step()
        return {**{k: float(v.detach()) for k, v in terms.items()}, **logs, "grad_norm": float(norm)}

    @torch.no_grad()
    def val_step(self, batch: torch.Tensor) -> dict[str, float]:
        from msldm.spectral_losses import spectral_vae_loss

        vae = self.modules["vae"].eval()
        terms = spectral_vae_loss(vae, self.prepare(batch), self.config.vae_loss, sample_posterior=False)
        vae.train()
        return {k: float(v) for k, v in terms.items()}


def _warmup(step: int, steps: int) -> float:
    """LambdaLR factor: linear from 1/steps to 1 over `steps` steps, then 1."""
    return min(1.0, (step + 1) / max(1, steps))


class DiffusionTask(TrainTask):
    """The EDM-preconditioned denoiser over the joint latent of K stems (Sec. 2.2, Eq. 4).

    Batches of raw latents `[B, K, C, W]` are normalised per channel with `stats`
    (`(z - latent_mean) / latent_std`) and reshaped to `[B, K*C, W]`. Optimiser: AdamW
    (lr 2e-5 as Appendix A.2 by default; betas (0.95, 0.999), eps 1e-6, weight decay 1e-3,
    as MSDM's configuration), gradient norm clipped at `grad_clip`.
    """

    kind = "diffusion"

    def __init__(self, config: ModelConfig, info: DistInfo, stats: dict[str, torch.Tensor],
                 lr: float | None = None, amp: bool = True, seed: int = 0,
                 grad_clip: float = 1.0, vae: nn.Module | None = None, given_prob: float = 0.5,
                 cond_lr: float | None = None, given_noise: float | None = None,
                 given_stems: dict[str, float] | None = None):
        from msldm.edm import EDMDenoiser

        self.config, self.info = config, info
        model = EDMDenoiser(config.diffusion).to(info.device)
        self.model = wrap(model, info)
        groups: list[dict[str, Any]] = [{"params": list(model.parameters())}]
        if cond_lr is not None:
            if model.unet.cond is None:
                raise ValueError(f"a conditioning learning rate needs a conditional preset "
                                 f"(e.g. cpu_given); {config.name!r} has no conditioning input")
            # the conditioning input's own rate: it starts at zero while the rest is trained
            # already (a joint model's weights), the adapter fine-tune of ControlNet's kind
            cond = list(model.unet.cond.parameters())
            ids = {id(p) for p in cond}
            groups = [{"params": [p for p in groups[0]["params"] if id(p) not in ids]},
                      {"params": cond, "lr": cond_lr}]
        opt = torch.optim.AdamW(groups, lr=lr or 2e-5, betas=(0.95, 0.999), eps=1e-6, weight_decay=1e-3)
        self.modules, self.optimizers, self.schedulers = {"denoiser": model}, {"denoiser": opt}, {}
        # On the training device: a CPU generator drawing each step's [B, K*C, W] noise held a GPU
        # run to 3 steps/s with the main process at 100% CPU (H200, 2026-12-04).
        self.generators = {"noise": torch.Generator(device=info.device).manual_seed(seed * 1000 + info.rank)}
        self.ema_name = "denoiser"
        self.stats = {k: v.to(info.device) for k, v in stats.items()}
        self.amp, self.grad_clip, self.vae = amp_dtype(info, amp), grad_clip, vae
        self.given_prob = given_prob  # share of a conditional model's batch rows with a given part
        if given_noise is not None and config.diffusion.conditional:
            raise ValueError("given_noise trains a joint denoiser to read a less noisy given part; "
                             f"{config.name!r} reads it clean through its conditioning input")
        self.given_noise = given_noise  # a joint model's given rows: given part noised r*sigma, r ~ U[given_noise, 1]
        unknown = set(given_stems or {}) - set(config.diffusion.stems)
        if unknown:
            raise ValueError(f"given stem probabilities for {sorted(unknown)}: "
                             f"not among {list(config.diffusion.stems)}")
        # each stem's chance to be given in a row with a given part (default 1/2)
        self.stem_probs = None if not given_stems else [float(given_stems.get(s, 0.5)) for s in config.diffusion.stems]

    def prepare(self, batch: torch.Tensor) -> torch.Tensor:
        z = batch.to(self.info.device)  # [B, K, C, W]
        mean, std = self.stats["latent_mean"], self.stats["latent_std"]
        z = (z - mean[None, None, :, None]) / std[None, None, :, None]
        return z.reshape(z.shape[0], -1, z.shape[-1])  # [B, K*C, W]

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.info.device.type, dtype=self.amp)

    def train_step(self, batch: torch.Tensor, step: int) -> dict[str, float]:
        from msldm.edm import edm_loss

        opt = self.optimizers["denoiser"]
        opt.zero_grad(set_to_none=True)
        with self._autocast():
            loss = edm_loss(self.model, self.prepare(batch), self.generators["noise"], given_prob=self.given_prob,
                            given_noise=self.given_noise, stem_probs=self.stem_probs)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.modules["denoiser"].parameters(), self.grad_clip)
        opt.step()
        return {"loss": float(loss.detach()), "grad_norm": float(norm)}

    @torch.no_grad()
    def val_step(self, batch: torch.Tensor) -> dict[str, float]:
        from msldm.edm import edm_loss

        model, z0 = self.modules["denoiser"], self.prepare(batch)
        d = self.config.diffusion
        with self._autocast():  # the same sigmas and noise at every validation
            none_given = torch.zeros_like(z0) if d.conditional else None
            out = {"loss": float(edm_loss(model, z0, torch.Generator().manual_seed(1234), mask=none_given)),
                   # at one low level, the same whatever the run's training draw: the sampler's
                   # last steps, where a denoiser trained on the paper's uniform draw barely denoises
                   "loss_s0.1": float(edm_loss(model, z0, torch.Generator().manual_seed(1234), mask=none_given,
                                               sigma=0.1))}
            given = [float(s in ("drums", "piano")) for s in d.stems]
            if 0 < sum(given) == 2 < len(given):  # the README's request: the rest given drums and piano
                m = torch.tensor(given, device=z0.device).repeat_interleave(d.latent_dim)[None, :, None]
                out["loss_bg"] = float(edm_loss(model, z0, torch.Generator().manual_seed(1234), mask=m))
                if self.given_noise is not None:  # the given part as imputation would show it, at r0 * sigma
                    out["loss_bg_gn"] = float(edm_loss(model, z0, torch.Generator().manual_seed(1234), mask=m,
                                                       given_noise=self.given_noise))
        return out

    def export(self, path: Path, ema_module: nn.Module, meta: dict[str, Any]) -> Path:
        extra = {k: v.detach().cpu() for k, v in self.stats.items()}
        return save_checkpoint(path, "diffusion", self.config, ema_module, extra=extra, meta=meta)

    @torch.no_grad()
    def log_media(self, writer: Any, step: int, ema_module: nn.Module, batch: torch.Tensor) -> None:
        """One total generation with the config's sampler; decoded if a VAE was given."""
        z = generate_latents(ema_module.eval(), self.config, 1, self.info.device)  # [1, K*C, W]
        writer.add_image("diffusion/latent", _to_image(z[0]), step)
        if self.vae is None:
            return
        K, C = self.config.diffusion.K, self.config.diffusion.latent_dim
        raw = z.reshape(K, C, -1) * self.stats["latent_std"][:, None] + self.stats["latent_mean"][:, None]
        audio = self.vae.decode(raw)[:, 0]  # [K, W*D]
        sr = self.config.vae.sample_rate
        for k, stem in enumerate(self.config.diffusion.stems):
            log_audio(writer, f"diffusion/{stem}", audio[k], sr, step, spectrogram=False)
        log_audio(writer, "diffusion/mixture", audio.sum(0), sr, step)


def generate_latents(model: nn.Module, config: ModelConfig, batch: int,
                     device: torch.device, seed: int = 0) -> torch.Tensor:
    """Total generation of normalised latents `[batch, K*C, window_frames]` (Sec. 2.3)."""
    s, d = config.sampler, config.diffusion
    g = torch.Generator().manual_seed(seed)

    def randn(like: torch.Tensor) -> torch.Tensor:
        return torch.randn(like.shape, generator=g).to(like.device)

    def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
        return model(x, torch.full((x.shape[0],), sigma, device=x.device))

    noise = randn(torch.empty(batch, d.unet.in_channels, d.window_frames)).to(device)
    sigmas = s.sigmas(d.sigma_data)
    return sampling.generate(denoise, noise, sigmas, randn=randn, **s.sampling_kwargs(total=True))


def _to_image(x: torch.Tensor) -> torch.Tensor:
    """`[H, W]` -> `[1, H, W]` in [0, 1] for TensorBoard."""
    x = x.float().cpu()
    return ((x - x.min()) / (x.max() - x.min()).clamp_min(1e-8))[None]
