"""The MSLDM wire protocol: the ONE definition shared by the daemon (`server/`) and the bridge.

Transport: ZeroMQ. The daemon binds a ROUTER socket, clients connect a DEALER socket.
Every message is a multipart ZeroMQ message (as seen by the DEALER):

    frame 0      header: UTF-8 JSON object, at least {"type": <str>, "v": <int>}
    frame 1..n   payload: raw little-endian float32 PCM, interleaved when stereo;
                 one frame per entry of the header's PCM list (`given` for
                 `generate`, exactly one for `chunk`), in that order

No pickle, no other encodings. This module imports numpy and json only, so a C++ plugin
author can read it next to `docs/protocol.md` (checked against this module by a test).

Use `encode(header, pcm)` to build the frames of a message and `decode(frames)` to parse
and validate one; `decode` raises `ProtocolError` with a stable `ErrorCode`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Sequence

import numpy as np

PROTOCOL_VERSION = 1
"""Bumped on any incompatible change. A peer refuses headers with a newer `v`."""

PCM_DTYPE = np.dtype("<f4")
"""Sample format of every PCM frame: little-endian float32, interleaved channels."""

MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000
MAX_JOB_ID_LEN = 128
MAX_HEADER_BYTES = 64 * 1024
MIN_INT, MAX_INT = -(2 ** 63), 2 ** 64 - 1
"""Every integer in a header must fit in 64 bits (signed or unsigned)."""


class ErrorCode(str, Enum):
    """Stable error codes carried by `error` messages (`code` field). Never renumbered or renamed."""

    MALFORMED = "malformed_message"        # no header frame / empty multipart message
    BAD_JSON = "bad_json"                  # header is not UTF-8 JSON or not an object
    UNSUPPORTED_VERSION = "unsupported_version"  # header `v` newer than the peer speaks
    UNKNOWN_TYPE = "unknown_type"          # `type` is not a known client message
    MISSING_FIELD = "missing_field"        # a required header field is absent
    BAD_FIELD = "bad_field"                # a field has the wrong type or an out-of-range value
    TOO_LARGE = "too_large"                # message bigger than the daemon's `max_message_bytes`
    PCM_FRAME_COUNT = "pcm_frame_count"    # number of PCM frames != entries of the PCM list
    PCM_SIZE = "pcm_size_mismatch"         # a PCM frame's byte length != frames*channels*4
    NON_FINITE = "non_finite"              # NaN or Inf samples
    EMPTY_REGION = "empty_region"          # zero-length region
    SILENT_REGION = "silent_region"        # every given stem is digital silence
    REGION_TOO_LONG = "region_too_long"    # longer than the daemon's `max_region_seconds`
    UNKNOWN_STEM = "unknown_stem"          # a stem name the model does not have
    STEM_CONFLICT = "stem_conflict"        # a stem both given and requested (or listed twice)
    NOTHING_REQUESTED = "nothing_requested"  # `generate` list empty
    BAD_SAMPLE_RATE = "bad_sample_rate"    # outside [8000, 192000] Hz
    DUPLICATE_JOB = "duplicate_job"        # job id already queued/running for this client
    UNKNOWN_JOB = "unknown_job"            # cancel/status for a job this client does not have
    QUEUE_FULL = "queue_full"              # too many queued jobs; retry later
    CANCELLED = "cancelled"                # terminal message of a job cancelled by its client
    SHUTTING_DOWN = "shutting_down"        # daemon stopping; job cancelled / not accepted
    BAD_PATH = "bad_path"                  # OSC only: path outside the configured folders / unreadable
    INTERNAL = "internal"                  # a bug; the daemon logged it and stays up


class ProtocolError(Exception):
    """A message that breaks the protocol. `code` is an `ErrorCode`; `job_id` if known."""

    def __init__(self, code: ErrorCode, message: str, job_id: str | None = None):
        super().__init__(message)
        self.code, self.message, self.job_id = code, message, job_id


# ----------------------------------------------------------------------------- message specs

@dataclass(frozen=True)
class Field:
    """One header field: JSON `kind` ("str", "int", "number", "bool", "list", "object", "any"),
    whether it is `required`, and a one-line `doc`."""

    name: str
    kind: str
    required: bool
    doc: str


@dataclass(frozen=True)
class MessageSpec:
    """A message type: who sends it (`direction` "c2s" or "s2c"), its fields beyond
    `type`/`v`, and what PCM frames follow the header (`pcm`)."""

    type: str
    direction: str
    doc: str
    fields: tuple[Field, ...] = ()
    pcm: str = "none"


def _f(name: str, kind: str, required: bool, doc: str) -> Field:
    return Field(name, kind, required, doc)


_JOB = _f("job_id", "str", True, f"client-chosen id, 1-{MAX_JOB_ID_LEN} chars, unique among the client's live jobs")

CLIENT_MESSAGES: tuple[MessageSpec, ...] = (
    MessageSpec("hello", "c2s", "Ask for the daemon's capabilities; answered by `hello`."),
    MessageSpec("ping", "c2s", "Liveness check; answered by `pong` at once, even while a job runs.",
                (_f("token", "any", False, "echoed back in `pong`"),)),
    MessageSpec("status", "c2s", "Queue and job states; answered by `status`.",
                (_f("job_id", "str", False, "restrict to this job (else all of this client's jobs)"),)),
    MessageSpec("generate", "c2s", "Start a job: generate `generate` stems that fit the `given` ones.", (
        _JOB,
        _f("given", "list", True, "list of {stem, sample_rate, channels (1|2), frames}; one PCM frame each, in order; may be []"),
        _f("generate", "list", True, "stem names to generate, non-empty, disjoint from the given stems "
           "(with `redo`: exactly the redone stem, which is also given)"),
        _f("seed", "int", False, "0 <= seed < 2**63; default 0. Same seed + input = same output"),
        _f("takes", "int", False, "takes to make, 1..max_takes (default 1): sampled together as one batch, the "
           "given stems encoded once; take i has seed `seed + i` (seed + takes <= 2**63), the same stems a "
           "one-take request with that seed gets"),
        _f("redo", "object", False, "regenerate part of a stem: {stem, start, end} (seconds from the region "
           "start) or {stem, bars: [first, last]} (bar numbers, with `region.tempo`, `region.meter` and "
           "`region.start_bar`, default 1); `stem` is given (mono, at the output rate) and is the only stem "
           "in `generate`. Outside [start, end) the returned stem is the given one, sample for sample; inside, "
           "new audio that fits the other stems and the kept edges, crossfaded in over the range's first and "
           "last 20 ms"),
        _f("steps", "int", False, "sampler steps, 1..max_steps; default from the bundle"),
        _f("sampler", "str", False, "\"euler\" or \"heun\"; default from the bundle"),
        _f("schedule", "str", False, "noise schedule: \"karras\" or \"melody\" (few steps, after MeLoDy); default from the bundle"),
        _f("resample", "int", False, "passes per step, 1..max_resample (RePaint resampling: a tighter fit "
           "to the given stems, that many times the sampling time on the steps of the bundle's resample band, "
           "the steps where sigma >= 0.6 for the bundled model, which sends 3; steps x resample <= max_steps); "
           "default from the bundle, or 2 where the bass is among the given stems (`done` says which)"),
        _f("guidance", "number", False, "0..max_guidance: how strongly the generated stems follow the given ones' "
           "timing (given-part guidance: 1 is the model's own pull, more is tighter, each guided step costs a "
           "second denoiser call); default from the bundle (`default_guidance`), or where a guitar and/or piano "
           "alone are given its `harmony_given_guidance` (2 for the bundled model: see \"Given a guitar or piano "
           "alone\"; `done` says which). Ignored when nothing is given"),
        _f("candidates", "int", False, "1..max_candidates, where the given stems are the bass and drums alone: "
           "each window of each take is sampled that many times down to the middle noise levels and the "
           "candidate whose estimate of the given bass misses it least goes on (guitar and piano on the bass's "
           "chords more often; each candidate past the first adds about half a candidate's sampling time); "
           "default from the bundle (`default_candidates`, 2 for the bundled model). Ignored for other given "
           "stems (`done` says how many were sampled)"),
        _f("output_sample_rate", "int", False, "rate of the returned stems; default: first given stem's rate, else the model's"),
        _f("duration", "number", False, "region length in seconds; required when `given` is empty, ignored otherwise"),
        _f("region", "object", False, "DAW context, e.g. {tempo, meter, start_bar}; echoed back verbatim in `done`"),
        _f("silent_retries", "int", False, "0..4, default 2: a window of a take in which a generated stem comes out "
           "silent (under 5% of it above -50 dBFS) while a given stem sounds there, or with nothing given, or "
           "blown (a frame at or above -6 dBFS RMS, given stems sounding or not), is sampled again from that "
           "take's noise up to this many times, keeping an attempt that is not blown before one that is not "
           "silent, then the one whose quietest stem sounds most; 0 returns what the model made. Never applies "
           "to a redone stem"),
        _f("level", "str", False, "\"balance\" (default) or \"model\": with \"balance\", where stems are given "
           "and the bundle has a balance table (the bundled model does), each generated stem of a take is "
           "scaled so that it sits against the given stems where real parts typically sit (the median of the "
           "training corpus, per stem and set of given stems), by a gain judged on every window so far where it "
           "and a given stem sound, at most 12 dB either way; \"model\" returns the decoder's level. Total "
           "generation and a redo always keep the decoder's level (`done` says which, and each take's gains)"),
        _f("length", "str", False, "\"region\" (default: the longest given stem's length, else `duration`) or "
           "\"bars\": that length rounded to the nearest whole bar (at least one) by `region.tempo` (beats per "
           "minute, of the meter's beat unit, > 0) and `region.meter` ([beats per bar, beat unit], default "
           "[4, 4]): the stems start at the region start and end on a bar line, to the sample"),
    ), pcm="given"),
    MessageSpec("cancel", "c2s", "Cancel a queued or running job; the job ends with `error` code `cancelled`.",
                (_JOB,)),
)

SERVER_MESSAGES: tuple[MessageSpec, ...] = (
    MessageSpec("hello", "s2c", "Capabilities.", (
        _f("protocol_version", "int", True, "the daemon's PROTOCOL_VERSION"),
        _f("model", "str", True, "bundle model name"),
        _f("stems", "list", True, "stem names, in model order"),
        _f("sample_rate", "int", True, "model sample rate (Hz)"),
        _f("window_seconds", "number", True, "length of one generation window"),
        _f("overlap_seconds", "number", True, "overlap between consecutive windows"),
        _f("samplers", "list", True, "sampler names accepted in `generate`"),
        _f("default_steps", "int", True, "steps used when `generate` names none"),
        _f("schedules", "list", True, "noise schedule names accepted in `generate`"),
        _f("default_schedule", "str", True, "schedule used when `generate` names none"),
        _f("max_resample", "int", True, "largest `resample` accepted"),
        _f("default_resample", "int", True, "`resample` used when `generate` names none (where the bass is among the given stems, the manifest's `bass_given_resample`, 2 for the bundled model: see \"Given the bass\")"),
        _f("max_guidance", "number", True, "largest `guidance` accepted"),
        _f("default_guidance", "number", True, "`guidance` used when `generate` names none (where a guitar and/or "
           "piano alone are given, the manifest's `harmony_given_guidance`: see \"Given a guitar or piano alone\")"),
        _f("max_candidates", "int", True, "largest `candidates` accepted"),
        _f("default_candidates", "int", True, "`candidates` used when `generate` names none (only where the "
           "bass and drums alone are given)"),
        _f("providers", "object", True, "{encoder, denoiser, decoder}: onnxruntime provider each graph really runs on"),
        _f("limits", "object", True, "{max_message_bytes, max_region_seconds, max_steps, max_takes, max_queue "
           "(waiting jobs, all clients), max_queue_per_client (waiting jobs of one client), min_sample_rate, "
           "max_sample_rate}"),
    )),
    MessageSpec("pong", "s2c", "Reply to `ping`.", (
        _f("token", "any", False, "the ping's token"),
        _f("time", "number", True, "daemon wall clock (s since epoch)"),
    )),
    MessageSpec("status", "s2c", "Reply to `status`.", (
        _f("jobs", "list", True, "[{job_id, state (queued|running), position, step, total}] of this client"),
        _f("queued", "int", True, "jobs waiting, all clients"),
        _f("running", "int", True, "jobs running (0 or 1)"),
        _f("uptime", "number", True, "seconds since the daemon started"),
    )),
    MessageSpec("queued", "s2c", "A `generate` was accepted.", (
        _JOB, _f("position", "int", True, "jobs ahead of this one, the running job included (0: it starts now)"),
    )),
    MessageSpec("progress", "s2c", "After every sampler step.", (
        _JOB,
        _f("step", "int", True, "steps done, over all windows"),
        _f("total", "int", True, "steps in the whole job (windows * steps)"),
        _f("window", "int", True, "0-based window being sampled"),
        _f("windows", "int", True, "number of windows"),
        _f("eta", "number", True, "estimated seconds left"),
    )),
    MessageSpec("chunk", "s2c", "A piece of one generated stem; one PCM frame (mono float32).", (
        _JOB,
        _f("stem", "str", True, "stem name"),
        _f("offset", "int", True, "first sample's index in the stem, at `sample_rate`"),
        _f("frames", "int", True, "samples in the PCM frame"),
        _f("sample_rate", "int", True, "the job's output sample rate"),
        _f("channels", "int", True, "always 1"),
        _f("window", "int", True, "window this chunk comes from"),
        _f("take", "int", False, "0-based take this chunk belongs to (always sent; 0 for a one-take job, and "
           "read as 0 when absent); offsets run per take and stem"),
        _f("final", "bool", True, "last chunk of this stem (of this take)"),
    ), pcm="one"),
    MessageSpec("done", "s2c", "The job finished; every chunk was sent before this.", (
        _JOB,
        _f("stems", "list", True, "generated stem names"),
        _f("frames", "int", True, "length of every stem, at `sample_rate`"),
        _f("sample_rate", "int", True, "output sample rate"),
        _f("seed", "int", True, "seed used (take 0's)"),
        _f("takes", "list", False, "[{take, seed, silent_rerolls, tamed_windows}] of every take, in order (always sent; absent: "
           "one take); in a job of two or more takes each entry also has `fit` (0-1), `rank` (1: the "
           "best) and `stem_fit` ({stem: {rhythm, harmony, score}}): the daemon's estimate of how the take fits "
           "the given stems (Takes)"),
        _f("redo", "object", False, "with a `redo` request: {stem, start, end}, the range redone, in seconds"),
        _f("steps", "int", True, "steps used"),
        _f("sampler", "str", True, "sampler used"),
        _f("schedule", "str", True, "noise schedule used"),
        _f("resample", "int", True, "passes per step used"),
        _f("guidance", "number", False, "given-part guidance weight used (sent since the field existed)"),
        _f("candidates", "int", False, "candidates sampled per take and window (1 unless the bass and drums "
           "alone were given; sent since the field existed)"),
        _f("windows", "int", True, "number of model windows the region took"),
        _f("silent_retries", "int", False, "the `silent_retries` the job ran with"),
        _f("silent_rerolls", "int", False, "extra samplings of a window because a generated stem came out "
           "silent, buried under the given stems or blown, summed over takes (each entry of `takes` also has its own `silent_rerolls`)"),
        _f("level", "str", False, "\"balance\" where the generated stems were set to the balance table's level "
           "against the given stems, else \"model\" (each entry of `takes` has `level_gain_db`: stem -> the gain "
           "in dB of each window of its stem (0 before it first sounds beside a given stem), empty where none was "
           "applied; sent since the field existed)"),
        _f("tamed_windows", "int", False, "windows in which a generated stem came out blown at every sampling "
           "and was turned down to just under the blown level rather than sent as made, summed over takes "
           "(each entry of `takes` has its own); a take with any is worth a listen before it is kept"),
        _f("timings", "object", True, "seconds per stage: queue, prepare, encode, sample, decode, "
           "convert_rate (to the output sample rate; also sent as `resample`, its old name), rank (scoring "
           "the takes; 0 for one take), total"),
        _f("region", "object", False, "the request's `region`, verbatim"),
    )),
    MessageSpec("error", "s2c", "A request failed or a job ended without result.", (
        _f("job_id", "str", False, "the job concerned, when known"),
        _f("code", "str", True, "an ErrorCode value (stable)"),
        _f("message", "str", True, "human-readable explanation"),
    )),
    MessageSpec("heartbeat", "s2c", "Sent every `heartbeat_seconds` to clients with live jobs.", (
        _f("jobs", "list", True, "[{job_id, state}] of this client's live jobs"),
        _f("time", "number", True, "daemon wall clock"),
    )),
)

CLIENT_SPECS: dict[str, MessageSpec] = {m.type: m for m in CLIENT_MESSAGES}
SERVER_SPECS: dict[str, MessageSpec] = {m.type: m for m in SERVER_MESSAGES}

def is_number(v: Any) -> bool:
    """A finite JSON number: any int (however large; `math.isfinite` and `np.isfinite` fail on
    ints past float or int64 range) or a finite float; never a bool."""
    return not isinstance(v, bool) and (isinstance(v, int) or (isinstance(v, float) and math.isfinite(v)))


_KIND_CHECKS: dict[str, Callable[[Any], bool]] = {
    "str": lambda v: isinstance(v, str),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": is_number,
    "bool": lambda v: isinstance(v, bool),
    "list": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "any": lambda v: True,
}


# ----------------------------------------------------------------------------- PCM

@dataclass(frozen=True)
class PcmInfo:
    """Shape of one PCM frame: `frames` samples per channel, `channels` interleaved."""

    stem: str
    sample_rate: int
    channels: int
    frames: int

    @property
    def nbytes(self) -> int:
        return self.frames * self.channels * PCM_DTYPE.itemsize


def pcm_to_bytes(audio: np.ndarray) -> bytes:
    """`[N]` mono or `[N, ch]` interleaved audio -> little-endian float32 bytes."""
    return np.ascontiguousarray(audio, dtype=PCM_DTYPE).tobytes()


def pcm_from_bytes(buf: bytes | memoryview, channels: int = 1) -> np.ndarray:
    """Bytes -> `[N]` (channels == 1) or `[N, channels]` float32 (native order copy)."""
    if len(buf) % (PCM_DTYPE.itemsize * channels):
        raise ProtocolError(ErrorCode.PCM_SIZE, f"{len(buf)} bytes is not a whole number of "
                            f"{channels}-channel float32 samples")
    a = np.frombuffer(buf, dtype=PCM_DTYPE).astype(np.float32)
    return a if channels == 1 else a.reshape(-1, channels)


# ----------------------------------------------------------------------------- encode / decode

def encode(header: dict[str, Any], pcm: Sequence[np.ndarray | bytes] = ()) -> list[bytes]:
    """Frames of one message: JSON header (with `v` added) then raw PCM frames.

    `header` must hold `type`; arrays are converted with `pcm_to_bytes`."""
    if "type" not in header:
        raise ValueError("header needs a 'type'")
    h = {"v": PROTOCOL_VERSION, **header}
    frames = [json.dumps(h, separators=(",", ":"), allow_nan=False).encode("utf-8")]
    for p in pcm:
        frames.append(p if isinstance(p, (bytes, bytearray, memoryview)) else pcm_to_bytes(p))
    return [bytes(f) for f in frames]


def parse_header(raw: bytes | memoryview) -> dict[str, Any]:
    """Header frame -> dict with a str `type` and an int `v` <= PROTOCOL_VERSION.

    Raises ProtocolError (BAD_JSON, MISSING_FIELD, BAD_FIELD, UNSUPPORTED_VERSION)."""
    if len(raw) > MAX_HEADER_BYTES:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"header over {MAX_HEADER_BYTES} bytes")
    try:
        h = json.loads(bytes(raw).decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ProtocolError(ErrorCode.BAD_JSON, f"header is not valid UTF-8 JSON: {e}") from None
    if not isinstance(h, dict):
        raise ProtocolError(ErrorCode.BAD_JSON, "header must be a JSON object")
    for name in ("type", "v"):
        if name not in h:
            raise ProtocolError(ErrorCode.MISSING_FIELD, f"header lacks {name!r}")
    if not isinstance(h["type"], str):
        raise ProtocolError(ErrorCode.BAD_FIELD, "'type' must be a string")
    if not _KIND_CHECKS["int"](h["v"]) or h["v"] < 1:
        raise ProtocolError(ErrorCode.BAD_FIELD, "'v' must be a positive integer")
    if h["v"] > PROTOCOL_VERSION:
        raise ProtocolError(ErrorCode.UNSUPPORTED_VERSION,
                            f"protocol version {h['v']} is newer than {PROTOCOL_VERSION}")
    check_numbers(h)
    return h


def check_numbers(h: dict[str, Any]) -> None:
    """Every number anywhere in `h` must be a finite double or a 64-bit integer (JSON text
    such as `1e400` or `2**70` parses, but cannot be used or sent back). Raises BAD_FIELD
    naming the field's path (`region.start.seconds`, `given[0].frames`)."""
    bad = _first_bad_number(h)
    if bad is not None:
        path, value = bad
        job_id = valid_job_id(h)
        what = "is not a finite number" if isinstance(value, float) else "does not fit in 64 bits"
        raise ProtocolError(ErrorCode.BAD_FIELD, f"{path!r} {what} (integers must lie in "
                            f"[-2**63, 2**64), other numbers must be finite doubles)", job_id)


