"""Parity of a bundle (run by the torch-free runtime, `server.runtime.Bundle`) with PyTorch.

- `graph_errors`: max abs difference of each graph's output on random inputs of several
  lengths (the denoiser at several sigma).
- `generation_error`: a whole partial generation (2 given stems encoded, the rest sampled
  with churn and imputation, then decoded) driven by ONE numpy Generator on both sides:
  the same initial noise and the same sequence of churn / imputation draws.
- `check_bundle`: both, with the tolerances of `ExportOptions`; raises `ParityError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from msldm import sampling
from msldm.config import ModelConfig
from msldm.pipeline import TorchPipeline

PARITY_SIGMAS = (0.02, 0.5, 3.0)
TOL_PHASE = 1e-2
"""Radians: the largest difference allowed between the phase offsets of the two decoders."""


class ParityError(AssertionError):
    """The exported bundle disagrees with PyTorch beyond the tolerance."""


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / ||b||."""
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def load_cpu_bundle(root: str | Path):
    """The runtime's `Bundle` on the CPU provider (the reference provider for parity)."""
    from server.runtime import Bundle
    return Bundle.load(root, providers=["CPUExecutionProvider"])


def _tensor(a: np.ndarray | None) -> torch.Tensor | None:
    return None if a is None else torch.from_numpy(a)


