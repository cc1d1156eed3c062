"""`msldm eval`: evaluate a model bundle on a data set and write a report; `msldm compare`:
every measure of two or more runs side by side.

Examples:
    msldm eval --bundle bundles/small --data data/synth --out reports/small \\
        --n 200 --steps 5,10,20 --seconds 12 --subsets all
    msldm compare preview=reports/preview/metrics.json new=reports/new/metrics.json
"""

from __future__ import annotations

import argparse
import dataclasses
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
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--bundle", help="model bundle folder (manifest.json + ONNX files)")
    which.add_argument("--vae", help="a SourceVAE checkpoint: only the reconstruction section (torch)")
    p.add_argument("--recon-n", type=int, default=16, help="segments of the reconstruction section")
    p.add_argument("--save-examples", type=_non_negative, default=2, metavar="N",
                   help="segments per task whose generated audio and spectrograms are written under "
                        "audio/ and figures/ (default 2)")
    p.add_argument("--vae-ceiling", action="store_true",
                   help="with --bundle: score the real stems through the bundle's encoder and decoder "
                        "instead of generations: the fit, level and density any denoiser could reach "
                        "through this VAE (the report's name says so)")
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
    p.add_argument("--resamples", default="1", help="passes per step of the sweep, e.g. 1,3 (RePaint resampling)")
    p.add_argument("--resample", type=int, default=None,
                   help="passes per step of the main run (default: the bundle's, what a user gets)")
    p.add_argument("--churns", default="bundle",
                   help="S_churn values of the sweep, e.g. 0,10,20 ('bundle': the bundle's)")
    p.add_argument("--churn", default="bundle", help="S_churn of the main run, partial and total generation alike "
                   "('bundle': the bundle's S_churn, and S_churn_total up to S_tmax_total in total generation)")
    p.add_argument("--sampler-field", action="append", default=[], metavar="FIELD=VALUE",
                   help="a field of the bundle's sampler defaults set for this run (repeatable), e.g. "
                        "guidance=3 resample=1: what `msldm export --sampler` would write, without exporting")
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
    p.add_argument("--seed", type=int, default=0, help="picks the clips and seeds the generations")
    p.add_argument("--draw", type=_non_negative, default=0,
                   help="another draw of the generations on the same clips (0: the first): how far the "
                        "figures move with the sampler's noise alone; `msldm compare --paired` pairs draws")
    p.add_argument("--silent-retries", type=_retries, default=None,
                   help="extra samplings of a window whose generated stem is silent (default: the daemon's, 2; "
                        "0: the model's first attempt, as it comes)")
    p.add_argument("--level", choices=("balance", "model"), default="balance",
                   help="level of the generated stems, as a request's `level` (default balance: the bundle's "
                        "balance against the given stems, where it has a table; model: the decoder's)")
    p.add_argument("--threads", type=_non_negative, default=0,
                   help="onnxruntime threads of the bundle (0: all cores); 1 lets an eval share a 2-core "
                        "machine with a 1-thread training run without both spinning at barriers")
    p.set_defaults(func=_run)
    c = subparsers.add_parser("compare", help="every measure of two or more eval runs in one table",
                              description=__doc__, epilog=COMPARE_EXAMPLE,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("runs", nargs="+", metavar="NAME=METRICS_JSON", help="runs to put side by side; "
                   "NAME=A.json,B.json,... takes draws of one run on the same clips (`msldm eval --draw`) "
                   "and shows mean ± sd (min-max) over them")
    c.add_argument("--out", default=None, help="also write the table to this markdown file")
    c.add_argument("--paired", action="store_true",
                   help="per-clip differences of each run from the first (same clips and seeds), "
                        "mean ± standard error, instead of the side-by-side table")
    c.set_defaults(func=_compare)
    _register_fit_check(subparsers)


def _register_fit_check(subparsers: Any) -> None:
    p = subparsers.add_parser("fit-check", help="do the fit measures separate real from mismatched stems?",
                              description=(
                                  "Scores real stems, mismatched ones (another track, key and tempo), a "
                                  "tritone transposition and an 8th-note delay in the context of the other "
                                  "stems, and prints the separation per stem. No model is involved."),
                              epilog=FIT_CHECK_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="data root (with the split) or a folder of TrackNNNNN")
    p.add_argument("--n", type=int, default=24, help="segments")
    p.add_argument("--seconds", type=float, default=12.0, help="segment length")
    p.add_argument("--split", default="test")
    p.add_argument("--no-annotation", action="store_true", help="estimate chords and beats from the audio")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_fit_check)


