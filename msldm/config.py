"""Frozen configuration dataclasses and the named presets.

One `ModelConfig` describes everything needed to rebuild a model from a checkpoint:
the SourceVAE, the multi-source denoiser (1D U-Net + EDM preconditioning) and the
sampler defaults. This module imports no torch, so the server can read configs too.

Presets (`PRESETS`, `get_preset(name)`):
- ``tiny``: for tests; a whole generation takes well under a second on CPU.
- ``preview``: the earlier stand-in (DAC-style VAE, no pitch); kept for comparison.
- ``cpu``: the shipped default: the spectral SourceVAE and a denoiser sized by measurement
  for a 2-core CPU.
- ``cpu_given`` / ``gpu_given`` / ``tiny_given``: ``cpu`` / ``gpu`` / ``tiny`` with given-stem
  conditioning (the U-Net also reads the given stems' clean latents; `UNetConfig.cond_channels`).
- ``small``: a larger DAC-VAE model sized for GPU training (< ~30M parameters in all).
- ``paper`` and ``paper_large``: the sizes of Appendix A of the MSLDM paper
  (DAC-24kHz-size SourceVAE with C = 80, D = 320; U-Nets "MSLDM" and "MSLDM-Large").
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

STEMS: tuple[str, ...] = ("bass", "drums", "guitar", "piano")
MIX = "mix"
"""Pseudo stem name: the sum of the K stems (MixLDM baseline, Sec. 4.1 of the MSLDM paper)."""
"""Stem order of the paper's code and data; channel block k of the joint latent is stem k."""


@dataclass(frozen=True)
class VAEConfig:
    """The SourceVAE (Gaussian posterior, no quantizer). Hop D = prod(encoder_rates).

    `kind` picks the model (`msldm.vae_models.build_vae`): ``dac`` is the DAC-style waveform
    VAE of the paper (`msldm.vae`; widths `encoder_dim` / `decoder_dim`, strided blocks);
    ``spectral`` is the frame-rate spectral VAE (`msldm.spectral_vae`; `encoder_dim` /
    `decoder_dim` are its ConvNeXt widths, with `encoder_blocks` / `decoder_blocks` blocks,
    an STFT of `n_fft` and the decoder phase `phase`). Checkpoints without `kind` are ``dac``.
    """

    sample_rate: int = 22050
    encoder_dim: int = 64
    encoder_rates: tuple[int, ...] = (2, 4, 5, 8)
    decoder_dim: int = 1536
    decoder_rates: tuple[int, ...] = (8, 5, 4, 2)
    latent_dim: int = 80  # C
    dilations: tuple[int, ...] = (1, 3, 9)
    kind: str = "dac"
    n_fft: int = 1280
    encoder_blocks: int = 3
    decoder_blocks: int = 6
    phase: str = "if_lock"
    # Spectral VAE: a second decoder head for the low band at a longer STFT window (0: none).
    # Below `low_crossover[0]` Hz the audio is the low head's inverse STFT of `low_n_fft`, above
    # `low_crossover[1]` the main head's, a raised-cosine crossfade between (`msldm.spectral_vae`).
    low_n_fft: int = 0
    low_crossover: tuple[float, float] = (250.0, 400.0)
    # With `low_gate`, the decoder also predicts per frame how much of the band below the
    # crossover the low head plays (the rest the main head): a long window smears a kick drum's
    # attack, so the decoder can switch to the short one there, as audio codecs switch blocks.
    low_gate: bool = False
    # With `encoder_low`, the encoder also reads the low band's features at `low_n_fft` (log
    # magnitude and IF-deviation phasor of the low head's bins, beside the main STFT's): the
    # partials of a low note, which share a main lobe at n_fft, come to it resolved. This
    # changes the encoder, so its latents (unlike the decoder-only fields above).
    encoder_low: bool = False

    @property
    def hop(self) -> int:
        """D: audio samples per latent frame."""
        return math.prod(self.encoder_rates)

    def check_low_band(self) -> None:
        """Raise ValueError, saying why, where the low-band fields do not make a valid head:
        `low_n_fft` a multiple of the hop above `n_fft`, 0 < crossover LO < HI < Nyquist, an
        ``if`` phase; `low_gate` or `encoder_low` set without a head. A no-op without one."""
        if not self.low_n_fft:
            if self.low_gate or self.encoder_low:
                raise ValueError("a low-band gate or encoder input needs a low-band head (low_n_fft)")
            return
        if self.kind != "spectral" or self.phase == "free":
            raise ValueError("a low-band head needs a spectral SourceVAE with an 'if' or 'if_lock' phase")
        if self.low_n_fft <= self.n_fft or self.low_n_fft % self.hop or (self.low_n_fft - self.hop) % 2:
            raise ValueError(f"low_n_fft must be a multiple of the hop {self.hop} above n_fft {self.n_fft}, "
                             f"got {self.low_n_fft}")
        lo, hi = self.low_crossover
        if not 0 < lo < hi < self.sample_rate / 2:
            raise ValueError(f"low_crossover must be LO,HI Hz with 0 < LO < HI < {self.sample_rate / 2:g}, "
                             f"got {self.low_crossover}")

    def same_latents(self, other: "VAEConfig") -> bool:
        """Whether the two configs describe the same encoder and latent space, differing at most
        in decoder-only fields (the low-band head): a denoiser trained on one's latents runs
        with the other's decoder (a decoder-only fine-tune with the encoder frozen)."""
        decoder_only = {"low_n_fft": 0, "low_crossover": (0.0, 0.0), "low_gate": False}
        return (dataclasses.replace(self, **decoder_only) == dataclasses.replace(other, **decoder_only))


