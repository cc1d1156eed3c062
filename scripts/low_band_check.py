"""The low-band head of the spectral SourceVAE (`VAEConfig.low_n_fft`): two figures of
`docs/eval/spectral-vae-reconstruction.md`, "A low-band head".

1. The synthesis rule alone (no network): a low note with two harmonics, resynthesised from
   its true magnitudes and instantaneous frequencies through the main grid (n_fft 1280) and
   through the main grid plus a 2560 low band; stray energy below 600 Hz away from the
   partials, in dB re the partials (the original's own for reference).
2. With `--vae CKPT` (a VAE with a gate): the gate on the sounding frames of validation stems,
   per stem (median, 10th and 90th percentile; 0 = the short window, 1 = the long one).

    python scripts/low_band_check.py [--vae CKPT --data ~/.cache/msldm/data/multi --n 8]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from msldm.checkpoint import load_vae  # noqa: E402
from msldm.config import get_preset  # noqa: E402
from msldm.spectral_vae import SpectralVAE  # noqa: E402

SR = 22050


def stray_db(y: np.ndarray, f0: float) -> float:
    """Energy below 600 Hz more than 4 Hz from the first three harmonics of f0, in dB of the
    energy at them (the middle of `y`, Hann window)."""
    seg = y[12000:-12000]
    power = np.abs(np.fft.rfft(seg * np.hanning(len(seg)))) ** 2
    freqs = np.fft.rfftfreq(len(seg), 1 / SR)
    near = np.zeros_like(freqs, dtype=bool)
    for h in (1, 2, 3):
        near |= np.abs(freqs - h * f0) < 4
    band = freqs < 600
    return 10 * math.log10(power[band & ~near].sum() / power[band & near].sum())


def true_spectra(vae: SpectralVAE, x: torch.Tensor) -> dict:
    """What `vae.synthesize` takes, made from `x [1, 1, N]`'s own magnitudes and instantaneous
    frequencies (both heads' grids where it has two), as a perfect decoder would predict."""
    logmag, cos_dev, sin_dev = vae.features(x)
    cos, sin = vae.phase_from_deviation(torch.atan2(sin_dev, cos_dev), logmag)
    spec = {"logmag": logmag, "cos": cos, "sin": sin}
    if vae.low_bins:
        low_logmag, low_cos, low_sin = vae.low_features(x)
        lc, ls = vae.low_phase_from_deviation(torch.atan2(low_sin, low_cos), low_logmag)
        spec["low"] = {"logmag": low_logmag, "cos": lc, "sin": ls}
    return spec


def resynthesise(vae: SpectralVAE, x: torch.Tensor) -> np.ndarray:
    """`x` through the decoder's synthesis from its own true spectra (`true_spectra`)."""
    return vae.synthesize(true_spectra(vae, x))[0, 0].numpy()


def synthesis_rule() -> None:
    base = dataclasses.replace(get_preset("tiny_spectral").vae, n_fft=1280)
    main_only = SpectralVAE(base).double()
    with_low = SpectralVAE(dataclasses.replace(base, low_n_fft=2560)).double()
    t = torch.arange(200 * 320, dtype=torch.float64) / SR
    print("| note | stray energy, n_fft 1280 | with the 2560 low band | original |\n|---|---|---|---|")
    for name, f0 in (("E1", 41.2), ("A1", 55.0), ("D2", 73.4)):
        x = sum(a * torch.sin(2 * math.pi * h * f0 * t) for h, a in ((1, 0.3), (2, 0.2), (3, 0.1)))[None, None]
        print(f"| {name} ({f0:g} Hz) | {stray_db(resynthesise(main_only, x), f0):.1f} dB | "
              f"{stray_db(resynthesise(with_low, x), f0):.1f} dB | {stray_db(x[0, 0].numpy(), f0):.1f} dB |")


def gate_stats(ckpt: str, data: str, n: int) -> None:
    vae = load_vae(ckpt)[0]
    if not vae.cfg.low_gate:
        raise SystemExit(f"{ckpt} has no low-band gate (VAEConfig.low_gate)")
    print("| stem | gate on sounding frames: median | 10th pct | 90th pct |\n|---|---|---|---|")
    for stem in ("bass", "drums", "guitar", "piano"):
        gates = []
        for f in sorted(Path(data, "validation").glob(f"*/{stem}.wav"))[:n]:
            x, _ = sf.read(f, dtype="float32")
            x = x[: SR * 8]
            x = x[: len(x) // vae.hop * vae.hop]
            if np.abs(x).max() < 1e-3:
                continue
            with torch.no_grad():
                g = vae.decode_spectrum(vae.encode(torch.from_numpy(x)[None, None])[0])["low"]["gate"][0, 0].numpy()
            rms = np.sqrt((x.reshape(-1, vae.hop) ** 2).mean(axis=1))[: len(g)]
            gates.append(g[rms > 0.01])
        if not gates:
            raise SystemExit(f"no sounding {stem} stem in {Path(data, 'validation')}")
        g = np.concatenate(gates)
        print(f"| {stem} | {np.median(g):.2f} | {np.percentile(g, 10):.2f} | {np.percentile(g, 90):.2f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vae", default=None, help="a VAE checkpoint with a low-band gate")
    ap.add_argument("--data", default=str(Path.home() / ".cache/msldm/data/multi"))
    ap.add_argument("--n", type=int, default=8, help="validation tracks per stem")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    synthesis_rule()
    if args.vae:
        gate_stats(args.vae, args.data, args.n)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
