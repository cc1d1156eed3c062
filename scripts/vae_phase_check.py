"""Which half of the spectral SourceVAE's output loses the notes: its magnitudes or its phase?

The decoder of the ``if`` phases predicts per bin and frame a log magnitude and an
instantaneous-frequency (IF) deviation, and builds the phase by a running sum of the
deviations. This script resynthesises each test stem through the same inverse STFT with
parts of the decoded spectrum swapped for the original's, transcribes every version with
Basic Pitch and prints its note F1 against the original (the evaluation's measure):

- ``recon``: the decoder's magnitudes and phase (the VAE as shipped);
- ``true-mag``: the original's magnitudes, the decoder's phase;
- ``true-phase``: the decoder's magnitudes, the original's STFT phase;
- ``true-if``: the decoder's magnitudes, the phase built from the original's IF deviations the
  way the decoder builds its own (running sum, phase lock);
- ``both-true``: the original's magnitudes and IF deviations (the synthesis's own ceiling);
- ``true-if-onsets`` / ``true-if-steady``: the decoder's magnitudes, the original's IF
  deviations only in onset bins (a bin whose level rises by more than `ONSET_RISE_DB` since
  the last frame, and the next two frames) or only elsewhere.

It also prints the median IF-deviation error (radians per hop) of the decoder at steady strong
peaks (local maxima within 20 dB of the frame's loudest bin, level within 3 dB of the last
frame's, in frames within 40 dB of the segment's loudest): at a hop of 320 samples, 0.1 rad is 1.1 Hz.

    python scripts/vae_phase_check.py --data ~/.cache/msldm/data/multi --split test --n 8
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PITCHED = ("bass", "guitar", "piano")
VARIANTS = ("recon", "true-mag", "true-phase", "true-if", "both-true", "true-if-onsets", "true-if-steady")
ONSET_RISE_DB = 6.0
STEADY_DB = 3.0
STRONG_DB = 20.0
LOUD_DB = 40.0


def onset_bins(logmag, rise_db: float = ONSET_RISE_DB):
    """Bool `[B, F, T]`: bins whose natural-log magnitude rose by more than `rise_db` since the
    frame before, and the two frames after such a rise."""
    import torch
    import torch.nn.functional as F

    rise = torch.diff(logmag, dim=-1, prepend=logmag[..., :1]) > rise_db / 20.0 * math.log(10.0)
    return rise | F.pad(rise, (1, 0))[..., :-1] | F.pad(rise, (2, 0))[..., :-2]


def steady_peaks(logmag):
    """Bool `[B, F, T]`: local maxima across bins within `STRONG_DB` of their frame's loudest
    bin, whose level is within `STEADY_DB` of the frame before, in frames whose loudest bin is
    within `LOUD_DB` of the segment's (not the noise of a rest)."""
    import torch
    import torch.nn.functional as F

    nat = math.log(10.0) / 20.0
    below = F.pad(logmag, (0, 0, 1, 0))[:, :-1]
    above = F.pad(logmag, (0, 0, 0, 1))[:, 1:]
    peak = (logmag > below) & (logmag >= above)
    frame_max = logmag.amax(dim=1, keepdim=True)
    strong = logmag > frame_max - STRONG_DB * nat
    loud = frame_max > frame_max.amax(dim=2, keepdim=True) - LOUD_DB * nat
    steady = torch.diff(logmag, dim=-1, prepend=logmag[..., :1]).abs() < STEADY_DB * nat
    return peak & strong & steady & loud


def wrapped(a):
    """Angles folded into [-pi, pi)."""
    import torch

    return torch.remainder(a + math.pi, 2 * math.pi) - math.pi


