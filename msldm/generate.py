"""Library side of `msldm generate`, `msldm init` and `msldm presets`."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from msldm import wavio
from msldm.audio import load_mono
from msldm.checkpoint import identity_stats, save_checkpoint
from msldm.cli_common import seed_or_fresh
from msldm.config import PRESETS, ModelConfig, get_preset
from msldm.edm import EDMDenoiser
from msldm.pipeline import TorchPipeline, validate_request
from msldm.vae_models import build_vae


@dataclass(frozen=True)
class PipelineRequest:
    """What `msldm generate` asks the PyTorch pipeline for (files in, a folder out). Not the
    bridge's `plugin_bridge.client.GenerateRequest`, which is a `generate` message to the daemon.

    `seed` is the one used: `from_cli` resolves "no --seed" to a fresh one (msldm.cli_common)."""

    given: dict[str, str]  # stem -> audio file path
    generate: tuple[str, ...] | None  # None: every stem not given
    duration: float | None  # seconds; None: the given stems' length, else 12 s
    seed: int
    steps: int | None = None
    sampler: str | None = None
    schedule: str | None = None
    resample: int | None = None

    @classmethod
    def from_cli(cls, given: list[str], generate: str | None, duration: float | None, seed: int | None,
                 steps: int | None, sampler: str | None, schedule: str | None = None,
                 resample: int | None = None) -> "PipelineRequest":
        pairs = {}
        for item in given:
            stem, sep, path = item.partition("=")
            if not sep or not stem or not path:
                raise ValueError(f"--given takes STEM=FILE, got {item!r}")
            if stem in pairs:
                raise ValueError(f"stem {stem!r} given twice")
            pairs[stem] = path
        stems = tuple(s.strip() for s in generate.split(",") if s.strip()) if generate else None
        return cls(pairs, stems, duration, seed_or_fresh(seed), steps, sampler, schedule, resample)


def generate_to_folder(vae_path: Path, diffusion_path: Path, req: PipelineRequest, out: Path,
                       device: str = "cpu") -> str:
    """Run one generation and write `<stem>.wav` for every stem (given ones copied at the model
    rate) plus `mixture.wav` and `generation.json` (with the seed used) into `out`. Returns a
    short report that names the seed, so a take can be repeated."""
    t_start = time.perf_counter()
    for stem, path in req.given.items():  # before the minutes of loading, a clear message
        try:
            sf.info(str(path))
        except (OSError, RuntimeError) as e:
            raise ValueError(f"--given {stem}: cannot read {path}: {e}") from None
    pipe = TorchPipeline.from_checkpoints(vae_path, diffusion_path, device)
    sr = pipe.config.vae.sample_rate
    generate = list(req.generate) if req.generate else [s for s in pipe.stems if s not in req.given]
    validate_request(pipe.stems, req.given, generate)
    given = {s: load_mono(p, sr) for s, p in req.given.items()}
    n = _length(given, req.duration, sr)
    sampler = pipe.config.sampler
    if req.steps is not None:
        sampler = dataclasses.replace(sampler, steps=req.steps)
    if req.sampler is not None:
        sampler = dataclasses.replace(sampler, sampler=req.sampler)
    if req.schedule is not None:
        sampler = dataclasses.replace(sampler, schedule=req.schedule)
    if req.resample is not None:
        sampler = dataclasses.replace(sampler, resample=req.resample)
    res = pipe.generate({s: torch.from_numpy(a) for s, a in given.items()}, generate, n,
                        seed=req.seed, sampler=sampler)
    stems = {s: _fit(a, n) for s, a in given.items()}
    stems.update({s: a.cpu().numpy() for s, a in res.stems.items()})
    out.mkdir(parents=True, exist_ok=True)
    for s, a in stems.items():
        wavio.write_wav_atomic(out / f"{s}.wav", a, sr, "32f")
    wavio.write_wav_atomic(out / "mixture.wav", np.sum(list(stems.values()), axis=0).astype(np.float32), sr, "32f")
    total = time.perf_counter() - t_start
    meta = {"given": req.given, "generate": generate, "duration": n / sr, "seed": req.seed,
            "sampler": _json_safe(dataclasses.asdict(sampler)), "model": pipe.config.name,
            "timings_s": {**res.timings, "total": total}}
    wavio.write_json_atomic(out / "generation.json", meta)
    times = ", ".join(f"{k} {v:.2f} s" for k, v in meta["timings_s"].items())
    return (f"wrote {', '.join(sorted(stems))} and mixture ({n / sr:.2f} s at {sr} Hz) to {out}\n"
            f"seed {req.seed} (--seed {req.seed} repeats this take); {times}; "
            f"real-time factor {total / (n / sr):.2f}")


def _json_safe(d: dict) -> dict:
    """Infinite floats (e.g. S_tmax) become null: strict JSON has no Infinity."""
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in d.items()}


def _length(given: dict[str, np.ndarray], duration: float | None, sr: int) -> int:
    """Samples to generate: `duration` seconds, else the longest given stem, else 12 s."""
    if duration is not None:
        if duration <= 0:
            raise ValueError("--duration must be positive")
        return int(round(duration * sr))
    if given:
        return max(len(a) for a in given.values())
    return int(12 * sr)


def _fit(a: np.ndarray, n: int) -> np.ndarray:
    return np.pad(a[:n], (0, max(0, n - len(a)))).astype(np.float32)


def init_random_checkpoints(preset: str, out: Path, seed: int = 0) -> list[Path]:
    """Random-weight `vae.safetensors` and `diffusion.safetensors` of a preset (plumbing and
    timing only: they make noise, not music)."""
    cfg = get_preset(preset)
    torch.manual_seed(seed)
    meta = {"provenance": "random initialisation (untrained)", "seed": seed}
    vae = build_vae(cfg.vae)
    den = EDMDenoiser(cfg.diffusion)
    return [save_checkpoint(out / "vae.safetensors", "vae", cfg, vae, meta=meta),
            save_checkpoint(out / "diffusion.safetensors", "diffusion", cfg, den,
                            extra=identity_stats(cfg.vae.latent_dim), meta=meta)]


def parameter_counts(cfg: ModelConfig) -> dict[str, int]:
    """Parameter counts (built on the meta device: no memory for the big presets)."""
    with torch.device("meta"):
        vae, den = build_vae(cfg.vae), EDMDenoiser(cfg.diffusion)
    count = (lambda m: sum(p.numel() for p in m.parameters()))
    return {"vae_encoder": count(vae.encoder), "vae_decoder": count(vae.decoder),
            "unet": count(den), "total": count(vae) + count(den)}


PAPER_COUNTS = {"paper": "364M (MSLDM)", "paper_large": "1654M (MSLDM-Large)"}


def preset_table() -> str:
    rows = ["| preset | VAE encoder | VAE decoder | U-Net | total | paper |", "|---|---|---|---|---|---|"]
    for name in PRESETS:
        c = parameter_counts(get_preset(name))
        m = {k: f"{v / 1e6:.2f}M" for k, v in c.items()}
        rows.append(f"| {name} | {m['vae_encoder']} | {m['vae_decoder']} | {m['unet']} | "
                    f"{m['total']} | {PAPER_COUNTS.get(name, '')} |")
    return "\n".join(rows)