@torch.no_grad()
def graph_errors(bundle, pipe: TorchPipeline, frames: tuple[int, ...], seed: int = 0
                 ) -> dict[str, float]:
    """Max abs error per graph over inputs of `frames` latent lengths (batch of 2)."""
    rng = np.random.default_rng(seed)
    K, C, D = bundle.K, bundle.C, bundle.D
    err = {"encoder": 0.0, "denoiser": 0.0, "decoder": 0.0}
    for T in frames:
        audio = (0.3 * rng.standard_normal((2, 1, T * D))).astype(np.float32)
        ref = pipe.encode(torch.from_numpy(audio)).numpy()
        err["encoder"] = max(err["encoder"], float(np.abs(bundle.encode(audio) - ref).max()))
        x = rng.standard_normal((2, K * C, T)).astype(np.float32)
        cond = [(None, None)]
        if bundle.conditional:  # a given part too: stem 0 and the first half of stem 1's frames
            mask = np.zeros_like(x)
            mask[:, :C] = 1.0
            mask[:, C:2 * C, :T // 2] = 1.0
            cond.append((rng.standard_normal(x.shape).astype(np.float32) * mask, mask))
        for sigma in PARITY_SIGMAS:
            xs = x * np.float32(max(sigma, 1.0))
            for g, m in cond:
                ref = pipe.denoise(torch.from_numpy(xs), sigma, _tensor(g), _tensor(m)).numpy()
                err["denoiser"] = max(err["denoiser"], float(np.abs(bundle.denoise(xs, sigma, g, m) - ref).max()))
        z = rng.standard_normal((2, C, T)).astype(np.float32)
        ref = pipe.decode(torch.from_numpy(z)).numpy()
        err["decoder"] = max(err["decoder"], float(np.abs(bundle.decode(z) - ref).max()))
        if bundle.phase_bins:  # a carried phase offset: the audio and the offsets it returns
            off = rng.uniform(0, 2 * np.pi, (2, bundle.phase_bins)).astype(np.float32)
            zt = torch.from_numpy(z) * pipe.std + pipe.mean
            ref_audio, ref_off = (t.numpy() for t in pipe.vae.decode_carry(zt, torch.from_numpy(off)))
            audio, offsets = bundle.decode_carry(z, off)
            err["decoder"] = max(err["decoder"], float(np.abs(audio - ref_audio).max()))
            wrapped = np.abs(np.angle(np.exp(1j * (offsets - ref_off))))  # offsets wrap at 2 pi
            err["decoder_phase"] = max(err.get("decoder_phase", 0.0), float(wrapped.max()))
    return err


def _torch_generate(pipe: TorchPipeline, given: torch.Tensor, mask: torch.Tensor,
                    sigmas: list[float], rng: np.random.Generator) -> torch.Tensor:
    """The PyTorch side of a partial generation, its randomness drawn from `rng` in the same
    order as `Bundle.generate` draws it (initial noise first, then the sampler's draws)."""
    sc = pipe.config.sampler

    def randn(like: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(rng.standard_normal(tuple(like.shape), dtype=np.float32))

    noise = torch.from_numpy(rng.standard_normal(tuple(given.shape), dtype=np.float32))
    return sampling.generate(pipe.denoise, noise, sigmas, randn=randn, given=given, mask=mask,
                             conditional=pipe.conditional, **sc.sampling_kwargs())


@torch.no_grad()
def generation_error(bundle, pipe: TorchPipeline, T: int, steps: int, seed: int = 0,
                     n_given: int = 2) -> dict[str, float]:
    """Relative L2 of a whole partial generation: the sampled latent and the decoded stems."""
    K, C, D = bundle.K, bundle.C, bundle.D
    rng = np.random.default_rng(seed)
    given_names, make = bundle.stems[:n_given], list(bundle.stems[n_given:])
    z_np = np.zeros((1, K * C, T), np.float32)
    z_pt = torch.zeros(1, K * C, T)
    for name in given_names:
        k = bundle.stems.index(name)
        audio = (0.3 * rng.standard_normal((1, 1, T * D))).astype(np.float32)
        z_np[:, k * C:(k + 1) * C] = bundle.encode(audio)
        z_pt[:, k * C:(k + 1) * C] = pipe.encode(torch.from_numpy(audio))
    mask = bundle.stem_mask(given_names, T)
    sigmas = bundle.sigmas(steps)
    lat_np = bundle.generate(z_np.shape, seed=0, steps=steps, given=z_np, mask=mask,
                             rng=np.random.default_rng(seed + 1))
    lat_pt = _torch_generate(pipe, z_pt, torch.from_numpy(mask), sigmas,
                             np.random.default_rng(seed + 1))
    idx = [bundle.stems.index(s) for s in make]
    gen_np = np.concatenate([lat_np[:, k * C:(k + 1) * C] for k in idx])  # [len(make), C, T]
    gen_pt = torch.cat([lat_pt[:, k * C:(k + 1) * C] for k in idx])
    return {"latent_rel_l2": rel_l2(lat_np, lat_pt.numpy()),
            "audio_rel_l2": rel_l2(bundle.decode(gen_np), pipe.decode(gen_pt).numpy())}


def check_bundle(root: Path, modules, cfg: ModelConfig, opts, originals=None) -> dict[str, Any]:
    """Compare the bundle in `root` with the PyTorch pipeline over the exported weights
    (`modules`, see `export.graphs.GraphModules`); raise `ParityError` beyond tolerance.

    With `originals` = (vae, denoiser, stats) of the checkpoints and a bundle whose weights
    were rounded for fp16 storage, the generation error against the unrounded checkpoints is
    reported too (information only). Returns the numbers."""
    bundle = load_cpu_bundle(root)
    pipe = TorchPipeline(modules.vae, modules.edm, cfg, modules.stats)
    res: dict[str, Any] = {"providers": sorted(set(bundle.providers.values()))}
    m = bundle.frame_multiple
    frames = tuple(sorted({max(m, -(-t // m) * m) for t in opts.parity_frames}))
    errs = graph_errors(bundle, pipe, frames)
    res.update({f"{g}_max_abs": v for g, v in errs.items()})
    T = max(frames)
    gen = generation_error(bundle, pipe, T, opts.parity_steps)
    res.update({f"generation_{k}": v for k, v in gen.items()})
    rounded = bundle.manifest.get("weights_storage") == "fp16" and not opts.fp16
    if originals is not None and rounded:
        ref = TorchPipeline(originals[0], originals[1], cfg, originals[2])
        orig = generation_error(bundle, ref, T, opts.parity_steps)
        res.update({f"vs_unrounded_{k}": v for k, v in orig.items()})
    _enforce(res, opts)
    return res


def _enforce(res: dict[str, Any], opts) -> None:
    if opts.fp16:
        if res["generation_audio_rel_l2"] > opts.tol_fp16_generation:
            raise ParityError(f"fp16 bundle: generation rel L2 {res['generation_audio_rel_l2']:.3g}"
                              f" > {opts.tol_fp16_generation}")
        return
    bad = {g: res[f"{g}_max_abs"] for g in ("encoder", "denoiser", "decoder")
           if not res[f"{g}_max_abs"] <= opts.tol_graph}
    if bad:
        raise ParityError(f"graph max abs error above {opts.tol_graph}: {bad}")
    if not res.get("decoder_phase_max_abs", 0.0) <= TOL_PHASE:
        raise ParityError(f"decoder phase offsets differ by {res['decoder_phase_max_abs']:.3g} rad > {TOL_PHASE}")
    worst = max(res["generation_latent_rel_l2"], res["generation_audio_rel_l2"])
    if not worst <= opts.tol_generation:
        raise ParityError(f"partial generation rel L2 {worst:.3g} > {opts.tol_generation}")


def jitter_zero_weights(module: torch.nn.Module, std: float = 0.02, seed: int = 0) -> int:
    """Fill the parameters initialised to exactly zero (the U-Net's last convs of each block,
    the attention output, the VAE biases) with small random values, in place, so that parity
    tests of random-weight models exercise every path. Returns the number filled."""
    g = torch.Generator().manual_seed(seed)
    n = 0
    with torch.no_grad():
        for p in module.parameters():
            if p.numel() and not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * std)
                n += 1
    return n


def random_checkpoints(preset: str, out: Path, seed: int = 0) -> tuple[Path, Path]:
    """Random-weight (vae, diffusion) checkpoints of a preset with every weight non-zero
    (`init_random_checkpoints` + `jitter_zero_weights`) and random latent statistics: for
    parity tests and timing."""
    from msldm.checkpoint import load_diffusion, load_vae, save_checkpoint
    from msldm.generate import init_random_checkpoints

    vae_path, diff_path = init_random_checkpoints(preset, Path(out), seed)
    vae, cfg, meta = load_vae(vae_path)
    den, cfg, meta, stats = load_diffusion(diff_path)
    jitter_zero_weights(vae, seed=seed + 1)
    jitter_zero_weights(den, seed=seed + 2)
    g = torch.Generator().manual_seed(seed + 3)
    C = cfg.vae.latent_dim  # non-trivial latent statistics, so their folding is exercised
    stats = {"latent_mean": 0.1 * torch.randn(C, generator=g),
             "latent_std": 0.5 + torch.rand(C, generator=g)}
    meta = {**meta, "provenance": "random initialisation, zero-initialised weights jittered"}
    save_checkpoint(vae_path, "vae", cfg, vae, meta=meta)
    save_checkpoint(diff_path, "diffusion", cfg, den, extra=stats, meta=meta)
    return vae_path, diff_path