def variants(vae, audio):
    """`audio [1, 1, N]` (N a multiple of the hop) -> (name -> resynthesis `[N]` numpy, IF
    deviation errors at steady strong peaks, numpy; with a low-band head, the same errors on its
    grid, else None). With a low-band head each variant swaps the same parts of both heads'
    spectra (the low head's against the audio's STFT at its window) and keeps the decoded gate."""
    import torch

    with torch.no_grad():
        spec = vae.decode_spectrum(vae.encode(audio)[0])
        grids = [("main", vae.features(audio), vae.stft(audio), spec, vae.phase_from_deviation)]
        if getattr(vae, "low_bins", 0):
            grids.append(("low", vae.low_features(audio), vae.low_stft(audio), spec["low"],
                          vae.low_phase_from_deviation))
        specs: dict[str, dict] = {k: {} for k in VARIANTS}
        errors = {}
        for name, (logmag, cos_dev, sin_dev), (re, im), dec, phase in grids:
            mag, dev = dec["logmag"], dec["dev"]
            true_dev = torch.atan2(sin_dev, cos_dev)
            norm = torch.sqrt(re * re + im * im + 1e-12)
            onsets = onset_bins(logmag)

            def built(d, m):
                c, s = phase(d, m)
                return {"cos": c, "sin": s}

            grid = {
                "recon": dict(dec),
                "true-mag": {"logmag": logmag, "cos": dec["cos"], "sin": dec["sin"]},
                "true-phase": {"logmag": mag, "cos": re / norm, "sin": im / norm},
                "true-if": {"logmag": mag, **built(true_dev, mag)},
                "both-true": {"logmag": logmag, **built(true_dev, logmag)},
                "true-if-onsets": {"logmag": mag, **built(torch.where(onsets, true_dev, dev), mag)},
                "true-if-steady": {"logmag": mag, **built(torch.where(onsets, dev, true_dev), mag)},
            }
            for k, v in grid.items():
                if name == "main":
                    specs[k].update(v)
                else:
                    specs[k]["low"] = {**v, **({"gate": dec["gate"]} if "gate" in dec else {})}
            errors[name] = wrapped(dev - true_dev)[steady_peaks(logmag)].abs().numpy()
        out = {k: vae.synthesize(v)[0, 0].numpy() for k, v in specs.items()}
    return out, errors["main"], errors.get("low")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vae", type=Path, default=Path("msldm/assets/vae-spectral/vae.safetensors"),
                    help="a spectral SourceVAE checkpoint with an 'if' or 'if_lock' phase")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    import torch

    from msldm.checkpoint import load_vae
    from msldm.eval.data import load_segments
    from msldm.eval.transcribe import note_f1, transcribe

    torch.set_num_threads(args.threads)
    vae = load_vae(args.vae)[0].eval()
    if vae.cfg.kind != "spectral" or vae.cfg.phase == "free":  # a DAC-style config says phase too
        raise SystemExit(f"{args.vae}: not a spectral SourceVAE with an 'if' or 'if_lock' phase "
                         f"(kind {vae.cfg.kind!r}, phase {vae.cfg.phase!r})")
    segments = load_segments(args.data, args.n, args.seconds, split=args.split)
    for stem in PITCHED:
        f1s: dict[str, list[float]] = {k: [] for k in VARIANTS}
        errors, low_errors = [], []
        for seg in segments:
            a = seg.stems[stem]
            if np.sqrt(np.mean(np.square(a))) < 1e-4:
                continue
            n = len(a)
            x = torch.tensor(np.pad(a, (0, (-n) % vae.hop)), dtype=torch.float32)[None, None]
            out, err, low_err = variants(vae, x)
            errors.append(err)
            if low_err is not None:
                low_errors.append(low_err)
            ref = transcribe(a)
            for k, y in out.items():
                f1s[k].append(note_f1(ref, transcribe(y[:n])))
        if not errors:
            print(f"{stem}: no sounding segment")
            continue
        e = np.concatenate(errors)
        hz = np.median(e) / (2 * math.pi) * vae.cfg.sample_rate / vae.hop
        print(f"{stem} ({len(errors)} segments): note F1 "
              + ", ".join(f"{k} {np.mean(v):.2f}" for k, v in f1s.items())
              + f"; IF deviation error at {len(e)} steady strong peaks: median {np.median(e):.3f} rad "
                f"({hz:.2f} Hz), over 0.5 rad {np.mean(e > 0.5):.2f}")
        if low_errors:
            e = np.concatenate(low_errors)
            hz = np.median(e) / (2 * math.pi) * vae.cfg.sample_rate / vae.hop
            print(f"  low-band head (n_fft {vae.cfg.low_n_fft}, to {vae.cfg.low_crossover[1]:g} Hz): IF deviation "
                  f"error at {len(e)} steady strong peaks: median {np.median(e):.3f} rad ({hz:.2f} Hz), "
                  f"over 0.5 rad {np.mean(e > 0.5):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
