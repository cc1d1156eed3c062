"""torch -> model bundle: the three ONNX graphs, the manifest, and the parity check.

`export_bundle(vae_ckpt, diffusion_ckpt, out, ExportOptions())` traces the graph wrappers
of `export.graphs` with the TorchScript exporter (`dynamo=False`: one clean graph per
module with dynamic batch and time axes, node names scoped by module path), removes the
exporter's Identity nodes, checks each graph with `onnx.checker` and the TensorRT operator
allow-list, optionally stores large weights as fp16 (bundles over `size_limit_mb`) or
writes the fp16 variant, writes `manifest.json`, then reloads the bundle with the torch-free
runtime and compares it with PyTorch before it reports success.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from export import fp16 as fp16_mod
from export.graphs import CarryDecoderGraph, GraphModules, build_graph_modules, round_weights_to_half
from export.manifest import CONDITIONAL_DENOISER_IO, GRAPHS, build_manifest, decoder_io, write_manifest
from msldm.hashing import sha256_file
from export.ops import check_tensorrt_ops

MIN_HALF_NUMEL = 1024
"""Initializers with at least this many elements are stored as fp16 in a half-storage bundle."""


@dataclass(frozen=True)
class ExportOptions:
    """How to export. `half_storage`: "auto" (when the fp32 weights exceed `size_limit_mb`),
    "always" or "never". `fp16`: write the fp16 variant (norms, softmax, sigma embedding and
    preconditioning stay fp32). Parity: graphs within `tol_graph` max abs (fp32) on inputs of
    `parity_frames` lengths (rounded up to the U-Net's frame multiple), a partial generation within `tol_generation` relative L2.
    `sampler`: fields of the sampler defaults set at export (chosen by the eval sweep after
    training), e.g. `(("S_tmin", "0.1"),)`; the manifest and the parity run use them."""

    opset: int = 17
    fp16: bool = False
    half_storage: str = "auto"
    size_limit_mb: float = 64.0
    parity_frames: tuple[int, ...] = (8, 24, 40)
    parity_steps: int = 4
    tol_graph: float = 1e-4
    tol_generation: float = 1e-3
    tol_fp16_generation: float = 5e-2
    training_data: str | None = None
    sampler: tuple[tuple[str, str], ...] = ()  # (field, text) overrides of the checkpoint's sampler defaults
    level_balance: dict | None = None  # the manifest's `level_balance` block (server.levels; None: none)


@dataclass
class ExportReport:
    """What `export_bundle` did: operators per graph, file sizes, parity numbers."""

    out: Path
    precision: str
    weights_storage: str
    operators: dict[str, dict[str, int]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"bundle {self.out} ({self.precision}, weights stored {self.weights_storage}, "
                 f"{sum(self.sizes.values()) / 1e6:.2f} MB)"]
        for g in GRAPHS:
            ops = ", ".join(f"{k} {v}" for k, v in sorted(self.operators[g].items()))
            lines.append(f"  {g}: {self.sizes[g] / 1e6:.2f} MB; operators: {ops}")
        lines.append("  parity: " + ", ".join(f"{k} {_fmt(v)}" for k, v in self.parity.items()))
        return "\n".join(lines)


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _graph_specs(modules: GraphModules, K: int, C: int, D: int, T: int) -> dict[str, tuple]:
    """Per graph: (module, example args, input names, output names, dynamic axes)."""
    return {
        "encoder": (modules.encoder, (torch.randn(1, 1, T * D),), ["audio"], ["latent"],
                    {"audio": {0: "B", 2: "N"}, "latent": {0: "B", 2: "T"}}),
        "denoiser": _denoiser_spec(modules, K, C, T),
        "decoder": _decoder_spec(modules, C, T),
    }


def _denoiser_spec(modules: GraphModules, K: int, C: int, T: int) -> tuple:
    axes = {"x": {0: "B", 2: "T"}, "sigma": {0: "B"}, "denoised": {0: "B", 2: "T"}}
    if not modules.edm.cfg.conditional:
        return modules.denoiser, (torch.randn(1, K * C, T), torch.ones(1)), ["x", "sigma"], ["denoised"], axes
    io = CONDITIONAL_DENOISER_IO
    mask = torch.zeros(1, K * C, T)
    mask[:, :C] = 1.0
    return (modules.denoiser, (torch.randn(1, K * C, T), torch.ones(1), torch.randn(1, K * C, T), mask),
            list(io["inputs"]), [io["output"]], dict(axes, given={0: "B", 2: "T"}, mask={0: "B", 2: "T"}))


def _phase_bins(modules: GraphModules) -> int | None:
    """Bins of the decoder's carried phase, or None for a decoder that carries none."""
    return modules.vae.carry_bins if isinstance(modules.decoder, CarryDecoderGraph) else None


def _decoder_spec(modules: GraphModules, C: int, T: int) -> tuple:
    bins = _phase_bins(modules)
    if bins:
        io = decoder_io(bins)
        lat, off = io["inputs"]
        audio, offs = io["outputs"]
        return (modules.decoder, (torch.randn(1, C, T), torch.zeros(1, bins)), [lat, off],
                [audio, offs], {lat: {0: "B", 2: "T"}, off: {0: "B"}, audio: {0: "B", 2: "N"},
                                offs: {0: "B", 2: "T"}})
    return (modules.decoder, (torch.randn(1, C, T),), ["latent"], ["audio"],
            {"latent": {0: "B", 2: "T"}, "audio": {0: "B", 2: "N"}})


def export_graph(module: torch.nn.Module, args: tuple, path: Path, inputs: list[str],
                 outputs: list[str], dynamic_axes: dict, opset: int):
    """Trace one module to ONNX, drop Identity nodes, run onnx.checker; returns the model."""
    import onnx

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript")
        warnings.filterwarnings("ignore", message="The feature will be removed")
        # F.group_norm's batch-size sanity check converts a shape product to bool while
        # tracing; it guards nothing in the graph.
        warnings.filterwarnings("ignore", message="Converting a tensor to a Python boolean")
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset,
                          input_names=inputs, output_names=outputs, dynamic_axes=dynamic_axes,
                          do_constant_folding=True)
    model = onnx.load(str(path))
    fp16_mod.drop_identities(model)
    return model