def _first_bad_number(h: dict[str, Any]) -> tuple[str, Any] | None:
    """`(path, value)` of the first non-finite float or out-of-range int in `h`, else None.
    Iterative, so a deeply nested header cannot exhaust the stack."""
    stack: list[tuple[str, Any]] = [(k, v) for k, v in reversed(h.items())]
    while stack:
        path, v = stack.pop()
        if isinstance(v, bool) or v is None or isinstance(v, str):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            return path, v
        if isinstance(v, int) and not MIN_INT <= v <= MAX_INT:
            return path, v
        if isinstance(v, dict):
            stack.extend((f"{path}.{k}", x) for k, x in reversed(v.items()))
        elif isinstance(v, list):
            stack.extend((f"{path}[{i}]", x) for i, x in reversed(list(enumerate(v))))
    return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def valid_job_id(h: dict[str, Any]) -> str | None:
    """`h["job_id"]` when it is a valid job id (a string of 1-MAX_JOB_ID_LEN characters),
    else None: an error about a message with an invalid job id carries none."""
    j = h.get("job_id")
    return j if isinstance(j, str) and 1 <= len(j) <= MAX_JOB_ID_LEN else None


def check_fields(h: dict[str, Any], spec: MessageSpec) -> None:
    """Presence and JSON types of `spec`'s fields in `h`; raises ProtocolError."""
    job_id = valid_job_id(h)
    for f in spec.fields:
        if f.name not in h:
            if f.required:
                raise ProtocolError(ErrorCode.MISSING_FIELD, f"'{spec.type}' needs {f.name!r}", job_id)
            continue
        if not _KIND_CHECKS[f.kind](h[f.name]):
            raise ProtocolError(ErrorCode.BAD_FIELD, f"{f.name!r} must be of type {f.kind}", job_id)
    if "job_id" in h and valid_job_id(h) is None:
        # also where the message type has no job_id field: a stray non-string one is still refused
        raise ProtocolError(ErrorCode.BAD_FIELD, f"'job_id' must be a string of 1-{MAX_JOB_ID_LEN} characters")


