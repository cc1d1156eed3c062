"""`msldm train vae|diffusion`: thin handlers over `msldm.train.runs`.

Examples (one CPU process, or `torchrun --nproc_per_node=8 -m msldm.cli train ...` for DDP):

    msldm train vae --preset small --data data/synth --out runs/vae --steps 100000 --batch 7
    msldm data latents --vae runs/vae/vae.safetensors --data data/synth --out data/latents
    msldm train diffusion --preset small --latents data/latents --out runs/diff --steps 400000 \\
        --batch 16 --vae runs/vae/vae.safetensors --media-every 5000
    msldm train diffusion --baseline isldm ...   # one model per stem in runs/diff/<stem>/
    msldm train vae --baseline mixldm ...        # the MixtureVAE (C = 320) on mixtures
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

from msldm.config import STEMS, TRAIN_SIGMAS, get_preset
from typing import TYPE_CHECKING

from msldm.train.baselines import BASELINES, baseline_configs

if TYPE_CHECKING:  # the modules with torch are imported by the handlers, so `msldm --help`,
    from msldm.train.loop import TrainConfig  # `msldm demo` and `msldm serve` start without it


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="small", help="model preset (tiny, small, paper, paper_large)")
    p.add_argument("--baseline", default="msldm", choices=sorted(BASELINES),
                   help="msldm (default), isldm (one model per stem) or mixldm (mixture VAE/LDM)")
    p.add_argument("--out", required=True, help="run folder: checkpoint, train state, tb/ logs")
    p.add_argument("--steps", type=int, required=True, help="total optimiser steps")
    p.add_argument("--batch", type=int, default=8, help="batch per process")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the paper's)")
    p.add_argument("--resume", action="store_true", help="continue exactly from <out>'s train state")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--val-every", type=int, default=1000)
    p.add_argument("--val-batches", type=int, default=4)
    p.add_argument("--media-every", type=int, default=0, help="audio/spectrograms to TensorBoard")
    p.add_argument("--ckpt-every", type=int, default=1000)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    p.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--silence-threshold", type=float, default=1e-3,
                   help="RMS under which a stem counts as silent in a chunk")
    p.add_argument("--min-active", type=int, default=None,
                   help="chunks need this many active stems (default: vae 1, diffusion all)")
    p.add_argument("--min-frame-share", type=float, default=0.0,
                   help="diffusion: a stem is active only if this share of the window's frames is "
                        "above --frame-threshold-db (0.75: parts that play through the window)")
    p.add_argument("--stem-frame-share", type=_stem_share, action="append", default=[], metavar="STEM=SHARE",
                   help="diffusion: --min-frame-share for one stem (guitar=0.8), repeatable; "
                        "the other stems keep --min-frame-share")
    p.add_argument("--frame-threshold-db", type=_finite_db, default=None, metavar="DBFS",
                   help="diffusion: the RMS of one latent frame above which it counts as sounding, "
                        "for --min-frame-share (default -70.5 dBFS; -50 keeps faint tails out)")


def _stem_share(text: str) -> tuple[str, float]:
    """argparse type: `STEM=SHARE` with a known stem and a share in [0, 1]."""
    stem, sep, value = text.partition("=")
    try:
        share = float(value)
    except ValueError:
        share = math.nan
    if not sep or stem not in STEMS or not 0.0 <= share <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: want STEM=SHARE, STEM one of {', '.join(STEMS)}, "
                                         "SHARE between 0 and 1")
    return stem, share


def _finite_db(text: str) -> float:
    """argparse type: a finite level in dBFS, at most 0."""
    value = float(text)
    if not math.isfinite(value) or value > 0:
        raise argparse.ArgumentTypeError("must be a finite level <= 0 dBFS")
    return value


def _train_config(args: argparse.Namespace, out: Path) -> TrainConfig:
    from msldm.train.loop import TrainConfig

    return TrainConfig(out=str(out), steps=args.steps, batch=args.batch, log_every=args.log_every,
                       val_every=args.val_every, val_batches=args.val_batches,
                       media_every=args.media_every, ckpt_every=args.ckpt_every,
                       ema_decay=args.ema_decay, seed=args.seed, num_workers=args.workers,
                       resume=args.resume, progress=not args.no_progress)


# `train vae` options that set a field of the spectral SourceVAE's losses: (argument, field,
# needs an 'if' phase, whether a value is allowed, that rule in words).
_SPECTRAL_LOSS_OPTIONS = (
    ("flux_weight", "lambda_flux", False, lambda v: math.isfinite(v) and v >= 0, "finite and >= 0"),
    ("phase_weight", "lambda_phase", False, lambda v: math.isfinite(v) and v >= 0, "finite and >= 0"),
    ("low_envelope_weight", "lambda_low_envelope", False, lambda v: math.isfinite(v) and v >= 0,
     "finite and >= 0"),
    ("level_weight", "lambda_level", False, lambda v: math.isfinite(v) and v >= 0, "finite and >= 0"),
    ("phase_error", "phase_error", True, lambda v: True, ""),
    ("phase_grad_frames", "phase_grad_frames", True, lambda v: v >= 0, ">= 0"),
    ("adversarial_weight", "lambda_spectral_adversarial", False, lambda v: math.isfinite(v) and v >= 0,
     "finite and >= 0"),
    ("feature_weight", "lambda_spectral_feature", False, lambda v: math.isfinite(v) and v >= 0,
     "finite and >= 0"),
    ("disc_channels", "discriminator_channels", False, lambda v: v >= 1, ">= 1"),
    ("disc_periods", "periods", False, lambda v: all(p >= 2 for p in v), "each >= 2"),
    ("disc_ffts", "stft_ffts", False, lambda v: all(n >= 64 for n in v), "each >= 64"),
)


def _int_list(text: str) -> tuple[int, ...]:
    """`--disc-periods` / `--disc-ffts`: "2,3,5" -> (2, 3, 5); "none" -> ()."""
    if text.strip().lower() == "none":
        return ()
    try:
        return tuple(int(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"integers separated by commas, or 'none': {text!r}")


def _float_pair(text: str) -> tuple[float, float]:
    """argparse type of "LO,HI": two numbers."""
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers LO,HI, got {text!r}") from None
    return lo, hi


def _spectral_loss_options(config, args: argparse.Namespace):
    """`config` with the spectral VAE loss fields the command line sets; SystemExit for an option
    the VAE has no use for (a DAC-style VAE; a phase option on the ``free`` phase) or a bad value."""
    changes = {}
    for name, field, if_phase, ok, rule in _SPECTRAL_LOSS_OPTIONS:
        value = getattr(args, name)
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if config.vae.kind != "spectral" or (if_phase and config.vae.phase == "free"):
            raise SystemExit(f"{flag} sets a loss of the spectral SourceVAE"
                             + (" with an 'if' or 'if_lock' phase" if if_phase else "")
                             + " (e.g. --preset spectral)")
        if not ok(value):
            raise SystemExit(f"{flag} must be {rule}, got {value}")
        changes[field] = value
    if not changes:
        return config
    return dataclasses.replace(config, vae_loss=dataclasses.replace(config.vae_loss, **changes))


def _run_vae(args: argparse.Namespace) -> None:
    from msldm.data.slakh import ActivityFilter
    from msldm.train.distributed import cleanup, init_distributed
    from msldm.train.runs import train_vae

    if args.baseline == "isldm":
        raise SystemExit("ISLDM shares MSLDM's SourceVAE: train it with --baseline msldm")
    config = baseline_configs(get_preset(args.preset), args.baseline)[0]
    if args.vae_phase:
        if config.vae.kind != "spectral":
            raise SystemExit("--vae-phase needs a spectral SourceVAE preset (e.g. --preset spectral)")
        config = dataclasses.replace(config, vae=dataclasses.replace(config.vae, phase=args.vae_phase))
    if args.low_n_fft is not None or args.low_crossover is not None or args.low_gate or args.encoder_low:
        if args.low_n_fft is None:
            raise SystemExit("--low-crossover, --low-gate and --encoder-low need --low-n-fft")
        if args.encoder_low and args.freeze_encoder and args.init is None and not args.resume:
            raise SystemExit("--encoder-low with --freeze-encoder needs --init of a VAE whose encoder "
                             "already reads the low band (a frozen encoder cannot learn the new inputs)")
        v = config.vae
        v = dataclasses.replace(v, low_n_fft=args.low_n_fft, low_gate=args.low_gate, encoder_low=args.encoder_low,
                                low_crossover=v.low_crossover if args.low_crossover is None else args.low_crossover)
        try:
            v.check_low_band()
        except ValueError as e:
            raise SystemExit(f"--low-n-fft / --low-crossover: {e} (e.g. --preset spectral --low-n-fft 2560)") from None
        config = dataclasses.replace(config, vae=v)
    config = _spectral_loss_options(config, args)
    if args.disc_lr is not None and not config.vae_loss.spectral_adversarial:
        raise SystemExit("--disc-lr sets the learning rate of a spectral VAE's discriminator: "
                         "it needs --adversarial-weight or --feature-weight")
    activity = ActivityFilter(threshold=args.silence_threshold, min_active=args.min_active or 1)
    info = init_distributed(args.device)
    try:
        train_vae(config, args.data, _train_config(args, Path(args.out)), info, lr=args.lr,
                  amp=not args.no_amp, adversarial_start=args.adversarial_start,
                  seconds=args.seconds, activity=activity, init=args.init,
                  freeze_encoder=args.freeze_encoder, disc_lr=args.disc_lr)
    finally:
        cleanup()


def _run_diffusion(args: argparse.Namespace) -> None:
    from msldm.data.slakh import ActivityFilter
    from msldm.train.distributed import cleanup, init_distributed
    from msldm.train.runs import train_diffusion

    configs = baseline_configs(get_preset(args.preset), args.baseline)
    joint = [c.name for c in configs if not c.diffusion.conditional]
    if joint and args.cond_lr is not None:
        raise SystemExit(f"--cond-lr trains a conditional preset (cpu_given, gpu_given, "
                         f"tiny_given); {joint[0]!r} has no conditioning input")
    if joint and args.given_prob is not None and args.given_noise is None:
        raise SystemExit(f"--given-prob on a joint preset ({joint[0]!r}) needs --given-noise (its rows with a "
                         f"given part), or a conditional preset (cpu_given, gpu_given, tiny_given)")
    if joint and args.given_stem_prob and args.given_noise is None:
        raise SystemExit(f"--given-stem-prob on a joint preset ({joint[0]!r}) needs --given-noise (its rows with a "
                         f"given part), or a conditional preset")
    if args.given_noise is not None:
        if len(joint) < len(configs):
            raise SystemExit("--given-noise trains a joint preset; a conditional one reads the given part clean")
        if not 0.0 <= args.given_noise <= 1.0:
            raise SystemExit(f"--given-noise must be in [0, 1], got {args.given_noise}")
    if args.train_sigma:
        configs = [dataclasses.replace(c, diffusion=dataclasses.replace(c.diffusion, train_sigma=args.train_sigma))
                   for c in configs]
    if args.channel_filters is not None:
        if args.channel_filters < 0:
            raise SystemExit(f"--channel-filters must be >= 0, got {args.channel_filters}")
        configs = [dataclasses.replace(c, diffusion=dataclasses.replace(c.diffusion, unet=dataclasses.replace(
            c.diffusion.unet, channel_filters=args.channel_filters))) for c in configs]
    if args.stem:
        if args.baseline != "isldm":
            raise SystemExit("--stem picks one of ISLDM's per-stem models: use it with --baseline isldm")
        configs = [c for c in configs if c.diffusion.stems == (args.stem,)]
        if not configs:
            raise SystemExit(f"--stem {args.stem!r} is not one of the model's stems")
    frame = {} if args.frame_threshold_db is None else {"frame_threshold": 10.0 ** (args.frame_threshold_db / 20.0)}
    activity = ActivityFilter(threshold=args.silence_threshold, min_active=args.min_active,
                              min_frame_share=args.min_frame_share,
                              stem_frame_share=tuple(dict(args.stem_frame_share).items()), **frame)
    info = init_distributed(args.device)
    try:
        for config in configs:
            out = Path(args.out)
            if args.baseline == "isldm":
                out = out / config.diffusion.stems[0]  # one independent model per stem
            cfg = dataclasses.replace(_train_config(args, out), meta={"baseline": args.baseline})
            train_diffusion(config, args.latents, cfg, info, lr=args.lr, amp=not args.no_amp,
                            vae_path=args.vae, activity=activity, init=args.init,
                            resident={"auto": None, "on": True, "off": False}[args.resident],
                            given_prob=0.5 if args.given_prob is None else args.given_prob,
                            cond_lr=args.cond_lr, given_noise=args.given_noise,
                            given_stems=dict(args.given_stem_prob) or None)
    finally:
        cleanup()


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `train vae` and `train diffusion` to the top-level `msldm` parser."""
    train = subparsers.add_parser("train", help="train the SourceVAE or the diffusion model",
                                  description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = train.add_subparsers(dest="train_command", required=True)
    vae = sub.add_parser("vae", help="train the SourceVAE on a Slakh-layout folder",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(vae)
    vae.add_argument("--data", required=True, help="Slakh root with train/ (and validation/)")
    vae.add_argument("--seconds", type=float, default=1.0, help="segment length (paper: 1 s)")
    vae.add_argument("--init", default=None, metavar="CKPT",
                     help="start from these VAE weights when there is no run state to resume")
    vae.add_argument("--vae-phase", default=None, choices=("if", "if_lock", "free"),
                     help="decoder phase of a spectral SourceVAE (default: the preset's)")
    vae.add_argument("--low-n-fft", type=int, default=None, metavar="N",
                     help="spectral VAE: a second decoder head for the low band at an STFT of N "
                          "(a multiple of the hop, e.g. 2560); with --init of a VAE without one, it "
                          "starts from the main head (msldm.spectral_vae, 'Low band')")
    vae.add_argument("--low-crossover", type=_float_pair, default=None, metavar="LO,HI",
                     help="with --low-n-fft: the low head alone below LO Hz, the main head alone "
                          "above HI (default 250,400)")
    vae.add_argument("--low-envelope-weight", type=float, default=None, metavar="W",
                     help="spectral VAE: weight of the low-band envelope term (the band below 400 Hz "
                          "in 3 ms frames: a kick smeared ahead of its attack; default 0)")
    vae.add_argument("--encoder-low", action="store_true",
                     help="with --low-n-fft: the encoder also reads the low band at that window (new "
                          "latents; with --init of a VAE without it, the new inputs start at zero)")
    vae.add_argument("--low-gate", action="store_true",
                     help="with --low-n-fft: the decoder also chooses per frame how much of the band "
                          "below the crossover the low head plays (a kick drum through the short "
                          "window, a held bass note through the long one)")
    vae.add_argument("--level-weight", type=float, default=None, metavar="W",
                     help="spectral VAE: weight of the level term (log RMS of the audio in 46 ms "
                          "frames against the original's; default 0)")
    vae.add_argument("--freeze-encoder", action="store_true",
                     help="spectral VAE: train the decoder only (with --init), so latents made by "
                          "the encoder, and a denoiser trained on them, stay valid")
    vae.add_argument("--flux-weight", type=float, default=None, metavar="W",
                     help="spectral VAE: weight of the flux loss (frame-to-frame level changes of "
                          "strong partials; default the preset's, 0)")
    vae.add_argument("--phase-weight", type=float, default=None, metavar="W",
                     help="spectral VAE: weight of the direct phase term (for 'if' phases, each "
                          "bin's instantaneous-frequency deviation; default the preset's, 1)")
    vae.add_argument("--phase-error", default=None, choices=("cos", "l1"),
                     help="spectral VAE, 'if' phases: the direct phase term's error, 1 - cos or the "
                          "wrapped absolute error (default the preset's, cos)")
    vae.add_argument("--phase-grad-frames", type=int, default=None, metavar="N",
                     help="spectral VAE, 'if' phases: let the audio losses train the phase through "
                          "the last N frames of its running sum (default the preset's, 0: off)")
    vae.add_argument("--adversarial-start", type=int, default=0,
                     help="steps of mel+KL warm-up before the discriminator joins (spectral VAE: "
                          "steps the discriminator trains alone before its terms reach the VAE)")
    vae.add_argument("--adversarial-weight", type=float, default=None, metavar="W",
                     help="spectral VAE: weight of the least-squares GAN term (default 0: no "
                          "discriminator); an adversarial fine-tune of a trained decoder")
    vae.add_argument("--feature-weight", type=float, default=None, metavar="W",
                     help="spectral VAE: weight of the discriminator feature-matching term (default 0)")
    vae.add_argument("--disc-channels", type=int, default=None, metavar="N",
                     help="spectral VAE: the discriminator's base width (default the preset's)")
    vae.add_argument("--disc-periods", type=_int_list, default=None, metavar="P,P,...",
                     help="spectral VAE: the periods of its waveform sub-discriminators, or 'none' "
                          "for the banded STFT ones alone (default the preset's: 2,3,5,7,11)")
    vae.add_argument("--disc-ffts", type=_int_list, default=None, metavar="N,N,...",
                     help="spectral VAE: the FFT sizes of its banded STFT sub-discriminators, or "
                          "'none' for the waveform ones alone (default the preset's: 2048,1024,512)")
    vae.add_argument("--disc-lr", type=float, default=None, metavar="LR",
                     help="spectral VAE: the discriminator's learning rate (default 1e-4)")
    vae.set_defaults(func=_run_vae)
    diff = sub.add_parser("diffusion", help="train the latent denoiser on extracted latents",
                          description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(diff)
    diff.add_argument("--latents", required=True, help="folder made by `msldm data latents`")
    diff.add_argument("--vae", default=None, help="VAE checkpoint to decode logged samples")
    diff.add_argument("--stem", default=None, help="ISLDM: train only this stem's model")
    diff.add_argument("--init", default=None, metavar="CKPT",
                      help="start from these denoiser weights when there is no run state to resume")
    diff.add_argument("--resident", choices=("auto", "on", "off"), default="auto",
                      help="hold the training windows on the training device and cut batches "
                           "there (auto: on a GPU); the batches are the same either way")
    diff.add_argument("--given-noise", type=float, default=None, metavar="R0",
                      help="a joint preset: a share --given-prob (default 0.5) of the rows is shown a random "
                           "given part noised at r*sigma, r ~ U[R0, 1], and scored elsewhere, so that "
                           "imputation may show the given stems under less noise (sampler field given_noise)")
    diff.add_argument("--given-stem-prob", type=_stem_share, action="append", default=[], metavar="STEM=P",
                      help="in a row with a given part, STEM's chance to be given (repeatable; default 1/2 "
                           "each): e.g. bass=0.8 trains more rows that generate the rest given a bass")
    diff.add_argument("--given-prob", type=float, default=None, metavar="P",
                      help="a conditional preset (cpu_given): share of the training rows shown a "
                           "given part (random stems, sometimes a span of frames); default 0.5")
    diff.add_argument("--train-sigma", default=None, choices=TRAIN_SIGMAS,
                      help="training noise levels (default: the preset's, the paper's uniform): "
                           "'mixed' adds EDM's log-normal half, so the denoiser learns the low levels "
                           "where the sampler takes half its steps (msldm.edm.sample_training_sigma)")
    diff.add_argument("--channel-filters", type=int, default=None, metavar="N",
                      help="add N noise-level-weighted banks of per-channel filters to the U-Net "
                           "(UNetConfig.channel_filters; default: the preset's); with --init they start at "
                           "zero, so the loaded model's function is where training starts")
    diff.add_argument("--cond-lr", type=float, default=None, metavar="LR",
                      help="a conditional preset: learning rate of the conditioning input alone "
                           "(default --lr), e.g. higher while the joint model's weights move slowly")
    diff.set_defaults(func=_run_diffusion)


def main(argv: list[str] | None = None) -> None:
    """Stand-alone entry (`python -m msldm.train.cli train ...`), used by tests and torchrun."""
    parser = argparse.ArgumentParser(prog="msldm")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
