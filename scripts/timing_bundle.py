"""A bundle for timing a SourceVAE whose latents differ from the shipped denoiser's (a VAE that
awaits its denoiser): the shipped denoiser paired with that VAE (`scripts/pair_denoiser.py`), so
`msldm export` takes the pair. Its encoder and decoder graphs are the VAE's own; whether the
denoiser reads that VAE's latents is for the generation measures, not this bundle, to say. Then
time it:

    python scripts/timing_bundle.py VAE /tmp/timing-bundle
    python scripts/time_vae_graphs.py msldm/assets/bundle /tmp/timing-bundle
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pair_denoiser import pair  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[1] / "msldm/assets/cpu/diffusion.safetensors"  # from any folder


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        raise SystemExit(__doc__)
    vae_path, out = argv
    with tempfile.TemporaryDirectory() as tmp:
        paired = pair(SHIPPED, vae_path, Path(tmp) / "diffusion.safetensors", note="timing only")
        subprocess.run([sys.executable, "-m", "msldm", "export", "--vae", str(vae_path), "--diffusion",
                        str(paired), "--out", str(out), "--half-storage", "always"], check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
