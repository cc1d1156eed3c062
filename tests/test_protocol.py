"""The wire protocol module: encode/decode, validation, the generated document, a fuzz."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugin_bridge import protocol as P
from plugin_bridge.protocol import ErrorCode, ProtocolError

ROOT = Path(__file__).resolve().parents[1]


def _gen(**kw):
    h = {"type": "generate", "job_id": "a", "given": [{"stem": "bass", "sample_rate": 44100,
                                                        "channels": 2, "frames": 3}],
         "generate": ["drums"]}
    h.update(kw)
    return h


def test_round_trip_keeps_header_and_pcm():
    stereo = np.arange(6, dtype=np.float32).reshape(3, 2)
    frames = P.encode(_gen(seed=5), [stereo])
    assert json.loads(frames[0])["v"] == P.PROTOCOL_VERSION
    assert frames[1] == stereo.astype("<f4").tobytes()  # interleaved little-endian
    msg = P.decode(frames)
    assert msg.type == "generate" and msg.job_id == "a" and msg.header["seed"] == 5
    np.testing.assert_array_equal(P.pcm_from_bytes(msg.pcm[0], 2), stereo)


def test_chunk_direction_checks_one_frame():
    frames = P.encode({"type": "chunk", "job_id": "a", "stem": "drums", "offset": 0, "frames": 4,
                       "sample_rate": 48000, "channels": 1, "window": 0, "final": True},
                      [np.zeros(4, np.float32)])
    assert P.decode(frames, incoming="s2c").type == "chunk"
    with pytest.raises(ProtocolError) as e:
        P.decode(frames[:1], incoming="s2c")
    assert e.value.code is ErrorCode.PCM_FRAME_COUNT
    with pytest.raises(ProtocolError) as e:  # a server message sent to the server
        P.decode(frames)
    assert e.value.code is ErrorCode.UNKNOWN_TYPE


@pytest.mark.parametrize("frames, code", [
    ([], ErrorCode.MALFORMED),
    ([b"\xff\xfe"], ErrorCode.BAD_JSON),
    ([b"[1, 2]"], ErrorCode.BAD_JSON),
    ([b'{"type": "ping", "v": NaN}'], ErrorCode.BAD_JSON),
    ([b'{"v": 1}'], ErrorCode.MISSING_FIELD),
    ([b'{"type": "ping"}'], ErrorCode.MISSING_FIELD),
    ([b'{"type": 3, "v": 1}'], ErrorCode.BAD_FIELD),
    ([b'{"type": "ping", "v": 2}'], ErrorCode.UNSUPPORTED_VERSION),
    ([b'{"type": "teleport", "v": 1}'], ErrorCode.UNKNOWN_TYPE),
    ([b'{"type": "ping", "v": 1}', b"x"], ErrorCode.PCM_FRAME_COUNT),
    ([b'{"type": "cancel", "v": 1}'], ErrorCode.MISSING_FIELD),
    ([b'{"type": "cancel", "v": 1, "job_id": ""}'], ErrorCode.BAD_FIELD),
    ([b'{"type": "cancel", "v": 1, "job_id": 7}'], ErrorCode.BAD_FIELD),
    ([b'{"type": "hello", "v": 1, "job_id": 0}'], ErrorCode.BAD_FIELD),  # found by the fuzz test
    ([b" " * (P.MAX_HEADER_BYTES + 1)], ErrorCode.TOO_LARGE),
])
def test_bad_frames_get_stable_codes(frames, code):
    with pytest.raises(ProtocolError) as e:
        P.decode(frames)
    assert e.value.code is code


def test_generate_pcm_checks():
    h = _gen()
    ok = np.zeros((3, 2), np.float32)
    with pytest.raises(ProtocolError) as e:
        P.decode(P.encode(h, [ok, ok]))
    assert e.value.code is ErrorCode.PCM_FRAME_COUNT and e.value.job_id == "a"
    with pytest.raises(ProtocolError) as e:
        P.decode(P.encode(h, [ok[:2]]))
    assert e.value.code is ErrorCode.PCM_SIZE
    for given, code in (([{"stem": "bass"}], ErrorCode.MISSING_FIELD),
                        ([{"stem": "bass", "sample_rate": 4000, "channels": 1, "frames": 3}], ErrorCode.BAD_SAMPLE_RATE),
                        ([{"stem": "bass", "sample_rate": 8000, "channels": 3, "frames": 3}], ErrorCode.BAD_FIELD),
                        (["bass"], ErrorCode.BAD_FIELD)):
        with pytest.raises(ProtocolError) as e:
            P.decode(P.encode(_gen(given=given), [ok]))
        assert e.value.code is code


def test_docs_contain_the_generated_tables():
    doc = (ROOT / "docs" / "protocol.md").read_text()
    assert P.spec_markdown() in doc, "docs/protocol.md is out of date: regenerate its tables"
    for code in ErrorCode:
        assert f"`{code.value}`" in doc


def test_every_error_code_is_documented_and_unique():
    values = [c.value for c in ErrorCode]
    assert len(values) == len(set(values))
    assert set(P._ERROR_DOCS) == set(ErrorCode)


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                     | st.text(max_size=8),
                     lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                     max_leaves=12)
_headers = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["hello", "ping", "status", "generate", "cancel", "chunk", "x"]) | st.integers(),
    "v": st.integers(-2, 3) | st.text(max_size=2),
    "job_id": st.text(max_size=4) | st.integers(),
    "given": st.lists(st.fixed_dictionaries({}, optional={
        "stem": st.text(max_size=5), "sample_rate": st.integers(0, 300_000),
        "channels": st.integers(-1, 3), "frames": st.integers(-2, 5)}), max_size=2) | _json,
    "generate": _json, "token": _json})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(h=_headers, raw=st.binary(max_size=64), n_pcm=st.integers(0, 3), use_raw=st.booleans())
def test_fuzz_decode_raises_only_protocol_errors(h, raw, n_pcm, use_raw):
    """Whatever arrives, decode returns a Message or raises ProtocolError with a known code."""
    head = raw if use_raw else json.dumps(h).encode()
    frames = [head] + [raw[: 4 * i] for i in range(n_pcm)]
    try:
        msg = P.decode(frames)
    except ProtocolError as e:
        assert isinstance(e.code, ErrorCode) and e.message
    else:
        assert msg.type in P.CLIENT_SPECS and msg.header["v"] <= P.PROTOCOL_VERSION


# ----------------------------------------------------------------------------- numbers (issue 14)

def _raw(header_text: str) -> list[bytes]:
    """One header frame from literal JSON text (so overflowing literals reach the parser)."""
    return [header_text.encode()]


@pytest.mark.parametrize("text, field", [
    ('{"type": "ping", "v": 1, "token": 1e400}', "token"),
    ('{"type": "ping", "v": 1, "token": [0, -1e400]}', "token[1]"),
    ('{"type": "generate", "v": 1, "job_id": "a", "given": [], "generate": ["bass"], "duration": 1e400}',
     "duration"),
    ('{"type": "generate", "v": 1, "job_id": "a", "given": [], "generate": ["bass"], "duration": 1,'
     ' "region": {"start": {"seconds": 1e400}}}', "region.start.seconds"),
    ('{"type": "generate", "v": 1, "job_id": "a", "given": [], "generate": ["bass"], "duration": %d}' % 2 ** 70,
     "duration"),
    ('{"type": "generate", "v": 1, "job_id": "a", "given": [{"stem": "bass", "sample_rate": 8000,'
     ' "channels": 1, "frames": %d}], "generate": ["drums"]}' % 2 ** 64, "given[0].frames"),
    ('{"type": "generate", "v": 1, "job_id": "a", "given": [], "generate": ["bass"], "seed": -%d}' % 2 ** 64,
     "seed"),
])
def test_overflowing_numbers_are_bad_field_naming_the_field(text, field):
    """Valid JSON text whose numbers do not fit a double / 64-bit integer: bad_field, with
    the field's path in the message and the job id kept (fault 2 of issue 14)."""
    with pytest.raises(ProtocolError) as e:
        P.decode(_raw(text))
    assert e.value.code is ErrorCode.BAD_FIELD, e.value.message
    assert repr(field) in e.value.message
    if '"job_id"' in text:
        assert e.value.job_id == "a"


def test_numbers_that_fit_64_bits_still_pass():
    """Backward compatible: the largest unsigned 64-bit token and finite floats are accepted."""
    msg = P.decode(_raw('{"type": "ping", "v": 1, "token": [%d, -%d, 1.5e308]}' % (2 ** 64 - 1, 2 ** 63)))
    assert msg.header["token"] == [2 ** 64 - 1, -(2 ** 63), 1.5e308]


def test_deeply_nested_header_is_refused_not_a_crash():
    with pytest.raises(ProtocolError) as e:  # too deep for the JSON parser
        P.decode(_raw('{"type": "ping", "v": 1, "token": ' + "[" * 10_000 + "]" * 10_000 + "}"))
    assert e.value.code is ErrorCode.BAD_JSON
    with pytest.raises(ProtocolError) as e:  # deep but parseable: the number walk is not recursive
        P.decode(_raw('{"type": "ping", "v": 1, "token": ' + "[" * 500 + "1e400" + "]" * 500 + "}"))
    assert e.value.code is ErrorCode.BAD_FIELD
