"""The `msldm` command: thin subcommands (parse -> config -> one library call).

Subcommand modules are imported lazily by their handlers, so `msldm serve` works on an
install without torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from msldm.cli_common import SEED_HELP, add_alias

DESCRIPTION = """msldm: accompaniment stems for your DAW (multi-source latent diffusion).

Give it some stems of a region (say drums and piano) and it generates the missing ones
(bass, guitar) to fit. Start with `msldm demo`; a DAW talks to `msldm serve` through
`msldm-bridge` (docs/daw.md)."""

TOP_EXAMPLES = """examples:
  msldm demo --out demo-out                       # the bundled example region through the daemon
  msldm serve                                     # the daemon a DAW's bridge talks to
  msldm eval --bundle msldm/assets/bundle --data corpus/ --out report/ --n 24
  msldm data synth --out corpus/ --tracks 200 --workers 2
  msldm presets                                   # model sizes
Every subcommand has --help with its defaults and an example."""

EXAMPLES = """examples:
  msldm init --preset tiny --out ckpt/            # random-weight checkpoints (plumbing only)
  msldm generate --vae ckpt/vae.safetensors --diffusion ckpt/diffusion.safetensors \\
      --given drums=drums.wav --given piano=keys.wav --generate bass,guitar --duration 12 --out out/
"""


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate stems with the PyTorch pipeline",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vae", required=True, type=Path, help="SourceVAE checkpoint (.safetensors)")
    p.add_argument("--diffusion", required=True, type=Path, help="diffusion checkpoint")
    p.add_argument("--given", action="append", default=[], metavar="STEM=WAV",
                   help="a given stem (repeatable); none means total generation")
    p.add_argument("--generate", default=None, metavar="STEMS", help="comma-separated stems to "
                   "generate (default: every stem not given)")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                   help="length in seconds (default: the given stems' length, else 12 s)")
    p.add_argument("--seed", type=int, default=None, help=SEED_HELP)
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's)")
    p.add_argument("--sampler", choices=["euler", "heun"], default=None)
    p.add_argument("--schedule", choices=["karras", "melody"], default=None,
                   help="noise schedule; melody suits few steps (default: the model's)")
    p.add_argument("--resample", type=int, default=None,
                   help="passes per step, 1-8: a tighter fit to the given stems (default: the model's)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--device", default="cpu")
    add_alias(p, "--make", "--generate")  # the names before one name per concept
    add_alias(p, "--seconds", "--duration")
    p.set_defaults(func=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
    from msldm.generate import PipelineRequest, generate_to_folder

    req = PipelineRequest.from_cli(args.given, args.generate, args.duration, args.seed, args.steps,
                                   args.sampler, args.schedule, args.resample)
    report = generate_to_folder(args.vae, args.diffusion, req, args.out, device=args.device)
    print(report)
    return 0


def _add_init(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="write random-weight checkpoints of a preset "
                       "(for plumbing tests and timing, not music)")
    from msldm.config import PRESETS
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="model preset (msldm presets lists them)")
    p.add_argument("--out", required=True, type=Path, help="folder for vae.safetensors and diffusion.safetensors")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run_init)


def _run_init(args: argparse.Namespace) -> int:
    from msldm.generate import init_random_checkpoints

    for path in init_random_checkpoints(args.preset, args.out, args.seed):
        print(path)
    return 0


def _add_presets(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("presets", help="list the model presets with their parameter counts")
    p.set_defaults(func=_run_presets)


def _run_presets(args: argparse.Namespace) -> int:
    from msldm.generate import preset_table

    print(preset_table())
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="accompaniment for the bundled example region, through the "
                       "daemon, on the bundled default model",
                       epilog="example: msldm demo --out demo-out")
    p.add_argument("--out", type=Path, default=Path("demo-out"))
    p.add_argument("--bundle", type=Path, default=None,
                   help="model bundle (default: the bundled one, or $MSLDM_BUNDLE)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's)")
    p.add_argument("--schedule", choices=["karras", "melody"], default=None,
                   help="noise schedule; melody suits few steps (default: the model's)")
    p.add_argument("--resample", type=int, default=None,
                   help="passes per step, 1-8: a tighter fit to the given stems (default: the model's)")
    p.add_argument("--guidance", type=float, default=None, metavar="W",
                   help="0-8: how strongly the generated stems follow the given ones' timing (1: the model's "
                        "own pull; default: the model's); e.g. --guidance 3 --resample 1")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from msldm.demo import run_demo

    print(run_demo(args.out, args.bundle, args.seed, args.steps, schedule=args.schedule,
                   resample=args.resample, guidance=args.guidance))
    return 0


def _add_ckpt(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ckpt", help="split a checkpoint into small shards, or join them back",
                       epilog="example: msldm ckpt shard runs/diff/diffusion.safetensors "
                              "--out weights/ --max-mb 16 --half\n"
                              "         msldm ckpt join weights/diffusion-*.safetensors "
                              "--out diffusion.safetensors")
    csub = p.add_subparsers(dest="ckpt_command", required=True)
    sh = csub.add_parser("shard", help="write shards of at most --max-mb each")
    sh.add_argument("checkpoint", type=Path)
    sh.add_argument("--out", required=True, type=Path)
    sh.add_argument("--max-mb", type=float, default=16.0)
    sh.add_argument("--half", action="store_true", help="store float32 weights as float16")
    sh.set_defaults(func=_run_ckpt)
    jo = csub.add_parser("join", help="rebuild one checkpoint from its shards")
    jo.add_argument("shards", nargs="+", type=Path)
    jo.add_argument("--out", required=True, type=Path)
    jo.set_defaults(func=_run_ckpt)


def _run_ckpt(args: argparse.Namespace) -> int:
    from msldm.checkpoint import join_shards, write_shards

    if args.ckpt_command == "shard":
        paths = write_shards(args.checkpoint, args.out, int(args.max_mb * 2 ** 20), args.half)
    else:
        paths = [join_shards(args.shards, args.out)]
    for p in paths:
        print(p)
    return 0


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions and examples as written, and each option's default in its help (unless the
    help already says it, or there is none to say: None, False, an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS) or not action.option_strings:
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help shows defaults; subcommand parsers are of this class too."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        if kwargs.get("formatter_class") in (None, argparse.HelpFormatter, argparse.RawDescriptionHelpFormatter):
            kwargs["formatter_class"] = HelpFormatter
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="msldm", description=DESCRIPTION, epilog=TOP_EXAMPLES)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_demo, _add_generate, _add_init, _add_presets, _add_data, _add_ckpt):
        add(sub)
    for register in _registries():
        register(sub)
    return parser


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="data sets: synthetic corpus, statistics, latents")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    from msldm.data.synth.cli import add_data_commands

    add_data_commands(data_sub)
    from msldm.data.cli_latents import add_latents_parser

    add_latents_parser(data_sub)


def _registries() -> list:
    """`register(subparsers)` of each area. An area whose optional dependencies are not
    installed (torch on a server-only install) is left out of the command list."""
    found = []
    for module, name in _AREAS:
        try:
            mod = __import__(module, fromlist=[name])
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] in _OPTIONAL:
                continue
            raise
        found.append(getattr(mod, name))
    return found


_OPTIONAL = {"torch", "onnx", "safetensors", "onnxruntime", "matplotlib", "scipy", "yaml"}
_AREAS: list[tuple[str, str]] = [("msldm.train.cli", "register"), ("msldm.eval.cli", "register"),
                                 ("server.cli", "register"), ("export.cli", "register"),
                                 ("msldm.bench", "register")]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as exc:
        print(f"msldm {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
