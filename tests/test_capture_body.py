"""The device upload's body format: every byte string is either a capture or a clear INVALID_ARGUMENT."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idv.errors import InvalidRequest
from idv.http.capture_body import CaptureLimits, parse_capture

LIMITS = CaptureLimits(max_frames=4, max_frame_bytes=64)
REASONS = {"CAPTURE_FORMAT", "FRAME_COUNT", "FRAME_TOO_LARGE", "CAPTURE_TIMING"}


def _body(header: object, payload: bytes) -> bytearray:
    return bytearray(json.dumps(header).encode() + b"\n" + payload)


def test_a_well_formed_capture_splits_into_frames_that_can_be_zeroed() -> None:
    body = _body({"timestamps_ms": [0, 300.5], "sizes": [3, 2]}, b"abcde")
    capture = parse_capture(body, LIMITS)
    assert [bytes(f) for f in capture.frames] == [b"abc", b"de"] and capture.timestamps_ms == (0.0, 300.5)
    capture.zero()
    assert all(not any(f) for f in capture.frames)


@pytest.mark.parametrize(("header", "payload", "reason"), [
    ({"timestamps_ms": [0], "sizes": [3]}, b"ab", "CAPTURE_FORMAT"),
    ({"timestamps_ms": [0, 1], "sizes": [1]}, b"a", "FRAME_COUNT"),
    ({"timestamps_ms": [], "sizes": []}, b"", "FRAME_COUNT"),
    ({"timestamps_ms": [0] * 5, "sizes": [1] * 5}, b"aaaaa", "FRAME_COUNT"),
    ({"timestamps_ms": [0], "sizes": [65]}, b"a" * 65, "FRAME_TOO_LARGE"),
    ({"timestamps_ms": [0], "sizes": [0]}, b"", "FRAME_TOO_LARGE"),
    ({"timestamps_ms": [0, 5], "sizes": [1, 1]}, b"ab", "CAPTURE_TIMING"),
    ({"timestamps_ms": [0, 61_000], "sizes": [1, 1]}, b"ab", "CAPTURE_TIMING"),
    ({"timestamps_ms": [float("nan")], "sizes": [1]}, b"a", "CAPTURE_FORMAT"),
    ({"timestamps_ms": "0", "sizes": "1"}, b"a", "CAPTURE_FORMAT"),
    ([1, 2], b"a", "CAPTURE_FORMAT"),
])
def test_malformed_captures_name_what_is_wrong(header, payload, reason) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_capture(_body(header, payload), LIMITS)
    assert refused.value.reason == reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512) | st.builds(lambda h, p: bytes(_body(h, p)),
       st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(
                        st.sampled_from(["sizes", "timestamps_ms", "x"]), c, max_size=3), max_leaves=12),
       st.binary(max_size=64)))
def test_any_body_is_a_capture_or_a_clear_refusal(raw: bytes) -> None:
    try:
        capture = parse_capture(bytearray(raw), LIMITS)
    except InvalidRequest as refused:
        assert refused.reason in REASONS
        return
    assert 1 <= len(capture.frames) <= LIMITS.max_frames
