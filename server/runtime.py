"""The torch-free bundle runtime: three onnxruntime sessions and the shared sampler.

A model bundle (`docs/bundle.md`) is a folder with `encoder.onnx`,
`denoiser.onnx`, `decoder.onnx` and `manifest.json`. `Bundle.load(dir)` checks the
manifest and the files' sha256, opens one session per graph on the best provider that
really works, warms them up, and exposes

- `encode(audio [B,1,N]) -> z [B,C,ceil(N/D)]` (normalised latent; pads N to a multiple of D),
- `denoise(x [B,K*C,T], sigma) -> D(x; sigma) [B,K*C,T]` (EDM preconditioning is inside the graph),
- `decode(z [B,C,T]) -> audio [B,1,T*D]`,
- `generate(...)`: total / partial generation with `msldm.sampling.generate` on numpy.

Imports from the core package only `msldm.sampling` and `msldm.config` (framework-free), and
through `server.levels` (the manifest's optional balance table) the evaluation's numpy measures;
never torch. The manifest's checks live here, once: the exporter calls `read_manifest` too.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import dataclasses
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnxruntime as ort

from msldm import sampling
from msldm.config import OPTIONAL_FLOATS, SamplerConfig
from msldm.hashing import sha256_file
from server.levels import LevelBalance

GRAPHS = ("encoder", "denoiser", "decoder")
PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CoreMLExecutionProvider",
                       "DmlExecutionProvider", "CPUExecutionProvider")
SUPPORTED_FORMAT = 1
log = logging.getLogger(__name__)


class BundleError(ValueError):
    """A bundle that is missing, inconsistent or corrupt."""


REQUIRED_KEYS = ("sample_rate", "hop", "latent_dim", "stems", "sigma_data", "window_frames",
                 "frame_multiple", "opset", "precision", "sampler", "files", "io", "provenance")
"""Top-level manifest fields every bundle has (the one list: the exporter checks it too)."""


LATER_SAMPLER_FIELDS: dict[str, Any] = {"resample_tmin": 0.0, "resample_tmax": None, "guidance": 1.0,
                                        "guidance_reverse": 1.0, "guidance_tmin": 0.0, "guidance_tmax": None,
                                        "S_churn_total": None, "S_tmax_total": None, "given_noise": 1.0,
                                        "reconstruction": 0.0, "reconstruction_tmin": 0.0,
                                        "bass_given_reconstruction": 0.0, "bass_given_resample": 0,
                                        "bass_drums_reconstruction_tmin": None, "bass_drums_select": 1,
                                        "pull_resample": 2, "pull_steps": 0.6, "harmony_given_guidance": 1.0,
                                        "harmony_given_resample": 0}
"""Sampler fields added after a bundle format was fixed, each with the value that does exactly
what bundles written before it did (`resample_tmin` 0, `resample_tmax` null = infinity:
RePaint passes on every step; `guidance` 1: no given-part guidance; `S_churn_total`, `S_tmax_total` null:
total generation with `S_churn`, `S_tmax`; `given_noise` 1: the given part noised as Eq. 5;
`reconstruction` 0: no reconstruction guidance; `bass_given_reconstruction` 0: none where the
bass is given either, `bass_given_resample` 0: the passes of `resample`, and
`bass_drums_reconstruction_tmin` null: `reconstruction_tmin`; `bass_drums_select` 1: one
candidate; `pull_resample` 2 and `pull_steps` 0.6: the daemon's constants before them;
`harmony_given_guidance` 1 and `harmony_given_resample` 0: a guitar or piano given alone sampled
as any other request)."""


def sampler_defaults(block: dict[str, Any]) -> SamplerConfig:
    """The manifest's `sampler` block as a `msldm.config.SamplerConfig` (S_tmax and resample_tmax null = infinity).

    Every field must be written: a bundle that leaves one out would otherwise fall back on
    values nobody chose for it. The one exception is a field of `LATER_SAMPLER_FIELDS`, absent
    from bundles exported before it existed, which gets the value those bundles sampled with.
    Values are checked as the config checks them."""
    fields = [f.name for f in dataclasses.fields(SamplerConfig)]
    block = {**{k: v for k, v in LATER_SAMPLER_FIELDS.items() if k not in block}, **block}
    missing = [f for f in fields if f not in block]
    unknown = sorted(set(block) - set(fields))
    if missing or unknown:
        raise BundleError(f"manifest sampler block: missing {missing}, unknown {unknown}; every field of "
                          f"{fields} is written by `msldm export` (re-export the bundle)")
    kinds = {f.name: type(f.default) for f in dataclasses.fields(SamplerConfig)
             if isinstance(f.default, (str, int)) and not isinstance(f.default, bool)}  # the rest are floats
    d = dict(block, **{k: math.inf for k in ("S_tmax", "resample_tmax", "guidance_tmax") if block[k] is None})
    try:  # an optional field's null stays None ("as the field it defaults to")
        return SamplerConfig(**{k: None if v is None and k in OPTIONAL_FLOATS else kinds.get(k, float)(v)
                                for k, v in d.items()})
    except (TypeError, ValueError) as e:
        raise BundleError(f"manifest sampler block: {e}") from None


def choose_providers(requested: Sequence[str] | None = None) -> list[str]:
    """Providers to try, best first: `requested` (if given) else PROVIDER_PREFERENCE, kept
    only if onnxruntime lists them; CPU always last."""
    available = set(ort.get_available_providers())
    wanted = list(requested) if requested else list(PROVIDER_PREFERENCE)
    chosen = [p for p in wanted if p in available and p != "CPUExecutionProvider"]
    return chosen + ["CPUExecutionProvider"]


SPIN = False
"""Whether onnxruntime's intra-op threads busy-wait for work after each run (its default). Off:
between two denoiser calls the sampler's own numpy work (noise, imputation) runs on the main
thread, and a spinning worker takes the other core from it; and a daemon beside a DAW should
not burn a core between calls. On the 2-core CPU (2026-12-04), a process that loads the
bundle and generates a 12 s region (2 given + 2 generated stems) twice, 10 runs paired with
spinning ones: CPU time 0.72 of theirs (every pair under 0.87), wall time 0.95 (median of pair
ratios; 0.83-1.11, within the machine's wander). `msldm bench --spin both` puts the two side
by side (wall time only; `/usr/bin/time` around `--spin on` and `--spin off` for CPU time)."""


def _session(path: Path, providers: list[str], threads: int) -> ort.InferenceSession:
    """An InferenceSession on the first of `providers` that really works.

    onnxruntime-gpu lists CUDA / TensorRT even where their libraries cannot load; it then
    prints "EP Error" banners (Python `print`) and C++ error logs before falling back to
    CPU. Both are kept out of the user's face here (logged at debug level instead); the
    caller reads the provider actually used from `session.get_providers()[0]`."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not SPIN:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads > 0:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    noise = io.StringIO()
    ort.set_default_logger_severity(4)
    try:
        with contextlib.redirect_stdout(noise):
            return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    finally:
        ort.set_default_logger_severity(3)
        if noise.getvalue():
            log.debug("onnxruntime provider fallback for %s:\n%s", path.name, noise.getvalue())


class Bundle:
    """A loaded model bundle. Not thread-safe by design: one worker thread owns it."""

    def __init__(self, root: Path, manifest: dict[str, Any], sessions: dict[str, ort.InferenceSession]):
        self.root, self.manifest, self.sessions = root, manifest, sessions
        m = manifest
        self.model_name: str = str(m.get("model_name", "unknown"))
        self.sample_rate: int = int(m["sample_rate"])
        self.D: int = int(m["hop"])
        self.C: int = int(m["latent_dim"])
        self.stems: tuple[str, ...] = tuple(m["stems"])
        self.K: int = len(self.stems)
        self.sigma_data: float = float(m["sigma_data"])
        self.window_frames: int = int(m["window_frames"])
        self.frame_multiple: int = int(m.get("frame_multiple", 1))
        self.sampler_defaults = sampler_defaults(m["sampler"])
        self.io = m["io"]
        self.level_balance: LevelBalance | None = (
            LevelBalance.from_manifest(m["level_balance"], self.stems) if "level_balance" in m else None)

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, root: str | Path, providers: Sequence[str] | None = None, threads: int = 0,
             warmup: bool = True) -> "Bundle":
        """Read and verify `root/manifest.json`, open the three sessions, warm them up."""
        ort.set_default_logger_severity(3)
        root = Path(root)
        manifest = read_manifest(root)
        chosen = choose_providers(providers)
        sessions = {}
        for g in GRAPHS:
            sessions[g] = _session(root / manifest["files"][g]["path"], chosen, threads)
            chosen = sessions[g].get_providers()  # what really loaded; skip failed ones next time
        bundle = cls(root, manifest, sessions)
        if warmup:
            bundle.warmup()
        return bundle

    @property
    def providers(self) -> dict[str, str]:
        """The provider each session really runs on (after any silent fallback)."""
        return {g: s.get_providers()[0] for g, s in self.sessions.items()}

    def warmup(self) -> None:
        """One call of each graph on a short window (first-call allocations happen here)."""
        T = max(self.frame_multiple, 2 * self.frame_multiple)
        z = self.encode(np.zeros((1, 1, T * self.D), np.float32))
        self.denoise(np.zeros((1, self.K * self.C, T), np.float32), 1.0)
        self.decode(z)

    # ------------------------------------------------------------------ graphs

    def encode(self, audio: np.ndarray) -> np.ndarray:
        """`[B,1,N]` -> normalised latent `[B,C,ceil(N/D)]` (zero-pads N to a multiple of D)."""
        audio = np.asarray(audio, dtype=np.float32)
        N = audio.shape[-1]
        T = max(1, -(-N // self.D))
        if T * self.D != N:
            audio = np.pad(audio, [(0, 0), (0, 0), (0, T * self.D - N)])
        io = self.io["encoder"]
        return self.sessions["encoder"].run([io["output"]], {io["input"]: audio})[0]

    @property
    def conditional(self) -> bool:
        """The denoiser graph also reads the given part clean (given-stem conditioning: two
        more inputs, the given latents and their mask, both shaped like the state)."""
        return len(self.io["denoiser"]["inputs"]) == 4

    def denoise(self, x: np.ndarray, sigma: float, given: np.ndarray | None = None,
                mask: np.ndarray | None = None) -> np.ndarray:
        """D(x; sigma) for `x [B,K*C,T]` (T a multiple of frame_multiple) and a scalar sigma;
        a conditional graph also gets `given` and `mask` (broadcastable to `x`; None: nothing
        given), a joint one ignores them."""
        io = self.io["denoiser"]
        x = np.asarray(x, dtype=np.float32)
        s = np.full((x.shape[0],), sigma, dtype=np.float32)
        feeds = {io["inputs"][0]: x, io["inputs"][1]: s}
        if self.conditional:  # the graph reads `given` only where `mask` is 1 (it multiplies them)
            zero = None if given is not None and mask is not None else np.zeros_like(x)
            g = zero if given is None else np.asarray(given, np.float32)
            m = zero if mask is None else np.asarray(mask, np.float32)
            feeds[io["inputs"][2]] = np.ascontiguousarray(np.broadcast_to(g, x.shape))
            feeds[io["inputs"][3]] = np.ascontiguousarray(np.broadcast_to(m, x.shape))
        return self.sessions["denoiser"].run([io["output"]], feeds)[0]

    @property
    def phase_bins(self) -> int:
        """Bins of the decoder's phase offset (0: the decoder carries no phase across windows)."""
        return int(self.io["decoder"].get("phase_bins", 0))

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Normalised latent `[B,C,T]` -> audio `[B,1,T*D]` (a phase-carrying decoder starts at
        a zero offset)."""
        if self.phase_bins:
            return self.decode_carry(z, np.zeros((z.shape[0], self.phase_bins), np.float32))[0]
        io = self.io["decoder"]
        return self.sessions["decoder"].run([io["output"]], {io["input"]: np.asarray(z, np.float32)})[0]

    def decode_carry(self, z: np.ndarray, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A phase-carrying decoder (`phase_bins` > 0): `z [B,C,T]`, `offset [B,F]` -> (audio
        `[B,1,T*D]`, offsets `[B,F,T]`). Frame 0 starts at `offset`; frame t's offset, passed to
        the decode of a window starting at t, continues this decode in phase."""
        if not self.phase_bins:
            raise BundleError("this bundle's decoder carries no phase (no phase_offset input)")
        io = self.io["decoder"]
        feeds = {io["inputs"][0]: np.asarray(z, np.float32), io["inputs"][1]: np.asarray(offset, np.float32)}
        audio, offsets = self.sessions["decoder"].run(list(io["outputs"]), feeds)
        return audio, offsets

    # ------------------------------------------------------------------ generation

    def sigmas(self, steps: int | None = None, schedule: str | None = None) -> list[float]:
        d = self.sampler_defaults
        return sampling.schedule_sigmas(schedule or d.schedule, steps or d.steps, sigma_min=d.sigma_min,
                                        sigma_max=d.sigma_max, rho=d.rho, sigma_data=self.sigma_data)

    def generate(self, shape: tuple[int, int, int], *, seed: int, steps: int | None = None,
                 sampler: str | None = None, schedule: str | None = None, given: np.ndarray | None = None,
                 mask: np.ndarray | None = None, S_churn: float | None = None, S_tmin: float | None = None,
                 resample: int | None = None, guidance: float | None = None,
                 reconstruction: float | None = None, reconstruction_mask: np.ndarray | None = None,
                 reconstruction_tmin: float | None = None, callback: sampling.StepCallback | None = None,
                 rng: np.random.Generator | None = None, total: bool | None = None,
                 span: tuple[int, int] | None = None, state: np.ndarray | None = None) -> np.ndarray:
        """Sample a joint latent `[B,K*C,T]` (`shape`) with the bundle's sampler defaults.

        Total generation when `mask` is None; otherwise partial generation by imputation
        (Eq. 4-6 of the MSLDM paper): `mask` (0/1, broadcastable to `shape`) is 1 over the
        given stems' channel blocks and/or given frame spans, `given` holds their latents.
        Noise comes from `rng` or a numpy Generator seeded with `seed`. `resample`: takes
        per step with a mask (RePaint resampling; default the manifest's); `S_churn`, `S_tmin`:
        the churn (a request's, in total and partial generation alike, up to the manifest's
        S_tmax; by default the manifest's S_churn, or in a total generation its `S_churn_total`
        up to `S_tmax_total`) and the lowest noise level it is added at; `total`: whether nothing
        is given across stems (default: `mask` is None; the daemon passes True for a total
        generation's later windows, which continue the earlier ones through a mask);
        `guidance`: the given-part guidance weight (`msldm.sampling.Imputation`; 1 off);
        `reconstruction`: the reconstruction guidance weight (0 off; over the manifest's
        `reconstruction_tmin`); each by default the manifest's (a `guidance` other than 1 turns
        reconstruction guidance off); `reconstruction_mask` (0/1, broadcastable to `shape`; None:
        all of `mask`): the given positions whose reconstruction error guides;
        `reconstruction_tmin`: its lowest noise level (default the manifest's).
        `callback(step, total, sigma, x, denoised)` may raise `sampling.Cancelled`.

        `span` (a, b): only steps a .. b - 1 of the schedule, from its sigma a to its sigma b (churn
        as the whole schedule's; the callback counts the schedule's steps), starting from `state`
        (the state at sigma a, `shape`) or from noise drawn at that level; without `span`, the
        whole schedule. Returns the state at sigma b (at b = steps the sample, given part exact)."""
        d = self.sampler_defaults
        rng = rng if rng is not None else np.random.default_rng(seed)

        def randn(like: np.ndarray) -> np.ndarray:
            return rng.standard_normal(like.shape, dtype=np.float32)

        sigmas = self.sigmas(steps, schedule)
        n = len(sigmas) - 1
        a, b = (0, n) if span is None else (int(span[0]), int(span[1]))
        if not 0 <= a < b <= n:
            raise ValueError(f"span {span}: need 0 <= start < end <= {n}, the schedule's steps")
        if state is None:
            noise = rng.standard_normal(shape, dtype=np.float32)
        else:  # sampling.generate scales the noise by its first sigma
            noise = (state / np.float32(sigmas[a])).astype(np.float32)
        if callback is not None and span is not None:
            inner = callback

            def callback(step: int, total: int, sigma: float, x: np.ndarray, den: np.ndarray) -> None:
                inner(step + a, n, sigma, x, den)
        asked = {"sampler": sampler or None, "S_churn": S_churn, "S_tmin": S_tmin, "resample": resample or None,
                 "guidance": guidance, "reconstruction": reconstruction,
                 "reconstruction_tmin": reconstruction_tmin}  # a request's overrides (None: keep)
        total = mask is None if total is None else total
        # a request's churn: one setting for both kinds of generation
        defaults = d.sampling_kwargs(total=total and S_churn is None)
        kwargs = {**defaults, **{k: v for k, v in asked.items() if v is not None}}
        if kwargs["guidance"] != 1.0:  # a request's guidance replaces the manifest's reconstruction guidance
            kwargs["reconstruction"] = 0.0
        return sampling.generate(self.denoise, noise, sigmas[a:b + 1], randn=randn, given=given,
                                 mask=mask, callback=callback, conditional=self.conditional,
                                 concat=lambda arrays: np.concatenate(arrays, axis=0),
                                 reconstruction_mask=reconstruction_mask, churn_steps=n, **kwargs)

    def stem_mask(self, stems: Sequence[str], T: int) -> np.ndarray:
        """`[1,K*C,T]` 0/1 mask, 1 over the channel blocks of `stems` (all frames)."""
        m = np.zeros((1, self.K * self.C, T), np.float32)
        for s in stems:
            k = self.stems.index(s)
            m[:, k * self.C:(k + 1) * self.C] = 1.0
        return m


def read_manifest(root: Path) -> dict[str, Any]:
    """Parse and check `root/manifest.json`: format version, required keys, file hashes."""
    path = root / "manifest.json"
    if not path.is_file():
        raise BundleError(f"{root} is not a model bundle: no manifest.json")
    m = json.loads(path.read_text())
    if int(m.get("format_version", 0)) != SUPPORTED_FORMAT:
        raise BundleError(f"manifest format_version {m.get('format_version')} is not {SUPPORTED_FORMAT}")
    missing = [k for k in REQUIRED_KEYS if k not in m]
    if missing:
        raise BundleError(f"manifest lacks {missing}")
    for g in GRAPHS:
        entry = m["files"].get(g)
        if not entry or "path" not in entry:
            raise BundleError(f"manifest lacks files.{g}.path")
        f = root / entry["path"]
        if not f.is_file():
            raise BundleError(f"missing {f}")
        digest = sha256_file(f)
        if digest != entry.get("sha256"):
            raise BundleError(f"{f.name}: sha256 {digest} does not match the manifest")
    if "level_balance" in m:  # optional: a bundle without one leaves generated stems at the model's level
        try:
            LevelBalance.from_manifest(m["level_balance"], tuple(m["stems"]))
        except ValueError as e:
            raise BundleError(f"manifest {e}") from None
    return m


