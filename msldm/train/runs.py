"""Whole training runs: data set + config + task + loop, one call each (what the CLI calls).

`train_vae` trains the SourceVAE (or, for MixLDM, the MixtureVAE) on audio chunks of a Slakh
folder; `train_diffusion` trains the denoiser(s) on a latents folder made by
`msldm data latents`. Both run under `torchrun` unchanged (DDP, one process per GPU).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from msldm.config import STEMS, ModelConfig
from msldm.data.latents import LatentChunks, ResidentWindows, load_stats
from msldm.data.slakh import MIX, ActivityFilter, ChunkSpec, SlakhChunks
from msldm.train.distributed import DistInfo
from msldm.train.loop import TrainConfig, seed_everything, train
from msldm.train.state import has_train_state
from msldm.train.tasks import DiffusionTask, SpectralVAETask, VAETask


def vae_chunk_spec(config: ModelConfig, seconds: float = 1.0) -> ChunkSpec:
    """Segments of about `seconds` (one second in Appendix A.1), a multiple of D; hop = half."""
    D = config.vae.hop
    frames = max(1, math.ceil(seconds * config.vae.sample_rate / D))
    return ChunkSpec(chunk_len=frames * D, hop=max(1, frames // 2) * D, frame=D)


def _split_or_none(make: Any, root: Path, split: str) -> Dataset | None:
    return make(split) if (root / split).is_dir() else None


def vae_datasets(config: ModelConfig, data: str | Path, seconds: float = 1.0,
                 activity: ActivityFilter = ActivityFilter(min_active=1)
                 ) -> tuple[Dataset, Dataset | None]:
    """(train, validation) chunks `[K, N]` for the VAE; MixLDM (`stems == ("mix",)`) gets the
    mixture `[1, N]`. Default filter: at least one stem active (each stem is one example)."""
    stems = (MIX,) if config.diffusion.stems == (MIX,) else STEMS
    spec = vae_chunk_spec(config, seconds)

    def make(split: str) -> Dataset:
        return SlakhChunks(data, split, spec, stems, config.vae.sample_rate, activity)

    return make("train"), _split_or_none(make, Path(data), "validation")


def train_vae(config: ModelConfig, data: str | Path, cfg: TrainConfig, info: DistInfo, *,
              lr: float | None = None, amp: bool = True, adversarial_start: int = 0,
              seconds: float = 1.0, activity: ActivityFilter = ActivityFilter(min_active=1),
              init: str | Path | None = None, freeze_encoder: bool = False,
              disc_lr: float | None = None) -> list[dict[str, float]]:
    """Train the SourceVAE of `config` on `data`; writes `<out>/vae.safetensors`. `init`: a VAE
    checkpoint of the same config to start from (a warm start when the run state is gone;
    ignored when the run resumes). `freeze_encoder` (spectral VAE only): train the decoder
    alone, so the latents, and a denoiser trained on them, stay valid. `disc_lr`: the learning
    rate of a spectral VAE's discriminator (where its loss config asks for one)."""
    seed_everything(cfg.seed)
    train_set, val_set = vae_datasets(config, data, seconds, activity)
    if config.vae.kind == "spectral":
        task: VAETask = SpectralVAETask(config, info, lr=lr, freeze_encoder=freeze_encoder,
                                        adversarial_start=adversarial_start,
                                        **({} if disc_lr is None else {"disc_lr": disc_lr}))
    elif freeze_encoder:
        raise ValueError("freeze_encoder needs a spectral SourceVAE")
    else:
        task = VAETask(config, info, lr=lr, amp=amp, adversarial_start=adversarial_start)
    if init is not None and not (cfg.resume and has_train_state(Path(cfg.out))):
        from msldm.checkpoint import load_vae
        init_vae, init_cfg, _ = load_vae(init)
        if freeze_encoder and config.vae.encoder_low and not init_cfg.vae.encoder_low:
            raise ValueError(f"{init}: its encoder does not read the low band, and a frozen encoder "
                             f"cannot learn to (train it whole, without freeze_encoder)")
        state = init_vae.state_dict()
        if getattr(task.modules["vae"], "low_bins", 0):
            from msldm.spectral_vae import load_with_new_low_head
            # a new low head starts from the main one; a widened one keeps its trained bins
            load_with_new_low_head(task.modules["vae"], state, init_cfg.vae.low_n_fft)
        else:
            task.modules["vae"].load_state_dict(state)
    cfg = dataclasses.replace(cfg, meta={"data": str(data), **cfg.meta})
    return train(task, train_set, cfg, info, val_set)


