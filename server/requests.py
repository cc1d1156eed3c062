"""From a decoded `generate` message to a validated `JobRequest` (cheap checks only).

Runs in the front-end thread, so it only does what is cheap: names, rates, lengths,
NaN/Inf and silence. Converting the given stems to the model rate happens later in the
worker (`JobRequest.model_rate_given`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from plugin_bridge.protocol import (ErrorCode, Message, PcmInfo, ProtocolError, check_sample_rate,
                                    given_infos, pcm_from_bytes)
from msldm.sampling import MAX_RESAMPLE
from server import audio as audio_ops

MAX_SEED = 2 ** 63


@dataclass(frozen=True)
class Limits:
    """What the daemon accepts (sent to clients in `hello`)."""

    max_message_bytes: int = 512 * 1024 * 1024
    max_region_seconds: float = 600.0
    max_steps: int = 1000
    max_queue: int = 64  # waiting jobs, all clients together
    max_queue_per_client: int | None = None  # waiting jobs of one client; None: max_queue // 4

    @property
    def per_client(self) -> int:
        """Waiting jobs one client may hold: `max_queue_per_client`, else max(1, max_queue // 4)."""
        if self.max_queue_per_client is not None:
            return self.max_queue_per_client
        return max(1, self.max_queue // 4)

    def to_dict(self) -> dict[str, Any]:
        """The `limits` object of `hello`."""
        from plugin_bridge import protocol
        return {"max_message_bytes": self.max_message_bytes, "max_region_seconds": self.max_region_seconds,
                "max_steps": self.max_steps, "max_queue": self.max_queue,
                "max_queue_per_client": self.per_client,
                "min_sample_rate": protocol.MIN_SAMPLE_RATE, "max_sample_rate": protocol.MAX_SAMPLE_RATE}


@dataclass(frozen=True)
class ModelInfo:
    """What validation needs to know about the model."""

    stems: tuple[str, ...]
    sample_rate: int
    samplers: tuple[str, ...]
    default_steps: int
    default_sampler: str
    schedules: tuple[str, ...] = ("karras",)
    default_schedule: str = "karras"
    default_resample: int = 1


@dataclass
class JobRequest:
    """A validated generation request.

    `given`: stem -> (`[n]` mono float32 at `given_rates[stem]`). `generate`: the stems to
    generate, in model order (the protocol's field name). `duration`: region length in
    seconds; `output_frames`: exact length of every output stem at `output_sample_rate`."""

    job_id: str
    given: dict[str, np.ndarray]
    given_rates: dict[str, int]
    generate: list[str]
    duration: float
    output_sample_rate: int
    output_frames: int
    seed: int
    steps: int
    sampler: str
    region: dict[str, Any] | None = None
    schedule: str = "karras"
    resample: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def model_frames(self, model_rate: int) -> int:
        """Region length in samples at the model rate."""
        return max(1, round(self.duration * model_rate))

    def model_rate_given(self, model_rate: int) -> dict[str, np.ndarray]:
        """Given stems converted (soxr) to `model_rate`, each `[n_model]` (zero-padded / cut)."""
        n = self.model_frames(model_rate)
        return {s: audio_ops.fit_length(audio_ops.convert_rate(a, self.given_rates[s], model_rate), n)
                for s, a in self.given.items()}


def build_request(msg: Message, model: ModelInfo, limits: Limits) -> JobRequest:
    """Validate a decoded `generate` message; raises ProtocolError with the stable code."""
    h, job_id = msg.header, msg.job_id
    infos = given_infos(h)
    generate = _check_stems(h["generate"], infos, model, job_id)
    given, rates = _given_audio(infos, msg.pcm, job_id)
    duration, longest = _duration(h, infos, job_id)
    bars = _bar_length(h, duration, job_id)
    if bars is not None:  # cut to the bar: the length comes from tempo and meter, not the given stems
        duration, longest = bars, None
    if duration > limits.max_region_seconds:
        raise ProtocolError(ErrorCode.REGION_TOO_LONG, f"region is {duration:.2f} s, longer than the "
                            f"limit of {limits.max_region_seconds} s", job_id)
    if given and all(audio_ops.is_silent(a) for a in given.values()):
        raise ProtocolError(ErrorCode.SILENT_REGION, "every given stem is digital silence; nothing to "
                            "accompany (send no given stems for total generation)", job_id)
    rate = h.get("output_sample_rate", infos[0].sample_rate if infos else model.sample_rate)
    rate = check_sample_rate(rate, "output_sample_rate", job_id)
    if longest is not None:
        frames = audio_ops.exact_length(longest.frames, longest.sample_rate, rate)
    else:
        frames = round(duration * rate)
    if frames < 1:
        raise ProtocolError(ErrorCode.EMPTY_REGION, "region is shorter than one output sample", job_id)
    seed, steps, sampler, schedule, resample = _sampling_args(h, model, limits, job_id)
    return JobRequest(job_id, given, rates, generate, duration, rate, frames, seed, steps,
                      sampler, h.get("region"), schedule=schedule, resample=resample)


def _check_stems(gen: list[Any], infos: list[PcmInfo], model: ModelInfo, job_id: str | None) -> list[str]:
    names = [i.stem for i in infos]
    for s in list(gen) + names:
        if not isinstance(s, str):
            raise ProtocolError(ErrorCode.BAD_FIELD, f"stem names must be strings, got {s!r}", job_id)
        if s not in model.stems:
            raise ProtocolError(ErrorCode.UNKNOWN_STEM, f"unknown stem {s!r}; the model has "
                                f"{list(model.stems)}", job_id)
    if not gen:
        raise ProtocolError(ErrorCode.NOTHING_REQUESTED, "'generate' is empty: name at least one stem", job_id)
    both = sorted(set(gen) & set(names))
    if both:
        raise ProtocolError(ErrorCode.STEM_CONFLICT, f"stems both given and requested: {both}", job_id)
    if len(set(gen)) != len(gen) or len(set(names)) != len(names):
        raise ProtocolError(ErrorCode.STEM_CONFLICT, "a stem is listed twice", job_id)
    return [s for s in model.stems if s in gen]  # model order


def _given_audio(infos: list[PcmInfo], pcm: list[bytes | memoryview], job_id: str | None
                 ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    given, rates = {}, {}
    for info, buf in zip(infos, pcm):
        a = pcm_from_bytes(buf, info.channels)
        audio_ops.check_finite(a, f"given stem {info.stem!r}", job_id)
        given[info.stem] = audio_ops.to_mono(a)
        rates[info.stem] = info.sample_rate
    return given, rates


def _bar_length(h: dict[str, Any], duration: float, job_id: str | None) -> float | None:
    """With `length: "bars"`, `duration` rounded to the nearest whole bar (at least one) of
    `region.tempo` and `region.meter`; None for `length: "region"` (the default)."""
    length = h.get("length", "region")
    if length not in ("region", "bars"):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"'length' must be \"region\" or \"bars\", got {length!r}", job_id)
    if length == "region":
        return None
    region = h.get("region")
    if not isinstance(region, dict) or "tempo" not in region:
        raise ProtocolError(ErrorCode.MISSING_FIELD, "'length': \"bars\" needs 'region.tempo' (and "
                            "'region.meter', default [4, 4])", job_id)
    tempo, meter = region["tempo"], region.get("meter", [4, 4])
    if isinstance(tempo, bool) or not isinstance(tempo, (int, float)) or not 0 < tempo <= 2000:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"'region.tempo' must be beats per minute in (0, 2000], got {tempo!r}",
                            job_id)
    if (not isinstance(meter, list) or len(meter) != 2 or
            not all(isinstance(m, int) and not isinstance(m, bool) and 1 <= m <= 64 for m in meter)):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"'region.meter' must be [beats per bar, beat unit], e.g. [4, 4], "
                            f"got {meter!r}", job_id)
    bar = meter[0] * 60.0 / tempo  # tempo counts beats of the meter's unit (6/8: eighth notes)
    return max(1, round(duration / bar)) * bar