@dataclass(frozen=True)
class VAELossConfig:
    """Loss weights and discriminator shapes of the SourceVAE (Eq. 1 of the MSLDM paper, DAC)."""

    lambda_mel: float = 15.0
    lambda_feature: float = 2.0
    lambda_adversarial: float = 1.0
    lambda_kl: float = 10.0
    mel_windows: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048)
    mel_bands: tuple[int, ...] = (5, 10, 20, 40, 80, 160, 320)
    periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    stft_ffts: tuple[int, ...] = (2048, 1024, 512)
    stft_bands: tuple[tuple[float, float], ...] = (
        (0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))
    discriminator_channels: int = 32
    # Spectral SourceVAE (kind "spectral", `msldm.spectral_losses`): per-bin log magnitude and
    # phase terms at the model's own STFT, multi-resolution STFT on the audio, mel, KL.
    lambda_logmag: float = 1.0
    lambda_phase: float = 1.0
    lambda_stft: float = 1.0
    stft_windows: tuple[int, ...] = (256, 1024, 4096)
    stft_mel_bands: tuple[int, ...] = (40, 80, 160)
    lambda_spectral_mel: float = 1.0
    lambda_spectral_kl: float = 1e-3
    # Flux: frame-to-frame change of log magnitude at each of `stft_windows` that is also in
    # `flux_windows`, weighted by the louder magnitude (`msldm.spectral_losses.flux_loss`): a
    # held partial's level must stay as steady, and an attack rise as sharply, as the
    # original's. Short windows are left out: at 256 samples the term of the original against
    # itself shifted by 1.7 ms is 0.65, against 0.13-0.15 at 1024-4096. 0: off (the committed
    # VAE was trained without it).
    lambda_flux: float = 0.0
    flux_windows: tuple[int, ...] = (1024, 4096)
    # ``if`` decoders: 0 keeps the audio terms off the phase (the phase head learns from its
    # direct target only); n > 0 lets them reach it through the deviations of the last n
    # frames of the running sum (`msldm.spectral_vae.local_cumsum_grad`), so the phases at an
    # attack answer for the audio they make.
    phase_grad_frames: int = 0
    # The direct phase term of the ``if`` decoders: "cos" = 1 - cos(error), whose pull fades as
    # the error shrinks (sin(error)); "l1" = |error| wrapped to [-pi, pi) (APNet's anti-wrapping
    # L1), the same pull at any error, so fine frequency errors of held partials keep being
    # corrected and the unpredictable phases of attacks count as much as any other bin, no more.
    phase_error: str = "cos"
    # Low-band envelope (`msldm.spectral_losses.low_envelope_loss`): L1 between the log
    # envelopes, in 3 ms frames, of the band below 400 Hz of reconstruction and audio. The
    # average spectral terms barely see a kick drum's low band smeared ahead of its attack by a
    # long window (`VAEConfig.low_n_fft`); this term is that smear. 0: off.
    lambda_low_envelope: float = 0.0
    # Level (`msldm.spectral_losses.level_loss`): L1 between the log RMS, in frames of
    # LEVEL_FRAME samples, of reconstruction and audio. The log spectral terms weigh every bin
    # alike, so a reconstruction whose strong partials sit a little under the original's and
    # whose gaps between them a little over scores as well as one at the right level, and comes
    # out quiet (the next SourceVAE about 0.5 dB on its training soundfonts, 1.5-3.4 dB on the
    # held-out one's guitars and drums); this term is the level itself. 0: off. (Measured only
    # beside a per-frame level head, which carried the correction and was not kept:
    # docs/eval/model-history.md, "Twenty-sixth session".)
    lambda_level: float = 0.0
    # An adversarial fine-tune of the spectral VAE (`msldm.spectral_losses.adversarial_terms`):
    # the weights of the least-squares generator term and of feature matching, against a
    # `Discriminator` of `discriminator_channels`, `periods` and `stft_ffts` (above). 0: off,
    # no discriminator is built (every spectral VAE before 2026-12-06 was trained so).
    lambda_spectral_adversarial: float = 0.0
    lambda_spectral_feature: float = 0.0

    @property
    def spectral_adversarial(self) -> bool:
        """Whether a spectral VAE trains against a discriminator."""
        return self.lambda_spectral_adversarial > 0 or self.lambda_spectral_feature > 0


