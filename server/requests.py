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
                                    given_infos, is_number, pcm_from_bytes)
from msldm.config import MAX_GUIDANCE, MAX_SELECT
from msldm.sampling import MAX_RESAMPLE
from server import audio as audio_ops
from server.levels import LEVELS
from server.windowing import SILENT_RETRIES

MAX_SEED = 2 ** 63
MAX_SILENT_RETRIES = 4
REDO_FADE_SECONDS = 0.02  # crossfade at each end of a redone range, inside the range


@dataclass(frozen=True)
class Limits:
    """What the daemon accepts (sent to clients in `hello`)."""

    max_message_bytes: int = 512 * 1024 * 1024
    max_region_seconds: float = 600.0
    max_steps: int = 1000
    max_takes: int = 8  # takes of one request (sampled as one batch)
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
                "max_steps": self.max_steps, "max_takes": self.max_takes, "max_queue": self.max_queue,
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
    default_guidance: float = 1.0
    default_candidates: int = 1  # candidates per window given the bass and drums alone (bass_drums_select)


@dataclass(frozen=True)
class Redo:
    """Regenerate `stem` over [start, end) seconds from the region start; keep it elsewhere."""

    stem: str
    start: float
    end: float

    def to_dict(self) -> dict[str, Any]:
        return {"stem": self.stem, "start": self.start, "end": self.end}


@dataclass
class JobRequest:
    """A validated generation request.

    `given`: stem -> (`[n]` mono float32 at `given_rates[stem]`). `generate`: the stems to
    generate, in model order (the protocol's field name). `duration`: region length in
    seconds; `output_frames`: exact length of every output stem at `output_sample_rate`.
    `takes`: takes to make (seeds `seed`, `seed + 1`, ...); `redo`: the range of a given stem to
    make again (then `generate` is that stem alone)."""

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
    resample_asked: bool = False  # whether the request set `resample` (else the bundle's, or the daemon's choice)
    guidance: float = 1.0
    guidance_asked: bool = False  # whether the request set `guidance` (else the bundle's, or the daemon's choice)
    takes: int = 1
    redo: Redo | None = None
    silent_retries: int = SILENT_RETRIES
    candidates: int = 1  # candidates per take and window where the bass and drums alone are given
    level: str = "balance"  # the generated stems' level: "balance" against the given stems, or "model"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def seeds(self) -> list[int]:
        """The seed of every take: `seed`, `seed + 1`, ..."""
        return [self.seed + i for i in range(self.takes)]

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
    redo_stem = _redo_stem(h, infos, job_id)
    generate = _check_stems(h["generate"], [i for i in infos if i.stem != redo_stem], model, job_id)
    if redo_stem is not None and generate != [redo_stem]:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"with 'redo', 'generate' must be [{redo_stem!r}], the redone "
                            f"stem alone, got {h['generate']!r}", job_id)
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
    default_rate = rates[redo_stem] if redo_stem is not None else (infos[0].sample_rate if infos else
                                                                    model.sample_rate)
    rate = check_sample_rate(h.get("output_sample_rate", default_rate), "output_sample_rate", job_id)
    if redo_stem is not None and rate != rates[redo_stem]:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"with 'redo', 'output_sample_rate' must be the redone stem's "
                            f"rate ({rates[redo_stem]} Hz), so the kept samples stay exactly as sent", job_id)
    if longest is not None:
        frames = audio_ops.exact_length(longest.frames, longest.sample_rate, rate)
    else:
        frames = round(duration * rate)
    if frames < 1:
        raise ProtocolError(ErrorCode.EMPTY_REGION, "region is shorter than one output sample", job_id)
    seed, steps, sampler, schedule, resample = _sampling_args(h, model, limits, job_id)
    takes = _takes(h, seed, limits, job_id)
    redo = None if redo_stem is None else _redo_range(h, redo_stem, frames / rate, rate, job_id)
    guidance = _guidance(h, model, job_id)
    candidates = _candidates(h, model, job_id)
    retries = h.get("silent_retries", SILENT_RETRIES)
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_SILENT_RETRIES:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"'silent_retries' must be an integer in [0, {MAX_SILENT_RETRIES}], "
                            f"got {retries!r}", job_id)
    level = h.get("level", "balance")
    if level not in LEVELS:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"'level' must be one of {', '.join(map(repr, LEVELS))}, "
                            f"got {level!r}", job_id)
    return JobRequest(job_id, given, rates, generate, duration, rate, frames, seed, steps,
                      sampler, h.get("region"), schedule=schedule, resample=resample,
                      resample_asked="resample" in h, takes=takes, redo=redo,
                      silent_retries=retries, guidance=guidance, guidance_asked="guidance" in h,
                      candidates=candidates, level=level)


def _guidance(h: dict[str, Any], model: ModelInfo, job_id: str | None) -> float:
    g = h.get("guidance", model.default_guidance)
    if not is_number(g) or not 0 <= g <= MAX_GUIDANCE:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"'guidance' must be a number in [0, {MAX_GUIDANCE:g}] "
                            f"(1: the model's own pull), got {g!r}", job_id)
    return float(g)


def _candidates(h: dict[str, Any], model: ModelInfo, job_id: str | None) -> int:
    c = h.get("candidates", model.default_candidates)
    if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= MAX_SELECT:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"'candidates' must be an integer in [1, {MAX_SELECT}], "
                            f"got {c!r}", job_id)
    return c