def _weight_bytes(modules: GraphModules) -> int:
    graphs = (modules.encoder, modules.denoiser, modules.decoder)
    return sum(4 * t.numel() for g in graphs for t in list(g.parameters()) + list(g.buffers()))


def _wants_half(opts: ExportOptions, modules: GraphModules) -> bool:
    if opts.half_storage not in ("auto", "always", "never"):
        raise ValueError("half_storage must be auto, always or never")
    if opts.half_storage == "auto":
        return _weight_bytes(modules) > opts.size_limit_mb * 1e6
    return opts.half_storage == "always"


def write_graphs(modules: GraphModules, out: Path, cfg, opts: ExportOptions,
                 half: bool) -> dict[str, dict[str, int]]:
    """Export, rewrite and save the three graphs into `out`; returns operator counts."""
    import onnx

    K, C, D = cfg.diffusion.K, cfg.vae.latent_dim, cfg.vae.hop
    T = 2 * cfg.diffusion.unet.total_factor
    operators = {}
    for name, (module, args, ins, outs, dyn) in _graph_specs(modules, K, C, D, T).items():
        path = out / f"{name}.onnx"
        model = export_graph(module, args, path, ins, outs, dyn, opts.opset)
        if opts.fp16:
            model = fp16_mod.convert_float16(model)
        elif half:
            fp16_mod.store_initializers_half(model, MIN_HALF_NUMEL)
        onnx.checker.check_model(model, full_check=True)
        operators[name] = dict(check_tensorrt_ops(model, name))
        onnx.save(model, str(path))
    return operators


def _provenance(vae_path: Path, diff_path: Path, meta: dict, training_data: str | None) -> dict:
    data = training_data or meta.get("training_data") or meta.get("provenance") or "unknown"
    return {"training_data": data, "meta": meta,
            "checkpoints": {"vae": {"file": vae_path.name, "sha256": sha256_file(vae_path)},
                            "diffusion": {"file": diff_path.name,
                                          "sha256": sha256_file(diff_path)}}}


def export_bundle(vae_path: str | Path, diffusion_path: str | Path, out: str | Path,
                  opts: ExportOptions = ExportOptions()) -> ExportReport:
    """Write a model bundle to `out` and check it against PyTorch. Raises `ParityError` (and
    removes the half-written bundle) when the reloaded bundle disagrees with PyTorch."""
    from export.parity import check_bundle
    from msldm.checkpoint import load_diffusion, load_vae

    vae_path, diffusion_path, out = Path(vae_path), Path(diffusion_path), Path(out)
    vae, vae_cfg, _ = load_vae(vae_path)
    denoiser, cfg, meta, stats = load_diffusion(diffusion_path)
    if not vae_cfg.vae.same_latents(cfg.vae):
        raise ValueError("the VAE checkpoint does not match the diffusion checkpoint's VAE")
    cfg = dataclasses.replace(cfg, vae=vae_cfg.vae)  # a decoder-only fine-tune: the manifest names its decoder
    if opts.sampler:
        cfg = dataclasses.replace(cfg, sampler=cfg.sampler.with_overrides(dict(opts.sampler)))
    modules = build_graph_modules(load_vae(vae_path)[0], load_diffusion(diffusion_path)[0], stats)
    half = _wants_half(opts, modules) and not opts.fp16
    if half:  # the stored fp16 values are then exactly the torch weights we compare with
        round_weights_to_half(modules, MIN_HALF_NUMEL)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("manifest.json", "manifest.json.failed"):  # never a valid manifest mid-way
        (out / stale).unlink(missing_ok=True)
    operators = write_graphs(modules, out, cfg, opts, half)
    precision = "fp16" if opts.fp16 else "fp32"
    storage = "fp16" if opts.fp16 or half else "fp32"
    manifest = build_manifest(out, cfg, opset=opts.opset, precision=precision,
                              provenance=_provenance(vae_path, diffusion_path, meta,
                                                     opts.training_data),
                              weights_storage=storage,
                              phase_bins=_phase_bins(modules))
    if opts.level_balance is not None:
        manifest["level_balance"] = opts.level_balance
    write_manifest(out, manifest)
    report = ExportReport(out, precision, storage, operators,
                          {g: (out / f"{g}.onnx").stat().st_size for g in GRAPHS})
    try:
        report.parity = check_bundle(out, modules, cfg, opts, originals=(vae, denoiser, stats))
    except Exception:
        # leave the files for inspection, but not as a loadable bundle
        (out / "manifest.json").replace(out / "manifest.json.failed")
        raise
    return report