@dataclass(frozen=True)
class UNetConfig:
    """Mousai / MSDM-style 1D U-Net over K*C channels.

    Level i has `channels[i]` channels, is reached by down-sampling by `factors[i]`
    (1 = no down-sampling), holds `blocks[i]` residual blocks and, if `attentions[i]`,
    self-attention with `attention_heads` heads of `attention_head_dim` features.
    """

    in_channels: int = 320  # K * C
    channels: tuple[int, ...] = (128, 256, 512)
    factors: tuple[int, ...] = (1, 2, 2)
    blocks: tuple[int, ...] = (2, 2, 2)
    attentions: tuple[bool, ...] = (False, True, True)
    attention_heads: int = 8
    attention_head_dim: int = 64
    embedding_dim: int = 256  # sigma embedding width
    norm_groups: int = 8
    # Given-stem conditioning (0: off, the paper's joint model): channels of a second input, the
    # given latents (K*C) and one mask channel per stem (K), added to the first level through a
    # zero-initialised 1x1 convolution, so a conditional U-Net warm-started from a joint one
    # computes the same function until it learns to read them (msldm.edm.EDMDenoiser).
    cond_channels: int = 0
    # Per-channel filters (0: off): that many noise-level-weighted banks of depthwise temporal
    # filters of the input, added to the output (msldm.unet.ChannelFilters). The first level's
    # channels[0] < in_channels cannot carry every channel's own noise, which the denoiser must
    # name at low noise levels; these filters can. Zero at first, like cond_channels.
    channel_filters: int = 0
    channel_filter_taps: int = 9

    def __post_init__(self) -> None:
        n = len(self.channels)
        for name in ("factors", "blocks", "attentions"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"UNetConfig.{name} needs {n} entries, one per level")
        if any(c % self.norm_groups for c in self.channels):
            raise ValueError("every level's channels must be divisible by norm_groups")
        if self.channel_filters < 0 or self.channel_filter_taps < 1 or self.channel_filter_taps % 2 == 0:
            raise ValueError("channel_filters must be >= 0 and channel_filter_taps odd and >= 1")

    @property
    def total_factor(self) -> int:
        """The latent length must be a multiple of this (callers pad to it: the U-Net does not)."""
        return math.prod(self.factors)


TRAIN_SIGMAS = ("uniform", "lognormal", "mixed")
"""The training noise-level distributions of `DiffusionConfig.train_sigma` (`msldm.edm.sample_training_sigma`)."""


@dataclass(frozen=True)
class DiffusionConfig:
    """The multi-source latent diffusion model: K stems of C channels, EDM (Karras et al. 2022)."""

    stems: tuple[str, ...] = STEMS
    latent_dim: int = 80  # C
    sigma_data: float = 0.4
    train_sigma: str = "uniform"  # "uniform" (the paper: U(0, 3)), "lognormal" (EDM) or "mixed" (both)
    train_sigma_max: float = 3.0
    lognormal_mean: float = -1.2
    lognormal_std: float = 1.2
    window_frames: int = 1024  # T: training / serving window length in latent frames
    unet: UNetConfig = field(default_factory=UNetConfig)

    @property
    def K(self) -> int:
        return len(self.stems)

    @property
    def conditional(self) -> bool:
        """True when the U-Net also reads the given stems' clean latents and their mask."""
        return self.unet.cond_channels > 0


MAX_GUIDANCE = 8.0  # given-part guidance weights above this leave the data far behind
MAX_SELECT = 8  # candidates per take beyond this cost more than a region's budget


OPTIONAL_FLOATS = ("S_churn_total", "S_tmax_total", "bass_drums_reconstruction_tmin")
"""Sampler fields that may be None (in a manifest, null): "not set, use the field named in its comment"."""