@dataclass
class Message:
    """A decoded message: `header` (validated) and its raw PCM `frames` (the buffers as
    received, not copied: bytes or memoryviews)."""

    type: str
    header: dict[str, Any]
    pcm: list[bytes | memoryview] = field(default_factory=list)

    @property
    def job_id(self) -> str | None:
        """The header's job id, if valid (else None)."""
        return valid_job_id(self.header)


def decode(frames: Sequence[bytes | memoryview], *, incoming: str = "c2s") -> Message:
    """Parse the frames of one message sent in `incoming` direction ("c2s": a request the
    daemon receives; "s2c": a reply the client receives). Checks the header, the field
    types and, for PCM-carrying messages, the frame count and byte lengths."""
    if not frames:
        raise ProtocolError(ErrorCode.MALFORMED, "empty message: no header frame")
    h = parse_header(frames[0])
    specs = CLIENT_SPECS if incoming == "c2s" else SERVER_SPECS
    spec = specs.get(h["type"])
    if spec is None:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {h['type']!r}; "
                            f"expected one of {sorted(specs)}")
    check_fields(h, spec)
    pcm = [f if isinstance(f, (bytes, memoryview)) else bytes(f) for f in frames[1:]]  # no copy
    if spec.pcm == "given":
        infos = given_infos(h)
        _check_pcm(pcm, [i.nbytes for i in infos], valid_job_id(h))
    elif spec.pcm == "one":
        nbytes = h["frames"] * h["channels"] * PCM_DTYPE.itemsize
        _check_pcm(pcm, [nbytes], valid_job_id(h))
    elif pcm:
        raise ProtocolError(ErrorCode.PCM_FRAME_COUNT, f"'{spec.type}' carries no PCM frames, got {len(pcm)}")
    return Message(h["type"], h, pcm)


