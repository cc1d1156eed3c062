"""How far another SourceVAE's latents are from the shipped one's: per stem, the RMS of the
difference of the posterior means relative to the shipped latents' RMS, over the first seconds
of a split's tracks (silent stems skipped). A large shift says the denoiser may need training on
the new latents, which only generation measures decide (docs/eval/model-history.md,
"Twenty-fifth session": 0.17-0.19 for the VAE shipped since the twenty-seventh session against
the one before it, which the denoiser before read nearly as well: "Twenty-seventh session").

    python scripts/latent_shift.py NEW_VAE.safetensors \
        --data ~/.cache/msldm/data/multi --split test --tracks 12 --seconds 8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from msldm.checkpoint import load_vae  # noqa: E402
from msldm.data.slakh import find_tracks  # noqa: E402

STEMS = ("bass", "drums", "guitar", "piano")


def read_stem(track: Path, stem: str, seconds: float) -> np.ndarray | None:
    """The first `seconds` of a track's stem, mono float32; None where it is silent there (also
    `scripts/vae_level.py`)."""
    x, sr = sf.read(track / f"{stem}.wav", dtype="float32", always_2d=True)
    x = x.mean(1)[: int(sr * seconds)]
    return x if len(x) and float(np.abs(x).max()) >= 1e-3 else None


def shift(vae_a, vae_b, tracks: list[Path], seconds: float) -> dict[str, list[float]]:
    """stem -> relative RMS difference of the two VAEs' posterior means, one per sounding track."""
    out: dict[str, list[float]] = {s: [] for s in STEMS}
    for track in tracks:
        for stem in STEMS:
            audio = read_stem(track, stem, seconds)
            if audio is None:
                continue
            x = torch.from_numpy(audio)[None, None]
            with torch.no_grad():
                a, b = vae_a.encode(x)[0], vae_b.encode(x)[0]
            out[stem].append(float(((a - b).pow(2).mean() / a.pow(2).mean()).sqrt()))
    return out


def corpus_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options of a script that runs SourceVAEs over the first seconds of a split's tracks
    (also `scripts/vae_level.py`): --data, --split, --tracks, --seconds."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="a corpus folder (split/Track*/stem.wav)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--tracks", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=8.0)
    return ap


def corpus_tracks(args: argparse.Namespace) -> list[Path]:
    """The first `args.tracks` track folders of the split; SystemExit where there are none."""
    try:
        tracks = find_tracks(args.data, args.split)[: args.tracks]
    except FileNotFoundError:
        tracks = []
    if not tracks:
        raise SystemExit(f"no Track* folders in {args.data / args.split}")
    return tracks


def main(argv: list[str] | None = None) -> int:
    ap = corpus_parser(__doc__)
    ap.add_argument("vae", type=Path, help="the other SourceVAE checkpoint")
    ap.add_argument("--base", type=Path, default=ROOT / "msldm/assets/vae-spectral/vae.safetensors")
    args = ap.parse_args(argv)
    tracks = corpus_tracks(args)
    torch.set_num_threads(1)
    a, b = (load_vae(p)[0].eval().float() for p in (args.base, args.vae))
    for stem, values in shift(a, b, tracks, args.seconds).items():
        print(f"{stem}: {np.mean(values):.3f} over {len(values)} tracks" if values else f"{stem}: silent throughout")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
