"""How loud a SourceVAE gives a stem back: per stem, the RMS level of the reconstruction (posterior
mean, decoded) against the original's, in dB, and the median of the same over 46 ms frames
(frames of the original above -60 dBFS), over the first seconds of a split's tracks (silent stems
skipped). A decoder that regresses log magnitudes under a running phase comes out quiet
(docs/eval/spectral-vae-reconstruction.md, "The level a decoder gives back").

    python scripts/vae_level.py msldm/assets/vae-spectral/vae.safetensors \
        --data ~/.cache/msldm/data/multi --split test --tracks 12 --seconds 8
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from latent_shift import STEMS, corpus_parser, corpus_tracks, read_stem  # noqa: E402
from msldm.checkpoint import load_vae  # noqa: E402
from msldm.eval.dsp import frame_rms_db, level_db  # noqa: E402

FRAME = 1024


def offsets(vae, tracks: list[Path], seconds: float) -> dict[str, dict[str, list[float]]]:
    """stem -> {"rms": [dB per track], "frames": [median frame dB per track]}, the reconstruction's
    level less the original's, one entry per track where the stem sounds."""
    out: dict[str, dict[str, list[float]]] = {s: {"rms": [], "frames": []} for s in STEMS}
    for track in tracks:
        for stem in STEMS:
            x = read_stem(track, stem, seconds)
            if x is None or len(x) < max(FRAME, vae.hop):
                continue
            x = x[: len(x) // vae.hop * vae.hop]
            with torch.no_grad():
                y = vae.decode(vae.encode(torch.from_numpy(x)[None, None])[0])[0, 0, : len(x)].numpy()
            out[stem]["rms"].append(level_db(y) - level_db(x))
            fx, fy = frame_rms_db(x, FRAME, FRAME), frame_rms_db(y, FRAME, FRAME)
            keep = fx > -60.0
            if keep.any():
                out[stem]["frames"].append(float(np.median(fy[keep] - fx[keep])))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = corpus_parser(__doc__)
    ap.add_argument("vae", type=Path, nargs="+", help="SourceVAE checkpoints")
    args = ap.parse_args(argv)
    tracks = corpus_tracks(args)
    torch.set_num_threads(1)
    for path in args.vae:
        vae = load_vae(path)[0].eval().float()
        parts = []
        for stem, v in offsets(vae, tracks, args.seconds).items():
            parts.append(f"{stem} {np.mean(v['rms']):+.2f} ({np.mean(v['frames']):+.2f})" if v["rms"] else f"{stem} silent")
        print(f"{path}: " + ", ".join(parts) + "  [dB: clip RMS (median frame)]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
