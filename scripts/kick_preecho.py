"""How much a SourceVAE's round trip smears kick drums ahead of their attack (pre-echo).

A long STFT window in the decoder (the low-band head, `VAEConfig.low_n_fft`) spreads a kick's
energy over half a window before it. For each drum stem this finds the kicks (peaks of the
envelope below 200 Hz above 0.3 of the stem's largest, 54 ms apart at least) and measures the
level of that band 40-10 ms before each peak relative to the peak, in the original and in
each VAE's reconstruction; prints the median over all kicks (lower is sharper).

    python scripts/kick_preecho.py --vae msldm/assets/vae-spectral/vae.safetensors CKPT ... \
        [--data ~/.cache/msldm/data/multi --split validation --n 10 --seconds 8]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from msldm.checkpoint import load_vae  # noqa: E402

BAND_HZ = 200.0
ENV_HOP = 110  # samples of the RMS envelope's moving window (5 ms)


def low_envelope(x: np.ndarray, sr: int) -> np.ndarray:
    """RMS envelope of `x` below BAND_HZ (an FFT brick-wall filter, a 5 ms moving window)."""
    spec = np.fft.rfft(x)
    spec[np.fft.rfftfreq(len(x), 1 / sr) > BAND_HZ] = 0
    y = np.fft.irfft(spec, len(x))
    return np.sqrt(np.convolve(y ** 2, np.ones(ENV_HOP) / ENV_HOP, "same"))


def kick_peaks(env: np.ndarray, sr: int) -> list[int]:
    """Samples of the envelope's local maxima above 0.3 of its largest, 54 ms apart at least."""
    half, thr = int(0.027 * sr), 0.3 * env.max()
    return [i for i in range(max(half, int(0.045 * sr)), len(env) - half)
            if env[i] > thr and env[i] == env[i - half:i + half].max()]


def pre_echo_db(env: np.ndarray, peaks: list[int], sr: int) -> list[float]:
    """Per kick: mean envelope 40-10 ms before the peak over the peak's level, in dB."""
    out = []
    for p in peaks:
        pre = env[p - int(0.040 * sr):p - int(0.010 * sr)].mean()
        out.append(20 * np.log10(pre / (env[p - 200:p + 200].max() + 1e-12) + 1e-9))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vae", nargs="+", required=True, help="VAE checkpoints to compare")
    ap.add_argument("--data", default=str(Path.home() / ".cache/msldm/data/multi"))
    ap.add_argument("--split", default="validation")
    ap.add_argument("--n", type=int, default=10, help="tracks (the first n with sounding drums)")
    ap.add_argument("--seconds", type=float, default=8.0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    vaes = {p: load_vae(p)[0] for p in args.vae}
    hop = next(iter(vaes.values())).hop
    results: dict[str, list[float]] = {"original": [], **{p: [] for p in vaes}}
    used = 0
    for f in sorted(Path(args.data, args.split).glob("*/drums.wav")):
        if used == args.n:
            break
        x, sr = sf.read(f, dtype="float32")
        x = x[: int(sr * args.seconds)]
        x = x[: len(x) // hop * hop]
        if np.abs(x).max() < 1e-3:
            continue
        used += 1
        peaks = kick_peaks(low_envelope(x, sr), sr)
        results["original"] += pre_echo_db(low_envelope(x, sr), peaks, sr)
        for p, vae in vaes.items():
            with torch.no_grad():
                y = vae.decode(vae.encode(torch.from_numpy(x)[None, None])[0])[0, 0].numpy()[: len(x)]
            results[p] += pre_echo_db(low_envelope(y, sr), peaks, sr)
    if not used:
        raise SystemExit(f"no sounding drum stem in {Path(args.data, args.split)}")
    print(f"{used} drum stems of {args.seconds:g} s from {args.split}; level below {BAND_HZ:g} Hz "
          "40-10 ms before each kick, dB re the kick (median; lower is sharper)")
    for name, vals in results.items():
        print(f"| {name} | {len(vals)} kicks | {np.median(vals):.1f} dB |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
