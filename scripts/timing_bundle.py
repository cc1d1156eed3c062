"""A bundle for TIMING ONLY of a SourceVAE whose latents differ from the shipped denoiser's (a
VAE that awaits its denoiser, e.g. msldm/assets/vae-spectral-next): the shipped denoiser's
weights relabelled with that VAE's config, so `msldm export` takes the pair. Its encoder and
decoder graphs are the VAE's own; what its denoiser generates means nothing. Then time it:

    python scripts/timing_bundle.py msldm/assets/vae-spectral-next/vae.safetensors /tmp/timing-bundle
    python scripts/time_vae_graphs.py msldm/assets/bundle /tmp/timing-bundle
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from msldm.checkpoint import load_vae, read_checkpoint, save_checkpoint  # noqa: E402
from msldm.edm import EDMDenoiser  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[1] / "msldm/assets/cpu/diffusion.safetensors"  # from any folder


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        raise SystemExit(__doc__)
    vae_path, out = argv
    _, vae_cfg, _ = load_vae(vae_path)
    cfg, state, extra, _ = read_checkpoint(SHIPPED, "diffusion")
    cfg = dataclasses.replace(cfg, vae=vae_cfg.vae, vae_loss=vae_cfg.vae_loss)
    den = EDMDenoiser(cfg.diffusion)
    den.load_state_dict({k: v.float() for k, v in state.items()})
    with tempfile.TemporaryDirectory() as tmp:
        relabelled = save_checkpoint(Path(tmp) / "diffusion.safetensors", "diffusion", cfg, den,
                                     extra={k: v.float() for k, v in extra.items()},
                                     meta={"provenance": "timing only: the shipped denoiser relabelled"})
        subprocess.run([sys.executable, "-m", "msldm", "export", "--vae", str(vae_path), "--diffusion",
                        str(relabelled), "--out", str(out), "--half-storage", "always"], check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
