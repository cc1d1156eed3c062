"""Validation EDM loss of diffusion checkpoints on the same windows and the same noise.

    python scripts/val_loss.py --latents ~/.cache/msldm/data/mix-latents --batches 24 \
        msldm/assets/cpu/diffusion.safetensors ~/.cache/msldm/runs/denoiser-cpu-plays/diffusion.safetensors

The windows are the latent folder's validation split under the training filter
(`--min-frame-share 0.6` of `scripts/train_denoiser_cpu.sh`), one window per 256 frames,
batches of 8 drawn at a fixed stride; batch b uses noise seed 1000 + b for every checkpoint,
so two checkpoints are compared on identical inputs (a paired comparison; unlike the
training log's validation, which scores the raw weights, this scores what was exported:
the EMA weights). Each checkpoint is normalised with the folder's `stats.json`.

`--given drums,piano` scores only the other stems' positions with those stems given: noised
for every model (imputation's Eq. 5), clean as well for a conditional one (`cpu_given`).
`--sigmas 0.5,2` scores at those noise levels only (one line each) instead of drawing them;
`--blind` hides the clean given part from a conditional model (zeros in its second input):
the difference to the same run without it is what the model reads there. `--given-noise 0.3`
shows a joint model the given part at 0.3 x sigma (training's `--given-noise`, the sampler
field `given_noise`); its difference to the same run at 1 is what the less noisy stems are worth.
"""

from __future__ import annotations

import argparse

import torch

from msldm.checkpoint import load_diffusion
from msldm.data.latents import LatentChunks, load_stats
from msldm.data.slakh import ActivityFilter
from msldm.edm import edm_loss


class _Blind(torch.nn.Module):
    """A conditional denoiser shown nothing through its second input."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model, self.cfg = model, model.cfg

    def forward(self, x, sigma, given=None, mask=None):
        return self.model(x, sigma)



def val_loss(checkpoint: str, chunks: LatentChunks, stats: dict[str, torch.Tensor], batches: int,
             batch: int = 8, given: tuple[str, ...] = (), sigma: float | None = None,
             blind: bool = False, given_noise: float | None = None) -> float:
    model = load_diffusion(checkpoint)[0]
    if blind:
        model = _Blind(model)
    d = model.cfg
    unknown = set(given) - set(d.stems)
    if unknown:
        raise SystemExit(f"--given: {sorted(unknown)} not among the model's stems {list(d.stems)}")
    mask = None
    if given:
        mask = torch.tensor([float(s in given) for s in d.stems]).repeat_interleave(d.latent_dim)[None, :, None]
    mean, std = stats["latent_mean"][None, None, :, None], stats["latent_std"][None, None, :, None]
    total = 0.0
    with torch.no_grad():
        for b in range(batches):
            z = torch.stack([chunks[(b * batch + i) * 7 % len(chunks)] for i in range(batch)])
            z = ((z - mean) / std).reshape(batch, -1, z.shape[-1])
            total += float(edm_loss(model, z, torch.Generator().manual_seed(1000 + b), mask=mask, sigma=sigma,
                                    given_noise=given_noise))
    return total / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latents", required=True)
    parser.add_argument("--batches", type=int, default=24)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--min-frame-share", type=float, default=0.6)
    parser.add_argument("--given", default="", help="comma-separated stems given (e.g. drums,piano)")
    parser.add_argument("--sigmas", default="", help="comma-separated fixed noise levels (default: drawn)")
    parser.add_argument("--blind", action="store_true", help="a conditional model without its clean input")
    parser.add_argument("--given-noise", type=float, default=None,
                        help="a joint model shown the given part at this share of sigma (default 1)")
    parser.add_argument("checkpoints", nargs="+")
    args = parser.parse_args()
    given = tuple(s for s in args.given.split(",") if s)
    if args.given_noise is not None and not given:
        parser.error("--given-noise scores the given part's noise: name the given stems with --given")
    if args.given_noise is not None and not 0.0 <= args.given_noise <= 1.0:
        parser.error(f"--given-noise must be in [0, 1], got {args.given_noise}")
    torch.set_num_threads(1)
    chunks = LatentChunks(args.latents, "validation", args.window,
                          activity=ActivityFilter(threshold=1e-3, min_frame_share=args.min_frame_share))
    stats = load_stats(args.latents)
    sigmas = [float(s) for s in args.sigmas.split(",") if s] or [None]
    for path in args.checkpoints:
        for sigma in sigmas:
            loss = val_loss(path, chunks, stats, args.batches, given=given, sigma=sigma, blind=args.blind,
                            given_noise=args.given_noise)
            at = "" if sigma is None else f", sigma {sigma:g}"
            print(f"{path}: {loss:.4f} ({len(chunks)} windows{', given ' + '+'.join(given) if given else ''}"
                  f"{at}{', blind' if args.blind else ''}"
                  f"{'' if args.given_noise is None else f', given noise {args.given_noise:g}'})")


if __name__ == "__main__":
    main()
