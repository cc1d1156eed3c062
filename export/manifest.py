"""The bundle manifest (`manifest.json`): writing it, and checking a bundle against it.

Fields follow the bundle contract (`docs/bundle.md`); the runtime's `server.runtime.read_manifest`
is the one check of it, and `verify_bundle` calls it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from msldm.config import ModelConfig
from msldm.hashing import sha256_file

FORMAT_VERSION = 1
GRAPHS = ("encoder", "denoiser", "decoder")
IO = {"encoder": {"input": "audio", "output": "latent"},
      "denoiser": {"inputs": ["x", "sigma"], "output": "denoised"},
      "decoder": {"input": "latent", "output": "audio"}}
"""Graph input / output names (the contract); a phase-carrying decoder's are `decoder_io`,
a conditional denoiser's `CONDITIONAL_DENOISER_IO`."""
CONDITIONAL_DENOISER_IO = {"inputs": ["x", "sigma", "given", "mask"], "output": "denoised"}
"""Given-stem conditioning: `given` (the given latents, zero elsewhere) and `mask` (0/1), both
`[B, K*C, T]` like `x`."""


def decoder_io(bins: int) -> dict[str, Any]:
    """The io entry of a decoder that carries phase across windows (`CarryDecoderGraph`):
    `phase_offset [B, bins]` in, `phase_offsets [B, bins, T]` out (radians, in [0, 2 pi))."""
    return {"inputs": ["latent", "phase_offset"], "outputs": ["audio", "phase_offsets"], "phase_bins": bins}


class ManifestError(ValueError):
    """A bundle whose files do not match its manifest."""


def sampler_block(config: ModelConfig) -> dict[str, Any]:
    """The sampler defaults as strict JSON (an infinite S_tmax becomes null)."""
    d = dataclasses.asdict(config.sampler)
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def build_manifest(root: Path, config: ModelConfig, *, opset: int, precision: str,
                   provenance: dict[str, Any], weights_storage: str = "fp32",
                   phase_bins: int | None = None) -> dict[str, Any]:
    """The manifest of the bundle in `root` (the three .onnx files must already be there);
    `phase_bins`: the decoder carries phase (`decoder_io`)."""
    diff = config.diffusion
    files = {g: {"path": f"{g}.onnx", "sha256": sha256_file(root / f"{g}.onnx"),
                 "bytes": (root / f"{g}.onnx").stat().st_size} for g in GRAPHS}
    return {
        "format_version": FORMAT_VERSION, "model_name": config.name,
        "sample_rate": config.vae.sample_rate, "hop": config.vae.hop,
        "latent_dim": diff.latent_dim, "stems": list(diff.stems), "sigma_data": diff.sigma_data,
        "window_frames": diff.window_frames, "frame_multiple": diff.unet.total_factor,
        "opset": opset, "precision": precision, "weights_storage": weights_storage,
        "sampler": sampler_block(config), "files": files,
        "io": dict(IO, **({"decoder": decoder_io(phase_bins)} if phase_bins else {}),
                   **({"denoiser": CONDITIONAL_DENOISER_IO} if diff.conditional else {})),
        "provenance": {"config": _json_safe(config.to_dict()), **provenance},
    }


def write_manifest(root: Path, manifest: dict[str, Any]) -> Path:
    """Write `root/manifest.json` (strict JSON, indented)."""
    from msldm.atomic import atomic_write_text

    path = Path(root) / "manifest.json"  # written last and atomically: it marks the bundle loadable
    atomic_write_text(path, json.dumps(manifest, indent=2, allow_nan=False) + "\n")
    return path


def verify_bundle(root: str | Path) -> dict[str, Any]:
    """Check a bundle exactly as the runtime will (`server.runtime.read_manifest`: format
    version, required fields, the sampler block, every file's sha256); returns the manifest."""
    from server.runtime import BundleError, read_manifest, sampler_defaults

    try:
        m = read_manifest(Path(root))
        sampler_defaults(m["sampler"])
    except BundleError as e:
        raise ManifestError(str(e)) from None
    return m
