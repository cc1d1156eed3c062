"""How much noise does a denoiser take out, level by level? The noise power left when real latents,
noised to a fixed sigma, are denoised once: (D(z + sigma n) - z)^2 over (sigma n)^2, 1 = none taken
out. Beside each checkpoint, a [1, 2, 1] / 4 moving average in time of the noised latents, the
least a denoiser should beat at low levels.

    python scripts/denoise_check.py --latents ~/.cache/msldm/data/multi-latents-v2 \\
        ~/.cache/msldm/runs/v2-step11442.safetensors msldm/assets/cpu/diffusion.safetensors

On 2026-12-05 the U-Net trained with sigma ~ U(0, 3) left 0.90 of the noise at sigma 0.1 and 0.46 at
0.3 (the moving average 0.54 and 0.40); with per-channel filters and the mixed draw 0.58 and 0.21
(docs/eval/model-history.md, "Eleventh session"). Windows: `--n` tracks of the split, `--frames` latent
frames from frame `--start` of each, the checkpoint's own normalisation; the noise is seeded.
The moving average is scored once, in the first checkpoint's normalisation.

`--sample` (repeatable, a comma-separated FIELD=VALUE list of sampler fields, "" for the
checkpoint's own) also samples the `--generate` stems of the same windows given the rest, with
the checkpoint's sampler and those fields changed, and prints per generated stem the latent energy
against the real latents' and, decoded with `--vae`, the median level against the real stem's
(over windows whose real stem is above -45 dBFS; generated stems under -50 dBFS are counted as
empty instead):

    python scripts/denoise_check.py --latents ~/.cache/msldm/data/multi-latents-v2 \
        --vae msldm/assets/vae-spectral/vae.safetensors --sample S_churn=0 --sample S_churn=2,S_tmax=1 \
        --sample S_churn=20,S_tmax=inf msldm/assets/cpu/diffusion.safetensors

On 2026-12-05 the latent energy of the shipped denoiser's guitars was the real one's at churn 0
and grew with churn (the table "The level came from the churn" in docs/eval/model-history.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from msldm.checkpoint import load_diffusion, load_vae
from msldm.config import SamplerConfig


def windows(latents: Path, split: str, n: int, start: int, frames: int) -> torch.Tensor:
    """Raw latents `[n, K, C, frames]` of the first `n` tracks of `split` that are long enough."""
    out = []
    for f in sorted((latents / split).glob("*.npy")):
        if f.name.endswith(".rms.npy"):
            continue
        z = np.load(f, mmap_mode="r")
        if z.shape[-1] >= start + frames:
            out.append(torch.from_numpy(np.array(z[:, :, start:start + frames], dtype=np.float32)))
        if len(out) == n:
            break
    if not out:
        raise SystemExit(f"no track of {latents / split} has {start + frames} frames")
    return torch.stack(out)


def noise_left(model, zn: torch.Tensor, sigma: float, seed: int) -> tuple[float, float]:
    """(denoiser, moving average): the noise power left at `sigma` on normalised `zn` `[B, K*C, T]`."""
    n = torch.randn(zn.shape, generator=torch.Generator().manual_seed(seed)) * sigma
    with torch.no_grad():
        d = model(zn + n, torch.full((zn.shape[0],), float(sigma)))
    x = torch.nn.functional.pad(zn + n, (1, 1), mode="replicate")
    avg = 0.25 * x[..., :-2] + 0.5 * x[..., 1:-1] + 0.25 * x[..., 2:]
    power = float((n ** 2).mean())
    return float(((d - zn) ** 2).mean()) / power, float(((avg - zn) ** 2).mean()) / power


def _db(audio: np.ndarray) -> np.ndarray:
    """RMS level in dBFS of each row of `[B, N]`."""
    return 10.0 * np.log10(np.mean(audio.astype(np.float64) ** 2, axis=-1) + 1e-12)


def real_levels(vae, raw: torch.Tensor, stems: tuple[str, ...], generate: list[str]) -> dict[str, np.ndarray]:
    """Decoded level (dBFS) of each real `generate` stem of the raw windows `[B, K, C, T]`: once,
    for every checkpoint and sampler setting."""
    with torch.no_grad():
        return {name: _db(vae.decode(raw[:, stems.index(name)]).numpy()[:, 0]) for name in generate}


def sample_levels(model, stats: dict, vae, raw: torch.Tensor, config, stems: tuple[str, ...],
                  generate: list[str], fields: dict[str, str], seed: int,
                  reals: dict[str, np.ndarray]) -> list[str]:
    """Partial generation of `generate` given the other stems of the raw windows `[B, K, C, T]`
    with the checkpoint's sampler `config` changed by `fields`; one line per generated stem:
    latent energy against the real one, and the decoded level against the real stem's (`reals`,
    from `real_levels`)."""
    from msldm import sampling

    sc = config.sampler.with_overrides(fields)
    B, K, C, T = raw.shape
    mean, std = stats["latent_mean"].view(1, 1, C, 1), stats["latent_std"].view(1, 1, C, 1)
    zn = ((raw - mean) / std).reshape(B, K * C, T)
    keep = torch.tensor([0.0 if s in generate else 1.0 for s in stems]).repeat_interleave(C)[None, :, None]
    gen = torch.Generator().manual_seed(seed)

    def randn(like: torch.Tensor) -> torch.Tensor:
        return torch.randn(like.shape, generator=gen)

    def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
        with torch.no_grad():
            return model(x, torch.full((x.shape[0],), float(sigma)))

    out = sampling.generate(denoise, randn(zn), sc.sigmas(config.diffusion.sigma_data), randn=randn,
                            given=zn, mask=keep.expand_as(zn), **sc.sampling_kwargs()).view(B, K, C, T)
    lines = []
    for name in generate:
        k = stems.index(name)
        real = reals[name]
        with torch.no_grad():
            made = _db(vae.decode(out[:, k] * std[0] + mean[0]).numpy()[:, 0])
        judged = real > -45.0
        sounding = judged & (made > -50.0)
        level = f"{np.median(made[sounding] - real[sounding]):+.1f} dB" if sounding.any() else "-"
        energy = float(out[:, k].pow(2).mean()) / float(zn.view(B, K, C, T)[:, k].pow(2).mean())
        lines.append(f"{name}: level vs real {level}, empty {int((judged & ~sounding).sum())} of "
                     f"{int(judged.sum())}, latent energy x{energy:.2f} of the real")
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="diffusion checkpoints (safetensors)")
    p.add_argument("--latents", type=Path, required=True, help="a `msldm data latents` folder")
    p.add_argument("--split", default="validation")
    p.add_argument("--n", type=int, default=16, help="tracks, one window each")
    p.add_argument("--start", type=int, default=100, help="first latent frame of each window")
    p.add_argument("--frames", type=int, default=256)
    p.add_argument("--sigmas", default="0.03,0.1,0.3,1.0")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--sample", action="append", default=[], metavar="FIELD=VALUE,...",
                   help="also sample with the checkpoint's sampler, these fields changed (repeatable; '' for none)")
    p.add_argument("--vae", type=Path, default=None, help="the SourceVAE that decodes --sample's stems")
    p.add_argument("--generate", default="bass,guitar", help="--sample's generated stems (the rest given)")
    args = p.parse_args(argv)
    if args.sample and args.vae is None:
        p.error("--sample needs --vae (the SourceVAE of the latents)")
    try:  # every setting checked before any model is loaded
        settings = [SamplerConfig.parse_assignments([f for f in spec.split(",") if f.strip()]) for spec in args.sample]
        for fields in settings:
            SamplerConfig().with_overrides(fields)
    except ValueError as exc:
        p.error(f"--sample: {exc}")
    sigmas = [float(s) for s in args.sigmas.split(",")]
    raw = windows(args.latents.expanduser(), args.split, args.n, args.start, args.frames)
    B, K, C, T = raw.shape
    print(f"{B} windows of {T} frames from {args.latents / args.split}; noise power left after one call:")
    print("checkpoint | " + " | ".join(f"sigma {s}" for s in sigmas))
    baseline = None
    vae = load_vae(args.vae.expanduser())[0] if args.sample else None
    reals: dict[str, np.ndarray] | None = None
    for ckpt in args.checkpoints:
        model, config, _, stats = load_diffusion(Path(ckpt).expanduser())
        if model.cfg.latent_dim != C or model.cfg.K != K:
            raise SystemExit(f"{ckpt}: a model of {model.cfg.K} x {model.cfg.latent_dim} channels, "
                             f"the latents have {K} x {C}")
        zn = ((raw - stats["latent_mean"].view(1, 1, C, 1)) / stats["latent_std"].view(1, 1, C, 1)).reshape(B, K * C, T)
        rows = [noise_left(model, zn, s, args.seed + i) for i, s in enumerate(sigmas)]
        print(f"{Path(ckpt).name} | " + " | ".join(f"{d:.3f}" for d, _ in rows))
        baseline = baseline or rows
        stems = model.cfg.stems
        generate = [g.strip() for g in args.generate.split(",") if g.strip()]
        if args.sample and (not generate or any(g not in stems for g in generate) or len(generate) == len(stems)):
            raise SystemExit(f"--generate {args.generate!r}: name some, not all, of {', '.join(stems)}")
        if args.sample and reals is None:
            reals = real_levels(vae, raw, stems, generate)
        for spec, fields in zip(args.sample, settings):
            print(f"  sampled, {spec or 'its own sampler'}:")
            for line in sample_levels(model, stats, vae, raw, config, stems, generate, fields, args.seed, reals):
                print(f"    {line}")
    print("[1, 2, 1] / 4 moving average | " + " | ".join(f"{a:.3f}" for _, a in baseline))


if __name__ == "__main__":
    main()
