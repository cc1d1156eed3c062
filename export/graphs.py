"""The three exported graphs as torch modules (what `torch.onnx.export` traces).

- `EncoderGraph`: audio `[B, 1, N]` (N a multiple of D) -> normalised posterior mean
  `(mu_z - latent_mean) / latent_std` `[B, C, N/D]`.
- `DenoiserGraph`: `x [B, K*C, T]`, `sigma [B]` -> D(x; sigma) `[B, K*C, T]`, the EDM
  preconditioning (Table 1 of Karras et al. 2022) inside.
- `DecoderGraph`: normalised latent `[B, C, T]` -> audio `[B, 1, T*D]`; for a spectral VAE
  with an instantaneous-frequency phase, `CarryDecoderGraph` also takes the phase offset of
  frame 0 and returns every frame's, so overlapping windows decode in phase.

Both VAE graphs call the VAE's own `encode` / `decode`, so either kind (`msldm.vae_models`)
exports: the spectral VAE's STFT and inverse STFT are convolutions with fixed bases.

Weight norm is folded into plain weights (`fold_weight_norm`) before the wrappers are built.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from msldm.edm import EDMDenoiser



class EncoderGraph(nn.Module):
    """`audio [B, 1, N] -> latent [B, C, N/D]` (posterior mean, normalised)."""

    def __init__(self, vae: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.vae = vae
        self.register_buffer("scale", (1.0 / std.float()).reshape(1, -1, 1))  # [1, C, 1]
        self.register_buffer("offset", (-mean.float() / std.float()).reshape(1, -1, 1))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        mu, _ = self.vae.encode(audio)  # [B, C, T]; the log-variance is not needed
        return mu * self.scale + self.offset


class DecoderGraph(nn.Module):
    """`latent [B, C, T] -> audio [B, 1, T*D]` (de-normalises first)."""

    def __init__(self, vae: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.vae = vae
        self.register_buffer("std", std.float().reshape(1, -1, 1))  # [1, C, 1]
        self.register_buffer("mean", mean.float().reshape(1, -1, 1))

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent * self.std + self.mean)


class CarryDecoderGraph(DecoderGraph):
    """`latent [B, C, T], phase_offset [B, F] -> audio [B, 1, T*D], phase_offsets [B, F, T]`:
    the decoder of a SourceVAE whose phase carries across windows (`carries_phase`): frame 0
    starts at `phase_offset`, and frame t's offset is returned, so the decode of a later,
    overlapping window continues this one in phase (a zero offset is the plain decode)."""

    def forward(self, latent: torch.Tensor, offset: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vae.decode_carry(latent * self.std + self.mean, offset)


class DenoiserGraph(nn.Module):
    """`x [B, K*C, T], sigma [B] -> denoised [B, K*C, T]`: `EDMDenoiser` as is (a conditional
    one also takes `given` and `mask`, both `[B, K*C, T]`)."""

    def __init__(self, denoiser: EDMDenoiser) -> None:
        super().__init__()
        self.denoiser = denoiser

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, given: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.denoiser(x, sigma, given, mask)


@dataclass
class GraphModules:
    """The three wrappers, in eval mode, weight norm folded, and the models they wrap
    (`vae`, `edm`, `stats`: what a `TorchPipeline` over exactly these weights needs)."""

    encoder: EncoderGraph
    denoiser: DenoiserGraph
    decoder: DecoderGraph  # a CarryDecoderGraph when the VAE carries phase
    vae: nn.Module  # a SourceVAE of either kind
    edm: EDMDenoiser
    stats: dict[str, torch.Tensor]


def build_graph_modules(vae: nn.Module, denoiser: EDMDenoiser,
                        stats: dict[str, torch.Tensor]) -> GraphModules:
    """Fold weight norm (in place: `vae` is consumed; a deep copy would share the
    parametrized class with the original, and folding deletes the property from it) and wrap."""
    vae = vae.float().eval()
    vae.fold_weight_norm()
    den = denoiser.float().eval()
    mean, std = stats["latent_mean"], stats["latent_std"]
    decoder = (CarryDecoderGraph if getattr(vae, "carries_phase", False) else DecoderGraph)(vae, mean, std)
    return GraphModules(EncoderGraph(vae, mean, std).eval(), DenoiserGraph(den).eval(),
                        decoder.eval(), vae, den,
                        {"latent_mean": mean.float(), "latent_std": std.float()})


def round_weights_to_half(modules: GraphModules, min_numel: int) -> int:
    """Round every parameter / buffer with >= `min_numel` elements to the nearest fp16 value
    (kept as fp32), in place, so that storing them as fp16 afterwards is lossless.
    Returns the number of tensors rounded."""
    n = 0
    for graph in (modules.encoder, modules.denoiser, modules.decoder):
        for t in list(graph.parameters()) + list(graph.buffers()):
            if t.is_floating_point() and t.numel() >= min_numel:
                with torch.no_grad():
                    t.copy_(t.half().float())
                n += 1
    return n