def _check_pcm(pcm: list[bytes | memoryview], sizes: list[int], job_id: str | None) -> None:
    if len(pcm) != len(sizes):
        raise ProtocolError(ErrorCode.PCM_FRAME_COUNT,
                            f"expected {len(sizes)} PCM frames, got {len(pcm)}", job_id)
    for i, (buf, n) in enumerate(zip(pcm, sizes)):
        if len(buf) != n:
            raise ProtocolError(ErrorCode.PCM_SIZE,
                                f"PCM frame {i} has {len(buf)} bytes, header says {n}", job_id)


def given_infos(h: dict[str, Any]) -> list[PcmInfo]:
    """The `given` list of a `generate` header as PcmInfo, with types and rates checked."""
    job_id = valid_job_id(h)
    out = []
    for i, g in enumerate(h["given"]):
        if not isinstance(g, dict):
            raise ProtocolError(ErrorCode.BAD_FIELD, f"given[{i}] must be an object", job_id)
        for name, kind in (("stem", "str"), ("sample_rate", "int"), ("channels", "int"), ("frames", "int")):
            if name not in g:
                raise ProtocolError(ErrorCode.MISSING_FIELD, f"given[{i}] lacks {name!r}", job_id)
            if not _KIND_CHECKS[kind](g[name]):
                raise ProtocolError(ErrorCode.BAD_FIELD, f"given[{i}].{name} must be {kind}", job_id)
        if g["channels"] not in (1, 2):
            raise ProtocolError(ErrorCode.BAD_FIELD, f"given[{i}].channels must be 1 or 2", job_id)
        if g["frames"] < 0:
            raise ProtocolError(ErrorCode.BAD_FIELD, f"given[{i}].frames must be >= 0", job_id)
        check_sample_rate(g["sample_rate"], f"given[{i}].sample_rate", job_id)
        out.append(PcmInfo(g["stem"], g["sample_rate"], g["channels"], g["frames"]))
    return out