def _takes(h: dict[str, Any], seed: int, limits: Limits, job_id: str | None) -> int:
    takes = h.get("takes", 1)
    if isinstance(takes, bool) or not isinstance(takes, int) or not 1 <= takes <= limits.max_takes:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"'takes' must be an integer in [1, {limits.max_takes}], "
                            f"got {takes!r}", job_id)
    if seed + takes > MAX_SEED:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"'seed' + 'takes' must be at most 2**63 (take i has seed "
                            "seed + i)", job_id)
    return takes


def _redo_stem(h: dict[str, Any], infos: list[PcmInfo], job_id: str | None) -> str | None:
    """The stem named by `redo` (checked given and mono), or None without `redo`."""
    if "redo" not in h:
        return None
    redo = h["redo"]
    if not isinstance(redo, dict) or not isinstance(redo.get("stem"), str):
        raise ProtocolError(ErrorCode.BAD_FIELD, "'redo' must be an object {stem, start, end} or {stem, bars}",
                            job_id)
    matches = [i for i in infos if i.stem == redo["stem"]]
    if len(matches) > 1:
        raise ProtocolError(ErrorCode.STEM_CONFLICT, "a stem is listed twice", job_id)
    if not matches:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"'redo.stem' {redo['stem']!r} must be one of the given stems: "
                            "send the stem to redo", job_id)
    info = matches[0]
    if info.channels != 1:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"the redone stem {info.stem!r} must be mono (as the daemon "
                            "returned it), so the kept samples can come back exactly", job_id)
    return info.stem


def _redo_range(h: dict[str, Any], stem: str, seconds: float, rate: int, job_id: str | None) -> Redo:
    """[start, end) of `redo` in seconds from the region start, checked inside the region."""
    redo = h["redo"]
    if "bars" in redo:
        bars, region = redo["bars"], h.get("region")
        if (not isinstance(bars, list) or len(bars) != 2 or
                not all(isinstance(b, int) and not isinstance(b, bool) for b in bars) or bars[1] < bars[0]):
            raise ProtocolError(ErrorCode.BAD_FIELD, f"'redo.bars' must be [first, last] bar numbers, first <= "
                                f"last, got {bars!r}", job_id)
        bar = _bar_seconds(region, job_id, "'redo.bars'")
        first = region.get("start_bar", 1)
        if isinstance(first, bool) or not isinstance(first, int):
            raise ProtocolError(ErrorCode.BAD_FIELD, f"'region.start_bar' must be an integer, got {first!r}", job_id)
        start, end = (bars[0] - first) * bar, (bars[1] + 1 - first) * bar
        if start < 0 or end > seconds + 1.0 / rate:
            last = first + max(1, round(seconds / bar)) - 1
            raise ProtocolError(ErrorCode.BAD_FIELD, f"'redo.bars' {bars[0]}-{bars[1]} lie outside the region "
                                f"(bars {first}-{last})", job_id)
        end = min(end, seconds)
    else:
        start, end = redo.get("start"), redo.get("end")
        if not all(is_number(v) for v in (start, end)):
            raise ProtocolError(ErrorCode.MISSING_FIELD if start is None or end is None else ErrorCode.BAD_FIELD,
                                "'redo' needs 'start' and 'end' (seconds from the region start) or 'bars'",
                                job_id)
        if not 0 <= start < end <= seconds + 1.0 / rate:
            raise ProtocolError(ErrorCode.BAD_FIELD, f"'redo' range {start}-{end} s must satisfy 0 <= start < end "
                                f"<= the region's {seconds:.3f} s", job_id)
        end = min(float(end), seconds)
    if round(end * rate) - round(start * rate) < 2:
        raise ProtocolError(ErrorCode.EMPTY_REGION, "the 'redo' range is shorter than two output samples", job_id)
    return Redo(stem, float(start), float(end))


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
    bar = _bar_seconds(h.get("region"), job_id, "'length': \"bars\"")
    return max(1, round(duration / bar)) * bar


def beat_seconds(region: Any) -> float | None:
    """The beat of a request's `region` ({tempo, meter}) in seconds, for the take ranking's
    grid: a bar (`_bar_seconds`) over its beats, a dotted quarter in compound meters (6/8, 9/8,
    12/8); None when the region gives no usable tempo or meter (the grid is then estimated)."""
    try:
        bar = _bar_seconds(region, None, "the take ranking")
    except ProtocolError:
        return None
    beats, unit = region.get("meter", [4, 4])
    return bar / beats * (3 if unit == 8 and beats % 3 == 0 else 1)


def _bar_seconds(region: Any, job_id: str | None, what: str) -> float:
    """Seconds per bar of `region.tempo` and `region.meter` (default [4, 4]); `what` names the
    field that needs them in the error."""
    if not isinstance(region, dict) or "tempo" not in region:
        raise ProtocolError(ErrorCode.MISSING_FIELD, f"{what} needs 'region.tempo' (and "
                            "'region.meter', default [4, 4])", job_id)
    tempo, meter = region["tempo"], region.get("meter", [4, 4])
    if isinstance(tempo, bool) or not isinstance(tempo, (int, float)) or not 0 < tempo <= 2000:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"'region.tempo' must be beats per minute in (0, 2000], got {tempo!r}",
                            job_id)
    if (not isinstance(meter, list) or len(meter) != 2 or
            not all(isinstance(m, int) and not isinstance(m, bool) and 1 <= m <= 64 for m in meter)):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"'region.meter' must be [beats per bar, beat unit], e.g. [4, 4], "
                            f"got {meter!r}", job_id)
    return meter[0] * 60.0 / tempo  # tempo counts beats of the meter's unit (6/8: eighth notes)


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
    if not is_number(d) or d < 0:
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
