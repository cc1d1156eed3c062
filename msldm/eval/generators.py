"""What the harness evaluates: a `Generator` callable, fakes for tests, and the bundle adapter.

A `Generator` is called as
    generator(given, targets, n_samples=N, seed=..., steps=..., sampler=...) -> {stem: audio}
with `given` {stem: float32 [N]} at the model rate (empty for total generation), `targets`
the stems to make; it returns float32 `[N]` per target stem. The harness passes
`seed = base_seed + segment index` (the same seed for every task of a segment).
A generator may also offer `reconstruct(audio [N]) -> [N]` (the VAE round trip).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class Generator(Protocol):
    """Partial / total generation of stems (see the module docstring)."""

    def __call__(self, given: Mapping[str, np.ndarray], targets: Sequence[str], *, n_samples: int,
                 seed: int, steps: int, sampler: str, schedule: str = "karras",
                 resample: int = 1, churn: float | None = None) -> dict[str, np.ndarray]: ...


class SilenceGenerator:
    """Returns silence for every target (every stem should be flagged empty)."""

    def __call__(self, given, targets, *, n_samples, seed, steps, sampler, schedule="karras",  # noqa: D102
                 resample=1, churn=None):
        return {s: np.zeros(n_samples, np.float32) for s in targets}


class OracleGenerator:
    """Returns the real stems of the segment (seed - base_seed indexes `segments`): an upper
    bound; optionally from segment `index + offset` instead (offset != 0: a mismatched one).

    `round_trip` (e.g. a bundle's `reconstruct`): the real stems through it, the bound of any
    denoiser whose stems come out of that decoder (`msldm eval --vae-ceiling`)."""

    rerolls = silent_retries = 0  # it samples nothing (read like a `BundleGenerator`'s)

    def __init__(self, segments: Sequence, base_seed: int = 0, offset: int = 0,
                 round_trip: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.segments, self.base_seed, self.offset = segments, base_seed, offset
        self.round_trip = round_trip

    def __call__(self, given, targets, *, n_samples, seed, steps, sampler, schedule="karras",  # noqa: D102
                 resample=1, churn=None):
        seg = self.segments[(seed - self.base_seed + self.offset) % len(self.segments)]
        n = n_samples
        out = {s: np.pad(seg.stems[s], (0, max(0, n - len(seg.stems[s]))))[:n] for s in targets}
        if self.round_trip is not None:
            out = {s: np.asarray(self.round_trip(a), np.float32)[:n] for s, a in out.items()}
        return out

    def reconstruct(self, audio: np.ndarray) -> np.ndarray:
        """Identity round trip."""
        return np.asarray(audio, np.float32)


class BundleGenerator:
    """The server's ONNX bundle runtime (`server.runtime.Bundle`) as a `Generator`, generating
    exactly as the daemon does (`server.windowing.generate_region`): windows of the bundle's
    length, continuation by imputation in time, crossfades in phase; given stems imposed by
    imputation (total generation: none given); silent windows sampled again as the daemon's
    default does (`silent_retries`, 0: the model's first attempt always). `sampler_fields`:
    {field: text} set on the bundle's sampler defaults (`SamplerConfig.with_overrides`), as if
    its manifest said so. `level`: a request's (`server.levels`: "balance", the daemon's default,
    or "model")."""

    def __init__(self, bundle_dir: str | Path, threads: int = 0, silent_retries: int | None = None,
                 sampler_fields: dict[str, str] | None = None, level: str = "balance") -> None:
        from server.runtime import Bundle  # onnxruntime only, no torch
        from server.windowing import SILENT_RETRIES

        self.bundle = Bundle.load(bundle_dir, threads=threads)
        if sampler_fields:
            self.bundle.sampler_defaults = self.bundle.sampler_defaults.with_overrides(dict(sampler_fields))
        self.silent_retries = SILENT_RETRIES if silent_retries is None else silent_retries
        self.rerolls = 0  # extra samplings of a window for a silent, buried or blown stem, over every call
        self.sample_rate = self.bundle.sample_rate
        self.level = level

    def __call__(self, given, targets, *, n_samples, seed, steps, sampler, schedule="karras",  # noqa: D102
                 resample=1, churn=None):
        from server.windowing import Timings, generate_region

        given = {s: np.asarray(a, np.float32) for s, a in given.items()}
        out = {s: [] for s in targets}
        t = Timings()
        for piece in generate_region(self.bundle, given, list(targets), n_samples, seed=seed, steps=steps,
                                     sampler=sampler, schedule=schedule, resample=resample, churn=churn,
                                     timings=t, silent_retries=self.silent_retries, level=self.level):
            for s in targets:
                out[s].append(piece.stems[s])
        self.rerolls += t.rerolls_total
        return {s: np.concatenate(parts).astype(np.float32) for s, parts in out.items()}

    def reconstruct(self, audio: np.ndarray) -> np.ndarray:
        """decode(encode(audio)) through the bundle's ONNX encoder and decoder."""
        x = np.asarray(audio, np.float32)[None, None]
        return self.bundle.decode(self.bundle.encode(x))[0, 0, : len(audio)].astype(np.float32)


class TorchVAEReconstructor:
    """A SourceVAE checkpoint (torch) as the round trip `reconstruct(audio) -> audio` of the
    evaluation's reconstruction section (`msldm eval --vae`), before any bundle is exported."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import torch

        from msldm.checkpoint import load_vae

        if threads:
            torch.set_num_threads(threads)
        self.vae, self.config, self.meta = load_vae(path)
        self.sample_rate = self.config.vae.sample_rate

    def reconstruct(self, audio: np.ndarray) -> np.ndarray:
        """decode(posterior mean of encode(audio)) `[N]` -> `[N]`."""
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.asarray(audio, np.float32))[None, None]
            mean, _ = self.vae.encode(x)
            return self.vae.decode(mean)[0, 0, : len(audio)].numpy().astype(np.float32)