def check_sample_rate(rate: Any, what: str, job_id: str | None = None) -> int:
    """`rate` as int if it lies in [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE]; else BAD_SAMPLE_RATE."""
    if not _KIND_CHECKS["int"](rate) or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise ProtocolError(ErrorCode.BAD_SAMPLE_RATE, f"{what} = {rate!r} is outside "
                            f"{MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz", job_id)
    return int(rate)


def error_header(code: ErrorCode, message: str, job_id: str | None = None) -> dict[str, Any]:
    """Header of an `error` message."""
    h: dict[str, Any] = {"type": "error", "code": code.value, "message": message}
    if job_id is not None:
        h["job_id"] = job_id
    return h


# ----------------------------------------------------------------------------- documentation

def spec_markdown() -> str:
    """The message tables of `docs/protocol.md`, generated from the specs above (a test
    checks the document contains exactly this text)."""
    lines = ["<!-- BEGIN GENERATED: python -c 'import plugin_bridge.protocol as p; print(p.spec_markdown())' -->", ""]
    for title, specs in (("Client to daemon", CLIENT_MESSAGES), ("Daemon to client", SERVER_MESSAGES)):
        lines.append(f"### {title}")
        lines.append("")
        for m in specs:
            pcm = {"none": "no PCM frames", "given": "one PCM frame per `given` entry",
                   "one": "one PCM frame"}[m.pcm]
            lines += [f"#### `{m.type}`", "", f"{m.doc} ({pcm})", ""]
            if m.fields:
                lines += ["| field | type | required | meaning |", "|---|---|---|---|"]
                lines += [f"| `{f.name}` | {f.kind} | {'yes' if f.required else 'no'} | {f.doc} |"
                          for f in m.fields]
                lines.append("")
    lines += ["### Error codes", "", "| code | meaning |", "|---|---|"]
    lines += [f"| `{c.value}` | {_ERROR_DOCS[c]} |" for c in ErrorCode]
    lines += ["", "<!-- END GENERATED -->"]
    return "\n".join(lines)