@dataclass(frozen=True)
class SamplerConfig:
    """Defaults of the sampler (Sec. 2.3 of the MSLDM paper uses euler, 150 steps, churn 20)."""

    sampler: str = "euler"  # one of msldm.sampling.SAMPLERS
    steps: int = 150
    schedule: str = "karras"  # one of msldm.sampling.SCHEDULES ("melody": few-step, after MeLoDy)
    resample: int = 1  # passes per step for partial generation (RePaint resampling; 1: off)
    resample_tmin: float = 0.0  # RePaint passes only on steps starting at a sigma in [resample_tmin,
    resample_tmax: float = float("inf")  # resample_tmax] (the defaults: every step)
    sigma_min: float = 0.01
    sigma_max: float = 3.0
    rho: float = 7.0
    S_churn: float = 20.0
    S_tmin: float = 0.0
    S_tmax: float = float("inf")
    S_noise: float = 1.0
    S_churn_total: float | None = None  # total generation's churn (None: S_churn) and the highest noise
    S_tmax_total: float | None = None  # level it is added at (None: S_tmax; finite): partial generation
    # adds its churn on every RePaint pass, so the same churn stirs it up to `resample` times as hard
    guidance: float = 1.0  # partial generation: given-part guidance weight (msldm.sampling.Imputation; 1: off)
    guidance_reverse: float = 1.0  # its contrast: the given part reversed in time, scaled by this (0: no signal)
    guidance_tmin: float = 0.0  # guided calls: those at a noise level in [guidance_tmin, guidance_tmax]
    guidance_tmax: float = float("inf")
    given_noise: float = 1.0  # partial generation: the given part shown under given_noise * sigma (1: Eq. 5)
    reconstruction: float = 0.0  # partial generation: reconstruction guidance weight (Imputation; 0: off)
    reconstruction_tmin: float = 0.0  # on calls at a noise level >= this
    bass_given_reconstruction: float = 0.0  # the daemon, where the bass is among the given stems: reconstruction
    bass_given_resample: int = 0  # guidance from the given stems with notes at this weight (0: off), this many
    # RePaint passes unless the request sets its own (0: `resample`); server.windowing.bass_given_sampler
    bass_drums_reconstruction_tmin: float | None = None  # that guidance's lowest noise level where the given
    # stems are the bass and drums alone (None: reconstruction_tmin)
    bass_drums_select: int = 1  # there, candidates per take down to that level; the one whose estimate of
    # the given bass misses it least goes on (1: one, no choice; server.windowing.best_of)
    harmony_given_guidance: float = 1.0  # the daemon, where the given stems are a guitar and/or piano alone (no
    harmony_given_resample: int = 0  # bass, no drums): given-part guidance at this weight (1: off) and this many
    # RePaint passes unless the request sets its own (0: `resample`); server.windowing.harmony_given_sampler
    pull_resample: int = 2  # the daemon's pulling sampler, for a window sampled again because a requested
    pull_steps: float = 0.6  # stem came out silent or buried beside given stems: pull_resample times the
    # request's RePaint passes (at most MAX_RESAMPLE) over pull_steps of its steps, about the calls of the
    # first attempt (40 x 3 -> 24 x 6 on the bundled model; docs/eval/model-history.md, "Sixteenth
    # session": 15-25 dB quiet guitars brought to within 2-4 dB; server.windowing's pulling_sampler)

    def __post_init__(self) -> None:
        from msldm.sampling import MAX_RESAMPLE, SAMPLERS, SCHEDULES  # framework-free, like this module
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; choose from {sorted(SAMPLERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose from {sorted(SCHEDULES)}")
        if not 1 <= self.resample <= MAX_RESAMPLE:
            raise ValueError(f"resample must be in [1, {MAX_RESAMPLE}], got {self.resample}")
        if not 0 <= self.resample_tmin <= self.resample_tmax:
            raise ValueError(f"need 0 <= resample_tmin <= resample_tmax, got {self.resample_tmin}, "
                             f"{self.resample_tmax}")
        if self.S_churn_total is not None and not self.S_churn_total >= 0:
            raise ValueError(f"S_churn_total must be >= 0 (or None: S_churn), got {self.S_churn_total}")
        if self.S_tmax_total is not None and not (math.isfinite(self.S_tmax_total) and self.S_tmax_total >= 0):
            # a manifest writes infinity as null, which here means "as S_tmax": sigma_max covers every level
            raise ValueError(f"S_tmax_total must be finite and >= 0 (or None: S_tmax; sigma_max for every "
                             f"noise level), got {self.S_tmax_total}")
        if not 0 <= self.guidance <= MAX_GUIDANCE:
            raise ValueError(f"guidance must be in [0, {MAX_GUIDANCE}] (1: off), got {self.guidance}")
        if not 0 <= self.guidance_reverse <= 1:
            raise ValueError(f"guidance_reverse must be in [0, 1], got {self.guidance_reverse}")
        if not 0 <= self.reconstruction <= MAX_GUIDANCE:
            raise ValueError(f"reconstruction must be in [0, {MAX_GUIDANCE}] (0: off), got {self.reconstruction}")
        if self.reconstruction > 0 and self.guidance != 1:
            raise ValueError("reconstruction guidance and given-part guidance both pull towards the given stems: "
                             f"set one (reconstruction {self.reconstruction}, guidance {self.guidance})")
        if not 0 <= self.bass_given_reconstruction <= MAX_GUIDANCE:
            raise ValueError(f"bass_given_reconstruction must be in [0, {MAX_GUIDANCE}] (0: off), "
                             f"got {self.bass_given_reconstruction}")
        if self.bass_given_reconstruction > 0 and self.guidance != 1:
            raise ValueError("bass_given_reconstruction and given-part guidance both pull towards the given stems: "
                             f"set one (bass_given_reconstruction {self.bass_given_reconstruction}, "
                             f"guidance {self.guidance})")
        if not 0 <= self.bass_given_resample <= MAX_RESAMPLE:
            raise ValueError(f"bass_given_resample must be in [0, {MAX_RESAMPLE}] (0: resample), "
                             f"got {self.bass_given_resample}")
        if self.bass_drums_reconstruction_tmin is not None and not self.bass_drums_reconstruction_tmin >= 0:
            raise ValueError("bass_drums_reconstruction_tmin must be >= 0 (or None: reconstruction_tmin), "
                             f"got {self.bass_drums_reconstruction_tmin}")
        if not 0 <= self.harmony_given_guidance <= MAX_GUIDANCE:
            raise ValueError(f"harmony_given_guidance must be in [0, {MAX_GUIDANCE}] (1: off), "
                             f"got {self.harmony_given_guidance}")
        if not 0 <= self.harmony_given_resample <= MAX_RESAMPLE:
            raise ValueError(f"harmony_given_resample must be in [0, {MAX_RESAMPLE}] (0: resample), "
                             f"got {self.harmony_given_resample}")
        if not 1 <= self.pull_resample <= MAX_RESAMPLE:
            raise ValueError(f"pull_resample must be in [1, {MAX_RESAMPLE}], got {self.pull_resample}")
        if not 0 < self.pull_steps <= 1:
            raise ValueError(f"pull_steps must be in (0, 1], got {self.pull_steps}")
        if not 1 <= self.bass_drums_select <= MAX_SELECT:
            raise ValueError(f"bass_drums_select must be in [1, {MAX_SELECT}] (1: off), got {self.bass_drums_select}")
        if not self.reconstruction_tmin >= 0:
            raise ValueError(f"reconstruction_tmin must be >= 0, got {self.reconstruction_tmin}")
        if not 0 <= self.given_noise <= 1:
            raise ValueError(f"given_noise must be in [0, 1] (1: Eq. 5's noise), got {self.given_noise}")
        if not 0 <= self.guidance_tmin <= self.guidance_tmax:
            raise ValueError(f"need 0 <= guidance_tmin <= guidance_tmax, got {self.guidance_tmin}, "
                             f"{self.guidance_tmax}")

    @staticmethod
    def parse_assignments(items: list[str]) -> dict[str, str]:
        """`["S_tmin=0.1", "steps=20"]` (repeated `--sampler FIELD=VALUE` options) -> the text
        overrides `with_overrides` takes. Raises ValueError for an item that is not FIELD=VALUE."""
        out: dict[str, str] = {}
        for item in items:
            name, sep, value = item.partition("=")
            if not sep or not name.strip() or not value.strip():
                raise ValueError(f"--sampler wants FIELD=VALUE, got {item!r}")
            out[name.strip()] = value.strip()
        return out

    def with_overrides(self, overrides: dict[str, str]) -> "SamplerConfig":
        """A copy with fields set from text (`{"S_tmin": "0.1"}`, as `msldm export --sampler` gives
        them), each parsed as its field's type; "inf" is allowed for floats, "none" for an
        optional field (`OPTIONAL_FLOATS`). Raises ValueError for an unknown field or a value of
        the wrong type."""
        kinds = {f.name: float if f.name in OPTIONAL_FLOATS else type(getattr(self, f.name))
                 for f in dataclasses.fields(self)}
        values: dict[str, Any] = {}
        for name, text in overrides.items():
            if name not in kinds:
                raise ValueError(f"unknown sampler field {name!r}; fields: {', '.join(kinds)}")
            if name in OPTIONAL_FLOATS and text.lower() in ("none", "null"):
                values[name] = None
                continue
            try:
                value = kinds[name](text)
            except ValueError:
                raise ValueError(f"sampler field {name} needs a {kinds[name].__name__}, got {text!r}") from None
            if isinstance(value, float) and math.isnan(value):
                raise ValueError(f"sampler field {name} is NaN")
            values[name] = value
        return dataclasses.replace(self, **values)

    def sampling_kwargs(self, total: bool = False) -> dict[str, Any]:
        """The keyword arguments of `msldm.sampling.generate` this config sets, for a partial
        generation or, with `total`, a total one (nothing given across stems; its later windows
        continue earlier ones through a mask, and are still total): its churn is `S_churn_total`
        up to `S_tmax_total` where those are set."""
        churn, tmax = self.S_churn, self.S_tmax
        if total:
            churn = churn if self.S_churn_total is None else self.S_churn_total
            tmax = tmax if self.S_tmax_total is None else self.S_tmax_total
        return {"sampler": self.sampler, "S_churn": churn, "S_tmin": self.S_tmin, "S_tmax": tmax,
                "S_noise": self.S_noise, "resample": self.resample, "resample_tmin": self.resample_tmin,
                "resample_tmax": self.resample_tmax, "guidance": self.guidance,
                "guidance_reverse": self.guidance_reverse, "guidance_tmin": self.guidance_tmin,
                "guidance_tmax": self.guidance_tmax, "given_noise": self.given_noise,
                "reconstruction": self.reconstruction, "reconstruction_tmin": self.reconstruction_tmin}

    def partial_calls(self, sigmas: list[float]) -> int:
        """Denoiser calls of one partial generation over `sigmas` with this config's RePaint
        passes, churn and guidance (`msldm.sampling.calls_for_sigmas`)."""
        from msldm.sampling import calls_for_sigmas
        return calls_for_sigmas(self.sampler, sigmas, self.resample, self.resample_tmin, self.resample_tmax,
                                guidance=self.guidance, guidance_tmin=self.guidance_tmin,
                                guidance_tmax=self.guidance_tmax, S_churn=self.S_churn, S_tmin=self.S_tmin,
                                S_tmax=self.S_tmax, reconstruction=self.reconstruction,
                                reconstruction_tmin=self.reconstruction_tmin)

    def sigmas(self, sigma_data: float) -> list[float]:
        """This schedule's `steps + 1` noise levels (the "melody" schedule needs `sigma_data`)."""
        from msldm.sampling import schedule_sigmas
        return schedule_sigmas(self.schedule, self.steps, sigma_min=self.sigma_min, sigma_max=self.sigma_max,
                               rho=self.rho, sigma_data=sigma_data)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "custom"
    vae: VAEConfig = field(default_factory=VAEConfig)
    vae_loss: VAELossConfig = field(default_factory=VAELossConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)

    def __post_init__(self) -> None:
        if self.vae.latent_dim != self.diffusion.latent_dim:
            raise ValueError("vae.latent_dim and diffusion.latent_dim must agree (C)")
        if self.diffusion.unet.in_channels != self.diffusion.K * self.diffusion.latent_dim:
            raise ValueError("unet.in_channels must be K * C")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        return _from_dict(cls, d)

    @classmethod
    def from_json(cls, s: str) -> "ModelConfig":
        return cls.from_dict(json.loads(s))


def _from_dict(cls: type, d: Any) -> Any:
    """Rebuild a (nested) frozen dataclass from `dataclasses.asdict` output; lists -> tuples."""
    if not dataclasses.is_dataclass(cls):
        return _tuplify(d)
    hints = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in d.items():
        if key not in hints:
            raise ValueError(f"unknown field {cls.__name__}.{key}")
        sub = _DATACLASS_FIELDS.get((cls.__name__, key))
        kwargs[key] = _from_dict(sub, value) if sub else _tuplify(value)
    return cls(**kwargs)


def _tuplify(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_tuplify(x) for x in v)
    return v


_DATACLASS_FIELDS: dict[tuple[str, str], type] = {
    ("ModelConfig", "vae"): VAEConfig,
    ("ModelConfig", "vae_loss"): VAELossConfig,
    ("ModelConfig", "diffusion"): DiffusionConfig,
    ("ModelConfig", "sampler"): SamplerConfig,
    ("DiffusionConfig", "unet"): UNetConfig,
}


def _model(name: str, vae: VAEConfig, unet: UNetConfig, window_frames: int,
            sampler: SamplerConfig, vae_loss: VAELossConfig = VAELossConfig()) -> ModelConfig:
    C = vae.latent_dim
    unet = dataclasses.replace(unet, in_channels=len(STEMS) * C)
    return ModelConfig(
        name=name, vae=vae, vae_loss=vae_loss,
        diffusion=DiffusionConfig(latent_dim=C, window_frames=window_frames, unet=unet),
        sampler=sampler)


def _tiny() -> ModelConfig:
    # Same strides (D = 320) and C = 80 as the paper, so shapes match; widths are toy-sized.
    vae = VAEConfig(encoder_dim=4, decoder_dim=32, latent_dim=80)
    unet = UNetConfig(channels=(32, 64), factors=(1, 2), blocks=(1, 1), attentions=(False, True),
                      attention_heads=2, attention_head_dim=16, embedding_dim=32, norm_groups=8)
    loss = VAELossConfig(discriminator_channels=4)
    return _model("tiny", vae, unet, window_frames=64,
                  sampler=SamplerConfig(steps=8), vae_loss=loss)


def _preview() -> ModelConfig:
    # Trainable on a 2-core CPU in well under an hour: the stand-in default while the
    # `small` model waits for a GPU. A 256-frame window (3.7 s) gives the U-Net some bars.
    vae = VAEConfig(encoder_dim=8, decoder_dim=64, latent_dim=80)
    unet = UNetConfig(channels=(64, 128, 192), factors=(1, 2, 2), blocks=(1, 1, 1),
                      attentions=(False, True, True), attention_heads=4, attention_head_dim=32,
                      embedding_dim=128, norm_groups=16)
    loss = VAELossConfig(discriminator_channels=8)
    return _model("preview", vae, unet, window_frames=256,
                  sampler=SamplerConfig(steps=25), vae_loss=loss)


def _small() -> ModelConfig:
    # Sized for a 2-core CPU: encoder width 32, decoder 384, a ~21M-parameter U-Net.
    vae = VAEConfig(encoder_dim=32, decoder_dim=384, latent_dim=80)
    unet = UNetConfig(channels=(256, 320, 384, 384), factors=(1, 2, 2, 2), blocks=(1, 1, 2, 2),
                      attentions=(False, False, True, True), attention_heads=8,
                      attention_head_dim=64, embedding_dim=256, norm_groups=16)
    return _model("small", vae, unet, window_frames=832,  # 832 * 320 / 22050 = 12.07 s
                  sampler=SamplerConfig(steps=25))


def _paper() -> ModelConfig:
    # Appendix A.2, "MSLDM": 6 blocks [1024, 2048, 4096, 4096, 4096, 4096], factors
    # [1, 1, 2, 1, 1, 2], attention in all but the first, 12 heads of 64.
    unet = UNetConfig(channels=(1024, 2048, 4096, 4096, 4096, 4096), factors=(1, 1, 2, 1, 1, 2),
                      blocks=(1,) * 6, attentions=(False,) + (True,) * 5, attention_heads=12,
                      attention_head_dim=64, embedding_dim=1024, norm_groups=32)
    return _model("paper", VAEConfig(), unet, window_frames=1024, sampler=SamplerConfig())


def _paper_large() -> ModelConfig:
    # Appendix A.2, "MSLDM-Large": 8 blocks, factors [1, 1, 2, 1, 1, 2, 2, 2], 12 heads of 128.
    unet = UNetConfig(channels=(1024, 2048) + (4096,) * 6, factors=(1, 1, 2, 1, 1, 2, 2, 2),
                      blocks=(1,) * 8, attentions=(False,) + (True,) * 7, attention_heads=12,
                      attention_head_dim=128, embedding_dim=1024, norm_groups=32)
    return _model("paper_large", VAEConfig(), unet, window_frames=1024, sampler=SamplerConfig())


def _spectral_vae(**kw: object) -> VAEConfig:
    return VAEConfig(kind="spectral", encoder_dim=256, decoder_dim=320, encoder_blocks=3,
                     decoder_blocks=6, n_fft=1280, phase="if_lock", latent_dim=80, **kw)


def _tiny_spectral() -> ModelConfig:
    # tiny's U-Net with a toy spectral VAE: shapes and plumbing of the spectral path in tests.
    base = _tiny()
    vae = VAEConfig(kind="spectral", encoder_dim=16, decoder_dim=16, encoder_blocks=1,
                    decoder_blocks=1, n_fft=640, phase="if_lock", latent_dim=80)
    return dataclasses.replace(base, name="tiny_spectral", vae=vae)


def _spectral() -> ModelConfig:
    # The CPU default: the spectral SourceVAE (trainable on 2 cores, keeps pitch) and
    # preview's U-Net until the denoiser is sized by measurement.
    return dataclasses.replace(_preview(), name="spectral", vae=_spectral_vae())


def _cpu() -> ModelConfig:
    # The shipped CPU default, sized by measurement (scripts/size_denoiser.py, docs/model-card.md):
    # the spectral SourceVAE and a 3.7M-parameter U-Net over 256-frame (3.7 s) windows; of four
    # candidates it had the lowest validation loss after equal CPU time, at RTF 0.10 end to end.
    # Since 2026-12-05 (eleventh session) with 4 banks of per-channel filters (channel_filters):
    # without them its 128-channel first level could not denoise below sigma 0.3, and samples
    # kept 4-5x the real latents' frame-to-frame jitter; 3.85M parameters, about 6% slower a call.
    unet = UNetConfig(channels=(128, 192, 256), factors=(1, 2, 2), blocks=(1, 1, 1),
                      attentions=(False, True, True), attention_heads=4, attention_head_dim=32,
                      embedding_dim=128, norm_groups=16, channel_filters=4)
    # Sampler by the eval sweep (8 held-out-soundfont clips): 40 Euler steps with churn 20 and 2
    # RePaint passes per step in partial generation raised the generated level from -43 to -28
    # dBFS (real -29) and the audible share from 0.28 to 0.58 against 25 x 1, with no empty stem.
    # Churn only where sigma >= 0.3 (EDM's S_tmin; 20 of the 40 steps), by the 24-clip sweep of
    # 2026-12-03 (docs/model-card.md): guitar rhythmic fit 0.17 -> 0.51, guitar level +5.0 ->
    # +0.8 dB, bass comb share 0.056 -> 0.035, total-generation empty guitars 0.33 -> 0.17.
    # RePaint: 3 passes on the steps where sigma >= 0.6, 1 below (70 denoiser calls per window
    # against 80 for 2 passes on every step), by the 24-clip eval with the daemon's silent-window
    # retry on 2026-12-04 (docs/eval/model-history.md): harmonic fit 0.92 / 0.92 -> 0.98 / 0.94 (pooled),
    # rhythm unchanged, sub-FAD 13.5 -> 12.5, total-generation FD 60.0 -> 51.2, 25% fewer retries.
    # Given-part guidance stays off by default (guidance 1): at 3, with 1 RePaint pass, it put the
    # guitar on the beat more often on the training composer's test songs (rhythmic fit 0.52 ->
    # 0.61, three draws) but lost harmonic fit there and rhythm and harmony on the held-out
    # composer (2026-12-05, docs/eval/model-history.md); its band, sigma >= 0.3, is what a request for
    # guidance gets.
    # Churn 2, and only where 0.3 <= sigma <= 1 (S_tmax), since the model of 2026-12-05: its
    # samples came out louder the more churn they got at high noise levels (guitar given drums and
    # piano +18 dB at churn 20, -6.5 dB at 0 on the test clips); churn 2 with S_tmax 1 gave -3.8
    # dB, and bass rhythmic fit 0.72 -> 0.85 against churn 0 (docs/eval/model-history.md).
    # Since the twelfth session (2026-12-05): churn 3 in partial generation (on the validation
    # clips, three draws, the bass and guitar given drums and piano closest to the real stems'
    # level: +2.3 / -0.9 dB, against +2.0 / -2.1 at churn 2, +2.9 / -0.1 at 4), and total
    # generation its own churn, 10 where 0.3 <= sigma <= 3 (S_churn_total, S_tmax_total): it takes
    # one RePaint pass where partial generation takes three, so it wants more stirring (validation
    # FD 23.3 at churn 2, 12.4 at 10 up to sigma 3; docs/eval/model-history.md, "Twelfth session").
    # (The thirteenth session's v2g9 weights, measured and not shipped, wanted churn 6 there:
    # docs/eval/model-history.md, "Thirteenth session".)
    # Since the fifteenth session (2026-12-06): total generation's churn 8 for the interpolated
    # weights shipped then (on three validation sets, 0.5 x v2cf + 0.5 x v2g9p8d8 gave FD 12.6 /
    # 12.8 / 12.5 at churn 8, 13.1 / 14.2 / 12.9 at 10; churn 6 left the piano 3-4 dB quiet at 0.7;
    # docs/eval/model-history.md, "Fifteenth session").
    # Since the eighteenth session (2026-12-06): where the bass is among the given stems, the
    # daemon samples with reconstruction guidance at weight 4 from sigma 0.3 down
    # (reconstruction_tmin) from the given stems with notes, 2 RePaint passes
    # (bass_given_reconstruction, bass_given_resample; server.windowing.bass_given_sampler): given
    # bass and drums, the guitar and piano's harmonic fit 0.41-0.43 -> 0.59-0.67 on the test clips
    # (docs/eval/model-history.md, "Eighteenth session"). Written into the manifest since the nineteenth,
    # which also stopped that guidance at sigma 1 where the given stems are the bass and drums
    # (bass_drums_reconstruction_tmin): on five test draws the same harmony (0.62 / 0.64 -> 0.62 /
    # 0.65) with the parts' levels +1.1 / +1.9 -> +0.5 / +0.2 dB (the loudest draw +3.6 -> +1.8),
    # 77 denoiser calls a window instead of 90. Elsewhere the guidance below sigma 1 lifts parts
    # that would be quiet: the guitar given bass and piano on validation +1.3 dB, -1.4 stopped
    # at 1; guitar and piano given the bass alone -2.4 / -2.0, -3.4 / -4.0 stopped at 1
    # (docs/eval/model-history.md, "Nineteenth session"). Since the twentieth, given bass and drums, 2
    # candidates per take down to sigma 1, the one whose estimate of the given bass misses it
    # least going on (bass_drums_select; server.windowing.best_of): harmonic fit 0.60 / 0.65 ->
    # 0.64 / 0.66 on three test draws (every draw >= 0.62), 0.53 / 0.53 -> 0.60 / 0.58 on two
    # validation draws, for 1.4 times the time of such a request; 3 candidates did no better on
    # validation and took twice the time, over the 0.3 real-time factor ("Twentieth session").
    # Since the twenty-first, where a guitar and/or piano alone are given, given-part guidance at
    # weight 2 (harmony_given_guidance; server.windowing.harmony_given_sampler) with the manifest's
    # passes: the bass's rhythmic fit given guitar and piano 0.75 / 0.64 -> 0.80 / 0.73 on two
    # validation draws and 0.55 -> 0.62 on the worst test draw, the drums 0.90-0.98 -> 1.05-1.26,
    # harmony as before, for about 1.5 times the time of such a request; with 1 pass the drums came
    # out 6-7 dB quiet ("Twenty-first session").
    return _model("cpu", _spectral_vae(), unet, window_frames=256,
                  sampler=SamplerConfig(steps=40, resample=3, resample_tmin=0.6, S_churn=3.0, S_tmin=0.3,
                                        S_tmax=1.0, S_churn_total=8.0, S_tmax_total=3.0, guidance_tmin=0.3,
                                        reconstruction_tmin=0.3, bass_given_reconstruction=4.0,
                                        bass_given_resample=2, bass_drums_reconstruction_tmin=1.0,
                                        bass_drums_select=2, harmony_given_guidance=2.0))


def _gpu() -> ModelConfig:
    # For a desktop with an NVIDIA card: cpu's VAE, window and sampler with a 7.2M-parameter U-Net
    # (wider levels, 192-dimensional embedding), 1.5x cpu's time per call on this CPU (22 against
    # 15 ms for one 256-frame window, 2026-12-04). Trained on a lent H200
    # (scripts/train_denoiser_gpu.sh); float16 weights stay under 16 MiB.
    unet = UNetConfig(channels=(192, 256, 384), factors=(1, 2, 2), blocks=(1, 1, 1),
                      attentions=(False, True, True), attention_heads=4, attention_head_dim=32,
                      embedding_dim=192, norm_groups=16)
    return _model("gpu", _spectral_vae(), unet, window_frames=256, sampler=_cpu().sampler)


def _given(base: ModelConfig, name: str) -> ModelConfig:
    # `base` with given-stem conditioning: the U-Net also reads the given stems' clean latents
    # and a mask (K*C + K channels). Partial generation still imputes (Eq. 5); the extra input
    # shows the denoiser the given part without noise at every level, where imputation alone
    # shows it buried under sigma. Warm-starts from `base`'s weights (the new input's
    # convolution starts at zero), trained with random given subsets (`--given-prob`).
    d = base.diffusion
    unet = dataclasses.replace(d.unet, cond_channels=d.unet.in_channels + d.K)
    return dataclasses.replace(base, name=name, diffusion=dataclasses.replace(d, unet=unet))


def _tiny_given() -> ModelConfig:
    return _given(_tiny(), "tiny_given")


def _cpu_given() -> ModelConfig:
    return _given(_cpu(), "cpu_given")


def _gpu_given() -> ModelConfig:
    return _given(_gpu(), "gpu_given")


PRESETS = {"tiny": _tiny, "tiny_spectral": _tiny_spectral, "preview": _preview, "spectral": _spectral, "cpu": _cpu,
           "gpu": _gpu, "small": _small, "paper": _paper, "paper_large": _paper_large,
           "tiny_given": _tiny_given, "cpu_given": _cpu_given, "gpu_given": _gpu_given}


def get_preset(name: str) -> ModelConfig:
    """Return the named preset (`tiny`, `small`, `paper`, `paper_large`)."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}") from None
