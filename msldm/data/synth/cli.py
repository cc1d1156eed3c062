"""`msldm data synth` and `msldm data stats`: render / summarise the synthetic Slakh-like corpus.

Examples:
  msldm data synth --out data/synth --tracks 200 --seed 0 --workers 2
  msldm data stats data/synth
"""

from __future__ import annotations

import argparse
import json
import sys

SYNTH_EXAMPLE = """examples:
  msldm data synth --out data/synth --tracks 200 --seed 0 --workers 2 --seconds 15
  msldm data synth --composer heldout --out data/heldout --tracks 100 --seed 7 --workers 2 --seconds 15
  msldm data synth --out data/multi --tracks 2880 --seed 1 --workers 2 --augment \\
      --soundfonts /usr/share/sounds/sf2/FluidR3_GM.sf2,/usr/share/sounds/sf3/FluidR3Mono_GM.sf3 \\
      --holdout-soundfont /usr/share/sounds/sf2/TimGM6mb.sf2"""


def _run_synth(args: argparse.Namespace) -> None:
    """Handler: render the corpus and print a one-line summary."""
    from .corpus import render_corpus
    from .render import FluidSynthUnavailable

    try:
        summary = render_corpus(args.out, args.tracks, args.seed, sample_rate=args.sample_rate,
                                soundfont=args.soundfont, workers=args.workers, seconds=args.seconds,
                                progress=not args.quiet, soundfonts=tuple(args.soundfonts or ()),
                                drum_kits=tuple(args.drum_kits or ()),
                                holdout_soundfont=args.holdout_soundfont, augment=args.augment,
                                composer=args.composer, resume=args.resume,
                                splits=tuple(args.splits) if args.splits else None)
    except FluidSynthUnavailable as exc:  # a soundfont or the library missing: one line, not a traceback
        raise ValueError(str(exc)) from None
    kept = f", kept {summary.kept} already rendered" if summary.kept else ""
    print(f"wrote {summary.tracks - summary.kept} tracks{kept} to {summary.root} {summary.splits} in {summary.wall_seconds:.1f} s "
          f"({summary.realtime_per_core:.1f}x real time per core)")


def _run_stats(args: argparse.Namespace) -> None:
    """Handler: print the corpus statistics (text, or JSON with --json)."""
    from .stats import corpus_statistics, format_statistics

    stats = corpus_statistics(args.root, audio_tracks=args.audio)
    if args.json:
        json.dump(stats, sys.stdout, indent=1)
        print()
    else:
        print(format_statistics(stats))


COMPOSER_NAMES: tuple[str, ...] = ("heldout", "synth", "synth-changes", "synth-full", "synth-sevenths",
                                   "synth-voicings", "synth-varied")
"""The keys of `corpus.COMPOSERS`, spelled out here so building the parser imports no composer."""


def _non_negative(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def add_data_commands(sub: argparse._SubParsersAction) -> None:
    """Add `synth` and `stats` to an existing `data` subcommand group (imports nothing of the
    renderer: `msldm --help` must work on installs without mido or soundfile)."""
    synth = sub.add_parser("synth", help="render the synthetic multi-track corpus with FluidSynth",
                           description=__doc__, epilog=SYNTH_EXAMPLE,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    synth.add_argument("--out", required=True, help="corpus root (train/validation/test are made inside)")
    synth.add_argument("--tracks", type=_non_negative, required=True, help="number of tracks")
    synth.add_argument("--seed", type=_non_negative, default=0, help="corpus seed (track = f(seed, index))")
    synth.add_argument("--sample-rate", type=int, default=22050)
    synth.add_argument("--soundfont", default=None,
                       help="GM .sf2 (default FluidR3_GM.sf2, else TimGM6mb.sf2)")
    synth.add_argument("--soundfonts", type=lambda t: [x for x in t.split(",") if x], default=None,
                       metavar="SF2,SF2,...",
                       help="training tracks draw each stem's soundfont from these (overrides --soundfont)")
    synth.add_argument("--drum-kits", type=lambda t: [x for x in t.split(",") if x], default=None,
                       metavar="SF2,...",
                       help="soundfonts holding a drum kit alone (preset 0 of bank 0, General MIDI drum map, "
                            "as Debian's avldrums.lv2-soundfont): training tracks' drums draw from these and "
                            "the soundfonts together")
    synth.add_argument("--holdout-soundfont", default=None, metavar="SF2",
                       help="validation and test tracks are rendered with this soundfont only")
    synth.add_argument("--augment", action="store_true",
                       help="effects (EQ, compression, drive, chorus, reverb) and a random gain per stem")
    synth.add_argument("--composer", choices=COMPOSER_NAMES, default="synth",
                       help="synth: the training corpus's music; synth-full: the same with every stem playing "
                            "nearly throughout (denoiser training data); heldout: differently composed "
                            "music (jazz 7th chords, swing, bossa, 6/8, slow blues) for held-out evaluation")
    synth.add_argument("--workers", type=int, default=1, help="processes (output does not depend on it)")
    synth.add_argument("--seconds", type=float, default=15.0, help="length of each track")
    synth.add_argument("--quiet", action="store_true", help="no progress lines")
    synth.add_argument("--resume", action="store_true",
                       help="keep tracks already rendered whole with these settings, render the rest "
                            "(continues a killed render; the result is the same)")
    synth.add_argument("--splits", type=lambda t: [x for x in t.split(",") if x], default=None,
                       metavar="SPLIT,...",
                       help="render only the tracks of these splits (train, validation, test); each track is "
                            "the same as in the whole corpus, so --splits test makes the evaluation set alone")
    synth.set_defaults(func=_run_synth)
    stats = sub.add_parser("stats", help="print statistics of a rendered synthetic corpus",
                           epilog="example: msldm data stats data/synth --audio 200")
    stats.add_argument("root", help="corpus root")
    stats.add_argument("--json", action="store_true", help="print JSON instead of text")
    stats.add_argument("--audio", type=_non_negative, default=0, metavar="N",
                       help="also read the stem audio of N tracks spread over the corpus and count silent files "
                            "per stem and soundfont")
    stats.set_defaults(func=_run_stats)


def register(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Add `data synth` and `data stats` to the top-level parser. Returns the `data` group.

    Other data commands can be added to the returned group (or call `add_data_commands`
    on a `data` group created elsewhere).
    """
    data = subparsers.add_parser("data", help="data sets: synthetic corpus, statistics",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = data.add_subparsers(dest="data_command", required=True)
    add_data_commands(sub)
    return sub