FIT_CHECK_EXAMPLE = "example: msldm fit-check --data data/multi --n 24 --split test"


def _fit_check(args: argparse.Namespace) -> int:
    from msldm.eval.ruler import fit_check, format_fit_check

    result = fit_check(args.data, args.n, args.seconds, args.split, use_annotation=not args.no_annotation,
                       seed=args.seed)
    print(format_fit_check(result, f"{args.data} ({args.split})"))
    return 0


COMPARE_EXAMPLE = ("example: msldm compare preview=reports/preview/metrics.json new=reports/new/metrics.json\n"
                   "         msldm compare new=reports/new/metrics.json,reports/new-draw1/metrics.json\n"
                   "         (a report folder stands for its metrics.json)")


def _compare(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from msldm.eval.report import compare_table, paired_table

    runs: dict[str, Any] = {}
    for spec in args.runs:
        name, sep, paths = spec.partition("=")
        if not sep or not name or not paths:
            raise ValueError(f"expected NAME=METRICS_JSON, got {spec!r}")
        draws = []
        for path in paths.split(","):
            if not path:
                raise ValueError(f"an empty path in {spec!r}: give NAME=A.json,B.json with no empty item")
            file = Path(path) / "metrics.json" if Path(path).is_dir() else Path(path)  # a report folder
            try:
                draws.append(json.loads(file.read_text()))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{file}: not a metrics.json ({exc})") from None
            except OSError as exc:
                raise ValueError(f"{file}: cannot read it ({exc.strerror}); give an eval report's "
                                 "metrics.json or its folder") from None
        runs[name] = draws[0] if len(draws) == 1 else draws
    if args.paired and len(runs) < 2:
        raise ValueError("--paired compares runs with the first: give at least two NAME=METRICS_JSON")
    if args.paired and any(isinstance(m, list) for m in runs.values()):
        raise ValueError("--paired takes one metrics.json per run (pair draws one against another)")
    table = paired_table(runs) if args.paired else compare_table(runs)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    return 0


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    """EvalConfig of the parsed arguments."""
    from msldm.eval.pipeline import EvalConfig

    steps = tuple(int(s) for s in args.steps.split(",") if s.strip())
    return EvalConfig(n=args.n, seconds=args.seconds, subsets=tuple(parse_subsets(args.subsets)),
                      steps=steps[-1], sampler=args.sampler, schedule=args.schedule, resample=args.resample,
                      sweep_steps=steps, sweep_samplers=_names(args.samplers),
                      sweep_schedules=_names(args.schedules),
                      sweep_resamples=tuple(int(r) for r in _names(args.resamples)),
                      churn=_churn(args.churn), sweep_churns=tuple(_churn(c) for c in _names(args.churns)),
                      sweep_n=args.sweep_n, embedding=args.embedding,
                      embedding_weights=args.embedding_weights, seed=args.seed, draw=args.draw,
                      split=args.split,
                      use_annotation=not args.no_annotation, recon_n=args.recon_n,
                      save_examples=args.save_examples, silent_retries=args.silent_retries, level=args.level,
                      sampler_fields=tuple(sorted(_sampler_fields(args.sampler_field).items())))


def _sampler_fields(items: list[str]) -> dict[str, str]:
    """`--sampler-field` items as {field: text}, checked against the sampler config's fields."""
    from msldm.config import SamplerConfig
    try:
        fields = SamplerConfig.parse_assignments(items)
        SamplerConfig().with_overrides(fields)
    except ValueError as e:
        raise SystemExit(f"msldm eval: --sampler-field: {e}") from None
    return fields


def _retries(text: str) -> int:
    """`--silent-retries`: an integer in the daemon's range (0..4)."""
    from server.requests import MAX_SILENT_RETRIES

    value = int(text)
    if not 0 <= value <= MAX_SILENT_RETRIES:
        raise argparse.ArgumentTypeError(f"must be in 0..{MAX_SILENT_RETRIES} (the daemon's range), got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _names(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _churn(text: str) -> float | None:
    """An S_churn value, or None for 'bundle' (the bundle's default)."""
    return None if text.strip() == "bundle" else float(text)


def _vae_ceiling(bundle_generator: Any, data: str, cfg: "EvalConfig") -> Any:
    """The real stems of the evaluation's clips through the bundle's VAE, as a generator (the
    clips drawn as `run_evaluation` draws them; seeds offset by the draw, as it offsets them)."""
    from msldm.eval.data import load_segments
    from msldm.eval.generators import OracleGenerator
    from msldm.eval.pipeline import DRAW_STRIDE

    segments = load_segments(data, cfg.n, cfg.seconds, cfg.sample_rate, cfg.split, cfg.seed,
                             use_annotation=cfg.use_annotation)
    return OracleGenerator(segments, base_seed=cfg.seed + cfg.draw * DRAW_STRIDE,
                           round_trip=bundle_generator.reconstruct)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from msldm.eval.generators import BundleGenerator
    from msldm.eval.report import load_baseline, write_report

    cfg = config_from_args(args)
    if args.vae_ceiling and not args.bundle:
        raise SystemExit("msldm eval: --vae-ceiling scores the real stems through a bundle's VAE: give --bundle")
    if args.vae:
        from msldm.eval.generators import TorchVAEReconstructor
        from msldm.eval.report import write_reconstruction_report

        rec = TorchVAEReconstructor(args.vae)
        write_reconstruction_report(rec.reconstruct, args.data, args.out, cfg, args.name or Path(args.vae).stem)
        print(f"wrote {Path(args.out) / 'report.md'}")
        return 0
    baselines = {}
    for spec in args.baseline:
        name, _, path = spec.partition("=")
        baselines[name] = load_baseline(path)
    if args.threads > 0:
        from msldm.eval import transcribe
        transcribe.SESSION_THREADS = args.threads
    if args.vae_ceiling:  # nothing is sampled, so no window is sampled again
        cfg = dataclasses.replace(cfg, silent_retries=0)
    if cfg.silent_retries is None:  # record what ran: the daemon's default
        from server.windowing import SILENT_RETRIES
        cfg = dataclasses.replace(cfg, silent_retries=SILENT_RETRIES)
    try:
        generator = BundleGenerator(args.bundle, threads=args.threads, silent_retries=cfg.silent_retries,
                                    sampler_fields=dict(cfg.sampler_fields), level=cfg.level)
    except ValueError as e:  # a bundle that does not load, or a --sampler-field its defaults refuse
        raise SystemExit(f"msldm eval: {e}") from None
    name = args.name or Path(args.bundle).name
    if args.vae_ceiling:
        generator = _vae_ceiling(generator, args.data, cfg)
        name = f"{name}: the real stems through its VAE (ceiling)"
    metrics = write_report(generator, args.data, args.out, cfg, name, baselines)
    print(f"wrote {Path(args.out) / 'report.md'} ({generator.rerolls} extra samplings of a window for a "
          f"silent, buried or blown stem, silent_retries {generator.silent_retries})")
    if args.baseline:  # every measure side by side with the baselines' runs
        import json

        from msldm.eval.report import _clean, compare_table
        runs = {name: _clean(metrics)}
        for spec in args.baseline:
            other, _, path = spec.partition("=")
            runs[other] = json.loads(Path(path).read_text())
        print(compare_table(runs))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (`python -m msldm.eval.cli eval ...`)."""
    parser = argparse.ArgumentParser(prog="msldm")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
