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

Low band (`VAEConfig.low_n_fft` > 0, ``if`` phases): at n_fft 1280 the bins are 17 Hz apart,
and the partials of a bass note (41 Hz for E1) fall two or three bins apart, inside one Hann
main lobe, so each bin holds a beating mix of two partials. A second head on the decoder's
last hidden layer predicts the low bins of a longer STFT (same hop, frame t centred on hop
block t), with its own running phase; the audio is the main head's inverse STFT faded out
below the crossover plus the low head's inverse STFT (band-limited, `ConvISTFT(bins=...)`)
faded in, raised-cosine weights summing to one at every frequency. With `low_gate`, a third
head predicts per frame a gate g in (0, 1) that scales the low head's share of the band below
the crossover (the main head takes the rest; the weights still sum to one): a 2560 window
spreads a kick drum's attack over 58 ms before it, and with the gate the decoder can play such
frames through the short window (block switching, as in AAC), sustained bass notes through the
long one. With `encoder_low` the encoder reads the low head's bins at the long window too
(their features beside the main STFT's), so the latents can say which partials a low note has.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from msldm.config import VAEConfig
from msldm.stft import bin_advance, make_stft
from msldm.vae import LOGVAR_MAX, LOGVAR_MIN

__all__ = ["SpectralVAE", "ConvNeXtBlock", "PHASES", "LOG_EPS", "load_with_new_low_head"]

PHASES = ("if", "if_lock", "free")
LOG_EPS = 1e-2
"""Magnitudes are compared and predicted as log(|X| + LOG_EPS)."""
TWO_PI = 2.0 * math.pi
LOW_GATE_INIT = 3.0  # the low-band gate's starting logit: sigmoid(3) = 0.95
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


def low_band_bins(cfg: VAEConfig) -> int:
    """Bins of the low-band head's STFT up to the crossover's upper edge (0 without a head)."""
    if not cfg.low_n_fft:
        return 0
    cfg.check_low_band()
    return int(math.ceil(cfg.low_crossover[1] * cfg.low_n_fft / cfg.sample_rate)) + 1


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
        self.low_bins = low_band_bins(cfg)
        enc_in = 3 * (self.bins + (self.low_bins if cfg.encoder_low else 0))
        self.encoder = _trunk(enc_in, cfg.encoder_dim, cfg.encoder_blocks, 2 * cfg.latent_dim)
        heads = 3 if cfg.phase == "free" else 2  # log magnitude + deviation, or + a 2-vector
        self.decoder = _trunk(cfg.latent_dim, cfg.decoder_dim, cfg.decoder_blocks, heads * self.bins)
        self._grid_buffers("", cfg.n_fft, self.bins)
        if cfg.low_n_fft:
            self._build_low_band(cfg)

    def _grid_buffers(self, prefix: str, n_fft: int, bins: int) -> None:
        """The constants of one STFT grid's running phase: each bin's centre advance per hop,
        the alternating sign of a Hann main lobe, and pi*k."""
        adv = bin_advance(n_fft, self.hop)[:bins]
        self.register_buffer(prefix + "advance", adv.float()[None, :, None], persistent=False)  # [1, F, 1]
        sign = torch.ones(bins)
        sign[1::2] = -1.0  # (-1)^k: a Hann main lobe alternates sign across bins (frame-start phase)
        self.register_buffer(prefix + "lobe_sign", sign[None, :, None], persistent=False)  # [1, F, 1]
        lobe = (torch.arange(bins) % 2).float() * math.pi  # pi*k mod 2*pi
        self.register_buffer(prefix + "lobe_phase", lobe[None, :, None], persistent=False)  # [1, F, 1]

    def _build_low_band(self, cfg: VAEConfig) -> None:
        """The low-band head on the decoder's last hidden layer, its STFT pair, phase constants
        and crossover weights (module docstring, "Low band"); `low_bins` is set (and the config
        checked) by `low_band_bins` before."""
        n_long = cfg.low_n_fft
        lo, hi = cfg.low_crossover
        pad = (n_long - cfg.hop) // 2
        # band-limited pair: the analysis (training targets, `encoder_low`) computes only the low
        # bins, the inverse takes only them
        self.low_stft, self.low_istft = make_stft(n_long, cfg.hop, pad, bins=self.low_bins)
        self.low_head = nn.Conv1d(cfg.decoder_dim, 2 * self.low_bins, 1)
        if cfg.low_gate:  # starts nearly open (0.95 everywhere): the low head plays as without a gate
            self.low_gate = nn.Conv1d(cfg.decoder_dim, 1, 1)
            nn.init.zeros_(self.low_gate.weight)
            nn.init.constant_(self.low_gate.bias, LOW_GATE_INIT)
        self._grid_buffers("low_", n_long, self.low_bins)

        def fade_in_low(freqs: torch.Tensor) -> torch.Tensor:  # 1 below lo, 0 above hi
            x = ((freqs - lo) / (hi - lo)).clamp(0.0, 1.0)
            return 0.5 + 0.5 * torch.cos(math.pi * x)

        f_main = torch.arange(self.bins, dtype=torch.float64) * cfg.sample_rate / cfg.n_fft
        f_low = torch.arange(self.low_bins, dtype=torch.float64) * cfg.sample_rate / n_long
        self.register_buffer("main_gain", (1.0 - fade_in_low(f_main)).float()[None, :, None], persistent=False)
        self.register_buffer("low_gain", fade_in_low(f_low).float()[None, :, None], persistent=False)

    @property
    def carry_bins(self) -> int:
        """Bins of the phase offset a carried decode takes and returns (main + low band)."""
        return self.bins + self.low_bins

    @torch.no_grad()
    def init_low_head(self) -> None:
        """Start the low head from the main head: each low bin's weights interpolated from the
        main head's rows at the same frequency, the log magnitudes raised by log(low_n_fft /
        n_fft) (a longer window sums more samples of a steady partial). A warm start: the
        output is near the main head's alone, and training sharpens it."""
        last = self.decoder[-1]
        F_, L = self.bins, self.low_bins
        pos = torch.arange(L, dtype=torch.float64) * self.cfg.n_fft / self.cfg.low_n_fft
        i0 = pos.floor().long().clamp(max=F_ - 2)
        a = (pos - i0).float()[:, None]
        for part, shift in ((0, math.log(self.cfg.low_n_fft / self.cfg.n_fft)), (1, 0.0)):
            w = last.weight[part * F_:(part + 1) * F_, :, 0]
            b = last.bias[part * F_:(part + 1) * F_]
            self.low_head.weight[part * L:(part + 1) * L, :, 0] = (1 - a) * w[i0] + a * w[i0 + 1]
            self.low_head.bias[part * L:(part + 1) * L] = (1 - a[:, 0]) * b[i0] + a[:, 0] * b[i0 + 1] + shift

    # ------------------------------------------------------------------ analysis
    def features(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`audio [B, 1, T*D]` -> (log magnitude, cos dev, sin dev), each `[B, F, T]`.

        dev is the phase advance since the previous frame less the bin centre's (frame 0
        has none: its phasor is 0)."""
        return self._features(*self.stft(audio), self.advance)

    def low_features(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`features` of the low band at the low head's STFT: each `[B, low_bins, T]`."""
        return self._features(*self.low_stft(audio), self.low_advance)

    @staticmethod
    def _features(re: torch.Tensor, im: torch.Tensor, advance: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logmag = torch.log(torch.sqrt(re * re + im * im + 1e-12) + LOG_EPS)
        prev_re = F.pad(re, (1, 0))[..., :-1]
        prev_im = F.pad(im, (1, 0))[..., :-1]
        pr, pi = re * prev_re + im * prev_im, im * prev_re - re * prev_im  # z_t * conj(z_{t-1})
        c, s = torch.cos(advance), torch.sin(advance)
        dr, di = pr * c + pi * s, pi * c - pr * s  # times e^{-i advance}
        norm = torch.sqrt(dr * dr + di * di + 1e-12)
        return logmag, dr / norm, di / norm

    def encode(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior of `audio [B, 1, N]`: `(mean [B, C, T], logvar [B, C, T])`, T = ceil(N/D)."""
        pad = (-audio.shape[-1]) % self.hop
        audio = F.pad(audio, (0, pad))
        feats = list(self.features(audio))
        if self.cfg.encoder_low:  # the low band at the long window too (`VAEConfig.encoder_low`)
            feats += self.low_features(audio)
        moments = self.encoder(torch.cat(feats, dim=1))  # [B, 2C, T]
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    # ------------------------------------------------------------------ synthesis
    def decode_spectrum(self, z: torch.Tensor, offset: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """`z [B, C, T]` -> {"logmag": [B, F, T], "cos", "sin": [B, F, T] (the synthesis phase),
        "dev": [B, F, T] (``if`` phases: the predicted deviation)}. With `offset [B, F]` (``if``
        phases) frame 0 starts there, and "offset": [B, F, T] holds each frame's phase offset
        (see `phase_from_deviation`); training passes none and skips that work. With a low-band
        head, "low" holds that head's {"logmag", "dev", "cos", "sin"} `[B, low_bins, T]`, and
        `offset` / "offset" run over `carry_bins`: the main head's bins, then the low head's."""
        hidden = self.decoder[:-1](z)
        head = self.decoder[-1](hidden)  # [B, 2F, T] (free: [B, 3F, T])
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
            cos, sin, out["offset"] = self.phase_from_deviation(dev, out["logmag"], offset[:, :F_],
                                                                with_offsets=True)
        out.update(dev=dev, cos=cos, sin=sin)
        if self.low_bins:
            L = self.low_bins
            low_head = self.low_head(hidden)
            low = {"logmag": low_head[:, :L].clamp(max=LOGMAG_MAX), "dev": math.pi * torch.tanh(low_head[:, L:])}
            if self.cfg.low_gate:
                low["gate"] = torch.sigmoid(self.low_gate(hidden))  # [B, 1, T]
            grid = self._low_grid()
            if offset is None:
                low["cos"], low["sin"] = self._phase(low["dev"], low["logmag"], grid)
            else:
                low["cos"], low["sin"], low_off = self._phase(low["dev"], low["logmag"], grid, offset[:, F_:],
                                                              with_offsets=True)
                out["offset"] = torch.cat([out["offset"], low_off], dim=1)
            out["low"] = low
        return out

    def _main_grid(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.advance, self.lobe_phase, self.lobe_sign

    def _low_grid(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.low_advance, self.low_lobe_phase, self.low_lobe_sign

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
        return self._phase(dev, logmag, self._main_grid(), offset, with_offsets, grad_frames)

    def low_phase_from_deviation(self, dev: torch.Tensor, logmag: torch.Tensor, grad_frames: int = 0
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """`phase_from_deviation` of the low-band head's grid (`[B, low_bins, T]`), from frame 0."""
        return self._phase(dev, logmag, self._low_grid(), grad_frames=grad_frames)

    def _phase(self, dev: torch.Tensor, logmag: torch.Tensor, grid: tuple[torch.Tensor, ...],
               offset: torch.Tensor | None = None, with_offsets: bool = False, grad_frames: int = 0):
        """`phase_from_deviation` on one STFT grid (`_main_grid` or `_low_grid`)."""
        advance, lobe_phase, lobe_sign = grid
        first = lobe_phase.expand_as(dev[..., :1])
        if offset is not None:
            first = first + offset[..., None]
        steps = torch.cat([first, (advance + dev)[..., 1:]], dim=-1)
        phase = torch.cumsum(steps, dim=-1) if grad_frames <= 0 else local_cumsum_grad(steps, grad_frames)
        cos, sin = torch.cos(phase), torch.sin(phase)
        if self.cfg.phase == "if_lock":
            cos, sin = self._lock(cos, sin, torch.exp(logmag), lobe_sign)
        if not with_offsets:
            return cos, sin
        rel = phase - lobe_phase
        return cos, sin, rel - TWO_PI * torch.floor(rel / TWO_PI)

    @staticmethod
    def _lock(cos: torch.Tensor, sin: torch.Tensor, mag: torch.Tensor, lobe_sign: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Phase locking: each bin takes the direction of sum_{j=-1..1} m_{k+j} u_{k+j} (-1)^{j}."""
        wr, wi = mag * cos * lobe_sign, mag * sin * lobe_sign  # lobe sign removed
        sr = wr + F.pad(wr, (0, 0, 1, 0))[:, :-1] + F.pad(wr, (0, 0, 0, 1))[:, 1:]
        si = wi + F.pad(wi, (0, 0, 1, 0))[:, :-1] + F.pad(wi, (0, 0, 0, 1))[:, 1:]
        norm = torch.sqrt(sr * sr + si * si + 1e-12)
        return sr / norm * lobe_sign, si / norm * lobe_sign

    def synthesize(self, spec: dict[str, torch.Tensor]) -> torch.Tensor:
        """The decoded spectrum -> audio `[B, 1, T*D]` (with a low band: the two heads' inverse
        STFTs, each weighted by its side of the crossover, summed)."""
        mag = torch.clamp(torch.exp(spec["logmag"]) - LOG_EPS, min=0.0)
        if not self.low_bins:
            return self.istft(mag * spec["cos"], mag * spec["sin"])
        low = spec["low"]
        main_gain, low_gain = self.main_gain, self.low_gain
        if "gate" in low:  # the low head's share of the band below the crossover, per frame
            main_gain, low_gain = 1.0 - (1.0 - main_gain) * low["gate"], low_gain * low["gate"]
        mag = mag * main_gain
        low_mag = torch.clamp(torch.exp(low["logmag"]) - LOG_EPS, min=0.0) * low_gain
        return (self.istft(mag * spec["cos"], mag * spec["sin"])
                + self.low_istft(low_mag * low["cos"], low_mag * low["sin"]))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """`z [B, C, T] -> audio [B, 1, T*D]`."""
        return self.synthesize(self.decode_spectrum(z))

    def decode_carry(self, z: torch.Tensor, offset: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`z [B, C, T]`, `offset [B, F']` -> (audio `[B, 1, T*D]`, offsets `[B, F', T]`): a decode
        whose frame 0 continues the frame of an earlier decode that returned `offset` there
        (``if`` phases only, see `carries_phase`; F' = `carry_bins`, the main head's bins then
        the low band's)."""
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


def load_with_new_low_head(vae: SpectralVAE, state: dict[str, torch.Tensor], low_n_fft: int | None = None) -> bool:
    """Load `state` into `vae`; where `vae` has a low-band head the state lacks (a checkpoint
    of the same VAE without one), load the rest and start the head by `init_low_head`; a gate
    the state lacks keeps its nearly open start. Where the state's head covers another band on
    the same long grid (`low_n_fft`, the state's config's, must equal the model's), the head
    starts by `init_low_head` and takes the state's trained rows for the bins both cover: a
    wider band starts as the trained head below its old edge and as the main head above it.
    Where the model's encoder also reads the low band (`VAEConfig.encoder_low`) and the state's
    does not, the encoder's first layer takes the state's weights for the main STFT's features
    and zeros for the low band's: it starts as the state's encoder, and training opens the new
    inputs. Where the state's encoder reads a narrower low band (a head widened on the same long
    grid), each of its three low-band feature blocks keeps the state's weights for the bins both
    read and takes zeros for the new ones. Returns whether the head was (wholly or partly) so
    started. Any other mismatch raises."""
    enc_w = state.get("encoder.0.weight")
    want = vae.encoder[0].weight
    main_in = 3 * vae.bins
    if enc_w is not None and vae.cfg.encoder_low and want.shape[1] > enc_w.shape[1] >= main_in \
            and (enc_w.shape[1] - main_in) % 3 == 0:
        state = dict(state)
        L_old, L = (enc_w.shape[1] - main_in) // 3, vae.low_bins
        blocks = [enc_w[:, :main_in]]  # the main STFT's features, then (log magnitude, cos, sin) of the low band's
        for part in range(3):
            blocks += [enc_w[:, main_in + part * L_old:main_in + (part + 1) * L_old],
                       enc_w.new_zeros(enc_w.shape[0], L - L_old, enc_w.shape[2])]
        state["encoder.0.weight"] = torch.cat(blocks, dim=1)
    old_w = state.get("low_head.weight")
    if old_w is not None and vae.low_bins and old_w.shape != vae.low_head.weight.shape:
        if low_n_fft != vae.cfg.low_n_fft:
            raise RuntimeError(f"the state's low head has {old_w.shape[0] // 2} bins, the model's "
                               f"{vae.low_bins}: a band widened only on the same long grid (the state's "
                               f"low_n_fft {low_n_fft}, the model's {vae.cfg.low_n_fft})")
        state = dict(state)
        old_w, old_b = state.pop("low_head.weight"), state.pop("low_head.bias")
        _load_rest(vae, state)
        vae.init_low_head()
        L_old, L = old_w.shape[0] // 2, vae.low_bins
        n = min(L_old, L)
        with torch.no_grad():
            for part in (0, 1):  # log magnitude rows, then deviation rows
                vae.low_head.weight[part * L:part * L + n] = old_w[part * L_old:part * L_old + n]
                vae.low_head.bias[part * L:part * L + n] = old_b[part * L_old:part * L_old + n]
        return True
    head = _load_rest(vae, state)
    if head:
        vae.init_low_head()
    return head


def _load_rest(vae: SpectralVAE, state: dict[str, torch.Tensor]) -> bool:
    """`load_state_dict(strict=False)` allowing only the low head and gate to be missing;
    returns whether the head was."""
    missing, unexpected = vae.load_state_dict(state, strict=False)
    new = [k for k in missing if k.startswith(("low_head.", "low_gate."))]
    if unexpected or len(new) != len(missing):
        raise RuntimeError(f"state does not fit: missing {sorted(set(missing) - set(new))}, "
                           f"unexpected {sorted(unexpected)}")
    return any(k.startswith("low_head.") for k in new)