def diffusion_config(base: ModelConfig, latents: str | Path) -> ModelConfig:
    """`base` with the SourceVAE config of the latents' VAE (so the checkpoint can be decoded);
    checks that C and the stems match the latents."""
    header = json.loads((Path(latents) / "index.json").read_text())
    if header["latent_dim"] != base.diffusion.latent_dim:
        raise ValueError(f"latents have C = {header['latent_dim']}, the model expects "
                         f"{base.diffusion.latent_dim}")
    missing = [s for s in base.diffusion.stems if s not in header["stems"]]
    if missing:
        raise ValueError(f"latents in {latents} lack stems {missing}")
    if "config" in header:
        vae_cfg = ModelConfig.from_dict(header["config"])
        base = dataclasses.replace(base, vae=vae_cfg.vae, vae_loss=vae_cfg.vae_loss)
    return base


CHUNK_HOP_FRAMES = 64
"""Most frames between the starts of two training windows of the denoiser (0.93 s)."""


def window_hop(window_frames: int) -> int:
    """Frames between the starts of two training windows of the denoiser: half a window or
    `CHUNK_HOP_FRAMES`, whichever is less (a long window over short tracks would otherwise
    always start at a track's first frame)."""
    return max(1, min(window_frames // 2, CHUNK_HOP_FRAMES))


def diffusion_datasets(config: ModelConfig, latents: str | Path,
                       activity: ActivityFilter = ActivityFilter()
                       ) -> tuple[Dataset, Dataset | None]:
    """(train, validation) latent windows `[K, C, window_frames]`, starting every `window_hop`."""
    W = config.diffusion.window_frames
    hop = window_hop(W)

    def make(split: str) -> Dataset:
        return LatentChunks(latents, split, W, hop, config.diffusion.stems, activity)

    header = json.loads((Path(latents) / "index.json").read_text())
    val = make("validation") if "validation" in header["splits"] else None
    return make("train"), val


WARM_START_NEW = ("unet.cond.", "unet.filters.")
"""Modules a warm start may find missing: each adds zero at construction (a conditional U-Net's
conditioning convolution, `UNetConfig.channel_filters`), so the model computes the loaded one's
function until they learn."""


def warm_start_conditional(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load `state` into `model`, strictly, except that a U-Net may start from one without
    the modules of `WARM_START_NEW` (a conditional U-Net from a joint one, one with channel
    filters from one without): those are then the only things missing."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith(WARM_START_NEW) for k in missing):
        model.load_state_dict(state)  # strict: raises with PyTorch's own listing


def train_diffusion(config: ModelConfig, latents: str | Path, cfg: TrainConfig, info: DistInfo,
                    *, lr: float | None = None, amp: bool = True, vae_path: str | None = None,
                    activity: ActivityFilter = ActivityFilter(),
                    init: str | Path | None = None,
                    resident: bool | None = None, given_prob: float = 0.5,
                    cond_lr: float | None = None, given_noise: float | None = None,
                    given_stems: dict[str, float] | None = None) -> list[dict[str, float]]:
    """Train the denoiser of `config` on `latents`; writes `<out>/diffusion.safetensors` with
    the latents' per-channel statistics (`latent_mean`, `latent_std`). `init`: a diffusion
    checkpoint of the same U-Net to start from (a warm start when the run state is gone;
    ignored when the run resumes; a joint U-Net's weights start a conditional one of the same
    size, `warm_start_conditional`). `resident`: hold the windows on the training device
    (`ResidentWindows`; default: on a GPU). The batches, and so the run, are the same.
    `given_prob`: the share of a conditional model's rows trained with a given part; `cond_lr`:
    the learning rate of its conditioning input (default `lr`). `given_noise` r0: a joint model's
    rows (share `given_prob`) get a given part noised at r * sigma, r ~ U[r0, 1]
    (`msldm.edm.edm_loss`); `given_stems` {stem: p}: a stem's chance to be given in such a row
    (default 1/2); both recorded in the checkpoint's meta."""
    config = diffusion_config(config, latents)
    seed_everything(cfg.seed)
    train_set, val_set = diffusion_datasets(config, latents, activity)
    if resident if resident is not None else info.device.type == "cuda":
        train_set = ResidentWindows(train_set, info.device)
        val_set = ResidentWindows(val_set, info.device) if val_set is not None else None
    vae = None
    if vae_path and cfg.media_every:
        from msldm.checkpoint import load_vae
        vae = load_vae(vae_path, info.device)[0]
    task = DiffusionTask(config, info, load_stats(latents), lr=lr, amp=amp, seed=cfg.seed, vae=vae,
                         given_prob=given_prob, cond_lr=cond_lr, given_noise=given_noise, given_stems=given_stems)
    if init is not None and not (cfg.resume and has_train_state(Path(cfg.out))):
        from msldm.checkpoint import load_diffusion
        warm_start_conditional(task.modules["denoiser"], load_diffusion(init)[0].state_dict())
    meta = {"latents": str(latents), "vae_checkpoint": vae_path, **cfg.meta}
    if given_noise is not None:
        meta.update(given_noise=given_noise, given_prob=given_prob)
    if given_stems:
        meta.update(given_stems=dict(given_stems))
    return train(task, train_set, dataclasses.replace(cfg, meta=meta), info, val_set)