def _duration(h: dict[str, Any], infos: list[PcmInfo], job_id: str | None) -> tuple[float, PcmInfo | None]:
    """Region length in seconds: the longest given stem, else the `duration` field."""
    if infos:
        longest = max(infos, key=lambda i: i.frames / i.sample_rate)
        if longest.frames == 0:
            raise ProtocolError(ErrorCode.EMPTY_REGION, "the given stems are empty (0 samples)", job_id)
        return longest.frames / longest.sample_rate, longest
    if "duration" not in h:
        raise ProtocolError(ErrorCode.MISSING_FIELD, "'duration' is required when no stem is given", job_id)
    d = h["duration"]
    if isinstance(d, bool) or not isinstance(d, (int, float)) or not np.isfinite(d) or d < 0:
        raise ProtocolError(ErrorCode.BAD_FIELD, "'duration' must be a non-negative number of seconds", job_id)
    if d == 0:
        raise ProtocolError(ErrorCode.EMPTY_REGION, "'duration' is 0: empty region", job_id)
    return float(d), None


def _sampling_args(h: dict[str, Any], model: ModelInfo, limits: Limits,
                   job_id: str | None) -> tuple[int, int, str, str, int]:
    seed, steps = h.get("seed", 0), h.get("steps", model.default_steps)
    sampler = h.get("sampler", model.default_sampler)
    schedule = h.get("schedule", model.default_schedule)
    resample = h.get("resample", model.default_resample)
    if not 0 <= seed < MAX_SEED:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"'seed' must be in [0, 2**63), got {seed}", job_id)
    if not 1 <= steps <= limits.max_steps:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"'steps' must be in [1, {limits.max_steps}]", job_id)
    if sampler not in model.samplers:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"unknown sampler {sampler!r}; choose from "
                            f"{list(model.samplers)}", job_id)
    if schedule not in model.schedules:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"unknown schedule {schedule!r}; choose from "
                            f"{list(model.schedules)}", job_id)
    if not 1 <= resample <= MAX_RESAMPLE:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"'resample' must be in [1, {MAX_RESAMPLE}]", job_id)
    if steps * resample > limits.max_steps:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"'steps' x 'resample' must be at most {limits.max_steps}",
                            job_id)
    return int(seed), int(steps), sampler, schedule, int(resample)