_ERROR_DOCS: dict[ErrorCode, str] = {
    ErrorCode.MALFORMED: "empty multipart message, no header frame; OSC: a packet that is not OSC",
    ErrorCode.BAD_JSON: "header frame is not UTF-8 JSON or not an object (NaN/Infinity are not JSON)",
    ErrorCode.UNSUPPORTED_VERSION: "header `v` is newer than the daemon's protocol version",
    ErrorCode.UNKNOWN_TYPE: "`type` is not a client message type",
    ErrorCode.MISSING_FIELD: "a required field is absent",
    ErrorCode.BAD_FIELD: "a field has the wrong JSON type or an invalid value, or a number anywhere in the "
                         "header is not a finite double or a 64-bit integer (`1e400`, `2**70`); the message "
                         "names the field",
    ErrorCode.TOO_LARGE: "message (all frames) over `limits.max_message_bytes`, or header over 64 KiB",
    ErrorCode.PCM_FRAME_COUNT: "number of PCM frames differs from the header's PCM list",
    ErrorCode.PCM_SIZE: "a PCM frame's byte length differs from frames * channels * 4",
    ErrorCode.NON_FINITE: "PCM holds NaN or Inf",
    ErrorCode.EMPTY_REGION: "the region has zero length",
    ErrorCode.SILENT_REGION: "every given stem is digital silence: nothing to accompany",
    ErrorCode.REGION_TOO_LONG: "region longer than `limits.max_region_seconds`",
    ErrorCode.UNKNOWN_STEM: "a stem name the model does not know",
    ErrorCode.STEM_CONFLICT: "a stem both given and requested, or listed twice",
    ErrorCode.NOTHING_REQUESTED: "`generate` is empty",
    ErrorCode.BAD_SAMPLE_RATE: "a sample rate outside 8000-192000 Hz",
    ErrorCode.DUPLICATE_JOB: "this client already has a live job with that id",
    ErrorCode.UNKNOWN_JOB: "no live job with that id for this client",
    ErrorCode.QUEUE_FULL: "`limits.max_queue` jobs are waiting (all clients), or this client already has "
                          "`limits.max_queue_per_client` waiting; retry later",
    ErrorCode.CANCELLED: "the job was cancelled by its client (terminal message of the job)",
    ErrorCode.SHUTTING_DOWN: "the daemon is stopping; the job was cancelled or not accepted",
    ErrorCode.BAD_PATH: "OSC: a path outside the configured folders, a symlink out, or unreadable",
    ErrorCode.INTERNAL: "a daemon bug; logged with its traceback, the daemon stays up; a job it hits still ends",
}
