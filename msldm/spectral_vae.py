"""Spectral SourceVAE: encoder and decoder at the latent frame rate, around an in-graph STFT.

Same interface as the DAC-style `msldm.vae.SourceVAE` (C = 80 channels, hop D = 320 at
22050 Hz, Gaussian posterior; `encode`, `decode`, `forward`), so the denoiser, the bundle
and the server do not change. It is sized to train on a CPU: every layer runs at the frame
rate (69 Hz), none at the sample rate.

Encoder: an STFT (`msldm.stft.make_stft`: Hann, n_fft, hop D, frame t centred on hop block t) -> per bin the log
magnitude and the unit phasor of the phase advance since the previous frame, less the bin
centre's advance (the instantaneous-frequency deviation) -> a 1x1 conv -> ConvNeXt blocks ->
mean and log-variance `[B, C, T]`.

Decoder: ConvNeXt blocks -> per bin a log magnitude and a phase term -> complex spectrum ->
the inverse STFT. The phase (`VAEConfig.phase`):
- ``if``: the head predicts each bin's instantaneous-frequency deviation d in (-pi, pi); the
  phase is the running sum over frames of (bin-centre advance + d), so a held partial keeps
  its frequency by construction and frames never jump in phase (no frame-rate comb).
- ``if_lock``: as ``if``, then identity-style phase locking (after Laroche & Dolson's phase
  vocoder): each bin takes the phase of the magnitude-weighted phasor sum of itself and its
  neighbours, with the alternating sign of a Hann main lobe removed, so the bins of one
  partial stay coherent with each other.
- ``free``: the head predicts a 2-vector per bin whose direction is the phase (Vocos);
  trained with APNet-style phase losses (`msldm.spectral_losses`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from msldm.config import VAEConfig
from msldm.stft import bin_advance, make_stft
from msldm.vae import LOGVAR_MAX, LOGVAR_MIN

__all__ = ["SpectralVAE", "ConvNeXtBlock", "PHASES", "LOG_EPS"]

PHASES = ("if", "if_lock", "free")
LOG_EPS = 1e-2
"""Magnitudes are compared and predicted as log(|X| + LOG_EPS)."""
TWO_PI = 2.0 * math.pi
LOGMAG_MAX = 9.0  # exp(9) ~ 8100, above any bin of a full-scale signal with n_fft 1280


class ConvNeXtBlock(nn.Module):
    """Depthwise conv (k=7) -> LayerNorm over channels -> 1x1 (x3) -> GELU -> 1x1, scaled residual.
    `[B, W, T] -> [B, W, T]` (ConvNeXt / Vocos)."""

    def __init__(self, width: int, expansion: int = 3, layer_scale: float = 1e-2) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(width, width, 7, padding=3, groups=width)
        self.norm = ChannelNorm(width)
        self.pw1 = nn.Conv1d(width, expansion * width, 1)
        self.pw2 = nn.Conv1d(expansion * width, width, 1)
        self.gamma = nn.Parameter(torch.full((1, width, 1), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dwconv(x)
        h = self.norm(h)
        h = self.pw2(F.gelu(self.pw1(h)))
        return x + self.gamma * h


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of each frame of `[B, W, T]` (no transposes in the graph)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, width, 1))
        self.bias = nn.Parameter(torch.zeros(1, width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = (x - mean).pow(2).mean(dim=1, keepdim=True)
        return (x - mean) / torch.sqrt(var + 1e-6) * self.weight + self.bias


def _trunk(in_channels: int, width: int, blocks: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(in_channels, width, 3, padding=1),
                         *[ConvNeXtBlock(width) for _ in range(blocks)],
                         nn.GELU(), nn.Conv1d(width, out_channels, 1))


def local_cumsum_grad(x: torch.Tensor, frames: int) -> torch.Tensor:
    """`torch.cumsum(x, -1)` in value; in gradient, element t depends only on x[..., t-frames+1 : t+1].

    The running phase sum of the ``if`` decoders makes every frame's phase depend on every
    earlier deviation; a loss on the audio would then push each deviation by the errors of
    all later frames (harmonics glided in a prototype trained so). Truncated, a deviation
    answers for the few overlapping frames it shapes."""
    total = torch.cumsum(x.detach(), dim=-1)
    live = x - x.detach()  # zero in value, identity in gradient
    local = live
    for j in range(1, frames):
        local = local + F.pad(live, (j, 0))[..., : x.shape[-1]]
    return total + local


class SpectralVAE(nn.Module):
    """Spectral SourceVAE (module docstring): `encode`, `decode`, `forward`, `decode_spectrum`."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        if cfg.phase not in PHASES:
            raise ValueError(f"unknown phase {cfg.phase!r}; choose from {PHASES}")
        if cfg.n_fft < cfg.hop or (cfg.n_fft - cfg.hop) % 2:
            raise ValueError("n_fft must be >= hop, with n_fft - hop even")
        self.cfg, self.hop, self.latent_dim = cfg, cfg.hop, cfg.latent_dim
        self.bins = cfg.n_fft // 2 + 1
        pad = (cfg.n_fft - cfg.hop) // 2
        self.stft, self.istft = make_stft(cfg.n_fft, cfg.hop, pad)  # factorised DFTs (n_fft = k * hop)
        self.encoder = _trunk(3 * self.bins, cfg.encoder_dim, cfg.encoder_blocks, 2 * cfg.latent_dim)
        heads = 3 if cfg.phase == "free" else 2  # log magnitude + deviation, or + a 2-vector
        self.decoder = _trunk(cfg.latent_dim, cfg.decoder_dim, cfg.decoder_blocks, heads * self.bins)
        adv = bin_advance(cfg.n_fft, cfg.hop)
        self.register_buffer("advance", adv.float()[None, :, None], persistent=False)  # [1, F, 1]
        sign = torch.ones(self.bins)
        sign[1::2] = -1.0  # (-1)^k: a Hann main lobe alternates sign across bins (frame-start phase)
        self.register_buffer("lobe_sign", sign[None, :, None], persistent=False)  # [1, F, 1]
        lobe = (torch.arange(self.bins) % 2).float() * math.pi  # pi*k mod 2*pi
        self.register_buffer("lobe_phase", lobe[None, :, None], persistent=False)  # [1, F, 1]

    # ------------------------------------------------------------------ analysis
    def features(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`audio [B, 1, T*D]` -> (log magnitude, cos dev, sin dev), each `[B, F, T]`.

        dev is the phase advance since the previous frame less the bin centre's (frame 0
        has none: its phasor is 0)."""
        re, im = self.stft(audio)
        logmag = torch.log(torch.sqrt(re * re + im * im + 1e-12) + LOG_EPS)
        prev_re = F.pad(re, (1, 0))[..., :-1]
        prev_im = F.pad(im, (1, 0))[..., :-1]
        pr, pi = re * prev_re + im * prev_im, im * prev_re - re * prev_im  # z_t * conj(z_{t-1})
        c, s = torch.cos(self.advance), torch.sin(self.advance)
        dr, di = pr * c + pi * s, pi * c - pr * s  # times e^{-i advance}
        norm = torch.sqrt(dr * dr + di * di + 1e-12)
        return logmag, dr / norm, di / norm

    def encode(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior of `audio [B, 1, N]`: `(mean [B, C, T], logvar [B, C, T])`, T = ceil(N/D)."""
        pad = (-audio.shape[-1]) % self.hop
        logmag, cos_dev, sin_dev = self.features(F.pad(audio, (0, pad)))
        moments = self.encoder(torch.cat([logmag, cos_dev, sin_dev], dim=1))  # [B, 2C, T]
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    # ------------------------------------------------------------------ synthesis
    def decode_spectrum(self, z: torch.Tensor, offset: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """`z [B, C, T]` -> {"logmag": [B, F, T], "cos", "sin": [B, F, T] (the synthesis phase),
        "dev": [B, F, T] (``if`` phases: the predicted deviation)}. With `offset [B, F]` (``if``
        phases) frame 0 starts there, and "offset": [B, F, T] holds each frame's phase offset
        (see `phase_from_deviation`); training passes none and skips that work."""
        head = self.decoder(z)  # [B, 2F, T] (free: [B, 3F, T])
        F_ = self.bins
        out = {"logmag": head[:, :F_].clamp(max=LOGMAG_MAX)}
        p = head[:, F_:2 * F_]
        if self.cfg.phase == "free":
            q = head[:, 2 * F_:]
            norm = torch.sqrt(p * p + q * q + 1e-8)
            out.update(cos=p / norm, sin=q / norm)
            return out
        dev = math.pi * torch.tanh(p)
        if offset is None:
            cos, sin = self.phase_from_deviation(dev, out["logmag"])
        else:
            cos, sin, out["offset"] = self.phase_from_deviation(dev, out["logmag"], offset, with_offsets=True)
        out.update(dev=dev, cos=cos, sin=sin)
        return out

    @property
    def carries_phase(self) -> bool:
        """Whether decodes of consecutive windows can continue one another's phase (``if`` phases)."""
        return self.cfg.phase != "free"

    def phase_from_deviation(self, dev: torch.Tensor, logmag: torch.Tensor,
                             offset: torch.Tensor | None = None, with_offsets: bool = False,
                             grad_frames: int = 0):
        """Synthesis phasors (cos, sin) `[B, F, T]` of the ``if`` phases: frame 0 starts at pi*k
        (the phases of a Hann main lobe alternate by pi across bins with frame-start phase)
        plus `offset [B, F]` (default 0), then the running sum over frames of (bin-centre
        advance + `dev`); phase-locked across bins for ``if_lock``.

        With `with_offsets`, also returns each frame's offset `[B, F, T]` in [0, 2 pi): its raw
        phase less pi*k, so a decode that starts at frame t with that offset continues this one
        (the server decodes overlapping windows so, and their crossfades stay in phase).

        `grad_frames` > 0 (training): the same values, but a gradient reaching frame t's phase
        flows back only to the deviations of frames t - grad_frames + 1 .. t, not through the
        whole running sum (`local_cumsum_grad`)."""
        first = self.lobe_phase.expand_as(dev[..., :1])
        if offset is not None:
            first = first + offset[..., None]
        steps = torch.cat([first, (self.advance + dev)[..., 1:]], dim=-1)
        phase = torch.cumsum(steps, dim=-1) if grad_frames <= 0 else local_cumsum_grad(steps, grad_frames)
        cos, sin = torch.cos(phase), torch.sin(phase)
        if self.cfg.phase == "if_lock":
            cos, sin = self._lock(cos, sin, torch.exp(logmag))
        if not with_offsets:
            return cos, sin
        rel = phase - self.lobe_phase
        return cos, sin, rel - TWO_PI * torch.floor(rel / TWO_PI)

    def _lock(self, cos: torch.Tensor, sin: torch.Tensor, mag: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Phase locking: each bin takes the direction of sum_{j=-1..1} m_{k+j} u_{k+j} (-1)^{j}."""
        wr, wi = mag * cos * self.lobe_sign, mag * sin * self.lobe_sign  # lobe sign removed
        sr = wr + F.pad(wr, (0, 0, 1, 0))[:, :-1] + F.pad(wr, (0, 0, 0, 1))[:, 1:]
        si = wi + F.pad(wi, (0, 0, 1, 0))[:, :-1] + F.pad(wi, (0, 0, 0, 1))[:, 1:]
        norm = torch.sqrt(sr * sr + si * si + 1e-12)
        return sr / norm * self.lobe_sign, si / norm * self.lobe_sign

    def synthesize(self, spec: dict[str, torch.Tensor]) -> torch.Tensor:
        """The decoded spectrum -> audio `[B, 1, T*D]`."""
        mag = torch.clamp(torch.exp(spec["logmag"]) - LOG_EPS, min=0.0)
        return self.istft(mag * spec["cos"], mag * spec["sin"])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """`z [B, C, T] -> audio [B, 1, T*D]`."""
        return self.synthesize(self.decode_spectrum(z))

    def decode_carry(self, z: torch.Tensor, offset: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`z [B, C, T]`, `offset [B, F]` -> (audio `[B, 1, T*D]`, offsets `[B, F, T]`): a decode
        whose frame 0 continues the frame of an earlier decode that returned `offset` there
        (``if`` phases only, see `carries_phase`)."""
        if not self.carries_phase:
            raise ValueError("phase carry needs an 'if' or 'if_lock' decoder phase")
        spec = self.decode_spectrum(z, offset)
        return self.synthesize(spec), spec["offset"]

    def forward(self, audio: torch.Tensor, sample_posterior: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruct `audio [B, 1, N]`: `(recon [B, 1, N], mean [B, C, T], logvar [B, C, T])`."""
        mean, logvar = self.encode(audio)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean) if sample_posterior else mean
        return self.decode(z)[..., : audio.shape[-1]], mean, logvar

    def fold_weight_norm(self) -> int:
        """No weight norm here: nothing to fold (the export calls it on every VAE). Returns 0."""
        return 0
