"""`msldm eval`: evaluate a model bundle on a data set and write a report.

Example:
    msldm eval --bundle bundles/small --data data/synth --out reports/small \\
        --n 200 --steps 5,10,20 --seconds 12 --subsets all
"""

from __future__ import annotations

import argparse
from typing import Any

from typing import TYPE_CHECKING

from msldm.eval.tables import parse_subsets

if TYPE_CHECKING:  # imported by the handlers: scipy and the metrics stay out of `msldm`'s start-up
    from msldm.eval.pipeline import EvalConfig

EXAMPLE = ("example: msldm eval --bundle bundles/small --data data/synth --out reports/small "
           "--n 200 --steps 5,10,20 --seconds 12 --subsets all")


def register(subparsers: Any) -> None:
    """Add the `eval` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser("eval", help="evaluate a model bundle (FAD, fit, density, sweep)",
                              description=__doc__, epilog=EXAMPLE,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True, help="model bundle folder (manifest.json + ONNX files)")
    p.add_argument("--data", required=True, help="data root (with test/) or a folder of TrackNNNNN")
    p.add_argument("--out", required=True, help="report folder to write")
    p.add_argument("--n", type=int, default=200, help="number of segments (paper: 200)")
    p.add_argument("--seconds", type=float, default=12.0, help="segment length (paper: 12 s)")
    p.add_argument("--steps", default="5,10,20",
                   help="sampler steps of the sweep; the main run uses the last value")
    p.add_argument("--samplers", default="euler,heun", help="samplers of the sweep")
    p.add_argument("--sampler", default="euler", help="sampler of the main run")
    p.add_argument("--schedules", default="karras",
                   help="noise schedules of the sweep (karras, melody: few-step after MeLoDy)")
    p.add_argument("--schedule", default="karras", help="noise schedule of the main run")
    p.add_argument("--resamples", default="1", help="takes per step of the sweep, e.g. 1,3 (RePaint resampling)")
    p.add_argument("--resample", type=int, default=1, help="takes per step of the main run")
    p.add_argument("--subsets", default="all", help="all | partial | comma list like B,DG,BDGP")
    p.add_argument("--split", default="test")
    p.add_argument("--sweep-n", type=int, default=8, help="segments per sweep point (0: no sweep)")
    p.add_argument("--embedding", default="stats", help="stats (built-in) | vggish")
    p.add_argument("--embedding-weights", default=None, help="VGGish ONNX file for --embedding vggish")
    p.add_argument("--no-annotation", action="store_true",
                   help="estimate chords and grid from the given stems even when annotated")
    p.add_argument("--baseline", action="append", default=[], metavar="NAME=METRICS_JSON",
                   help="another run's metrics.json as a row of the sub-FAD table (repeatable)")
    p.add_argument("--name", default=None, help="model name in the report (default: bundle folder)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run)


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    """EvalConfig of the parsed arguments."""
    from msldm.eval.pipeline import EvalConfig

    steps = tuple(int(s) for s in args.steps.split(",") if s.strip())
    return EvalConfig(n=args.n, seconds=args.seconds, subsets=tuple(parse_subsets(args.subsets)),
                      steps=steps[-1], sampler=args.sampler, schedule=args.schedule, resample=args.resample,
                      sweep_steps=steps, sweep_samplers=_names(args.samplers),
                      sweep_schedules=_names(args.schedules),
                      sweep_resamples=tuple(int(r) for r in _names(args.resamples)),
                      sweep_n=args.sweep_n, embedding=args.embedding,
                      embedding_weights=args.embedding_weights, seed=args.seed, split=args.split,
                      use_annotation=not args.no_annotation)


def _names(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from msldm.eval.generators import BundleGenerator
    from msldm.eval.report import load_baseline, write_report

    cfg = config_from_args(args)
    baselines = {}
    for spec in args.baseline:
        name, _, path = spec.partition("=")
        baselines[name] = load_baseline(path)
    generator = BundleGenerator(args.bundle)
    write_report(generator, args.data, args.out, cfg, args.name or Path(args.bundle).name, baselines)
    print(f"wrote {Path(args.out) / 'report.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (`python -m msldm.eval.cli eval ...`)."""
    parser = argparse.ArgumentParser(prog="msldm")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
