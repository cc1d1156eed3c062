"""`msldm export`: checkpoints -> model bundle (thin: parse -> options -> `export_bundle`).

Imports nothing heavy at module level (torch / onnx load inside the handler), so `msldm`
starts on a server-only install.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from msldm.config import SamplerConfig

EXAMPLE = """example:
  msldm init --preset tiny --out ckpt/
  msldm export --vae ckpt/vae.safetensors --diffusion ckpt/diffusion.safetensors --out bundles/tiny
  msldm export --vae ckpt/vae.safetensors --diffusion ckpt/diffusion.safetensors --out bundles/tiny16 --fp16
  msldm export --vae ckpt/vae.safetensors --diffusion ckpt/diffusion.safetensors --out bundles/t --sampler S_tmin=0.1
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `export` subcommand."""
    p = subparsers.add_parser("export", help="export checkpoints to an ONNX model bundle "
                              "(checked against PyTorch before it reports success)",
                              epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vae", required=True, type=Path, help="SourceVAE checkpoint (.safetensors)")
    p.add_argument("--diffusion", required=True, type=Path, help="diffusion checkpoint")
    p.add_argument("--out", required=True, type=Path, help="bundle folder to write")
    p.add_argument("--fp16", action="store_true", help="the fp16 variant (norms, softmax, sigma "
                   "embedding and preconditioning stay fp32; IO stays fp32)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--half-storage", choices=["auto", "always", "never"], default="auto",
                   help="store weights as fp16, cast to fp32 at load (auto: above --size-limit-mb)")
    p.add_argument("--size-limit-mb", type=float, default=64.0)
    p.add_argument("--training-data", default=None,
                   help="provenance text for the manifest (default: the checkpoint's meta)")
    p.add_argument("--sampler", action="append", default=[], metavar="FIELD=VALUE",
                   help="set a sampler default in the manifest (repeatable), e.g. --sampler S_tmin=0.1; "
                        f"fields: {', '.join(f.name for f in dataclasses.fields(SamplerConfig))} "
                        "(default: the checkpoint's)")
    p.add_argument("--level-balance", type=Path, default=None, metavar="JSON",
                   help="the balance table of generated stems against given ones (server.levels): a bundle's "
                        "manifest.json that has one (carried over), or a file holding the block itself; "
                        "scripts/level_balance.py measures one (default: none, the decoder's level)")
    p.set_defaults(func=run_export)


def read_level_balance(path: Path | None) -> dict | None:
    """`--level-balance`: the block of a manifest that has one, or the block itself, checked as
    the runtime will check it (against the bundled stems: every bundle has these four)."""
    if path is None:
        return None
    import json

    from msldm.config import STEMS
    from server.levels import LevelBalance

    try:
        data = json.loads(Path(path).read_text())
        block = data.get("level_balance", data) if isinstance(data, dict) else data
        LevelBalance.from_manifest(block, tuple(data.get("stems", STEMS)) if isinstance(data, dict) else STEMS)
    except (OSError, ValueError) as e:
        raise ValueError(f"--level-balance {path}: {e}") from None
    return block


def run_export(args: argparse.Namespace) -> int:
    from export.onnx_export import ExportOptions, export_bundle

    if args.opset < 17:
        raise ValueError("--opset must be 17 or newer")
    from msldm.config import SamplerConfig

    pairs = SamplerConfig.parse_assignments(args.sampler).items()
    opts = ExportOptions(opset=args.opset, fp16=args.fp16, half_storage=args.half_storage,
                         size_limit_mb=args.size_limit_mb, training_data=args.training_data,
                         sampler=tuple(pairs), level_balance=read_level_balance(args.level_balance))
    report = export_bundle(args.vae, args.diffusion, args.out, opts)
    print(report.summary())
    return 0
