"""Capture integrity (issue 14) on real frames through the assembled service: replayed frames and a
repeated still fail with the reason a person with bad luck sees; the audit has the true reason."""

from __future__ import annotations

import json

import cv2
import numpy as np

from idv.pipeline import Budget
from idv.service import EnrollCommand, VerifyCommand
from idv.verdicts import Purpose, Reason, TrueReason
from tests.conftest import ID_SUBJECT_1, nuaa_frames, nuaa_sequences

NAME = "张三"


def _reencoded(data: bytes, quality: int) -> bytes:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def test_replayed_frames_and_a_repeated_still_fail_as_liveness(node_settings, assemble, testdata) -> None:
    settings = node_settings.updated(integrity__replay_check=True, lockout_after_failures=50)
    service = assemble(settings).service
    service.enroll(EnrollCommand(ID_SUBJECT_1, NAME, (nuaa_frames(testdata, "print", "0001")[0].read_bytes(),)),
                   Budget(30))
    sequence = next(iter(nuaa_sequences(testdata, "live", "0001").values()))
    genuine = tuple(p.read_bytes() for p in sequence[:15:3])
    later = tuple(p.read_bytes() for p in sequence[30:45:3])

    def verify(frames: tuple[bytes, ...]):
        return service.verify(VerifyCommand(ID_SUBJECT_1, NAME, Purpose.CHECK_IN, frames), Budget(30))

    first = verify(genuine)
    assert first.true_reason is TrueReason.VERIFIED
    again = verify(genuine)  # the very same capture presented twice
    assert (again.reason, again.true_reason) == (Reason.LIVENESS_FAILED, TrueReason.FRAME_REPLAYED)
    spliced = verify(later[:-1] + genuine[-1:])  # one old frame slipped into a new capture
    assert spliced.true_reason is TrueReason.FRAME_REPLAYED
    fresh = verify(tuple(p.read_bytes() for p in sequence[50:62:3]))  # a new capture still passes
    assert fresh.true_reason is TrueReason.VERIFIED

    # One still, re-encoded at a different JPEG quality per copy: new bytes, the same picture.
    still = sequence[20].read_bytes()
    repeated = tuple(_reencoded(still, q) for q in (95, 90, 85, 80, 75))
    outcome = verify(repeated)
    assert (outcome.reason, outcome.true_reason) == (Reason.LIVENESS_FAILED, TrueReason.NEAR_DUPLICATE_FRAMES)

    records = [json.loads(line) for line in settings.store.audit_path.read_text().splitlines()]
    reasons = [r["true_reason"] for r in records if r.get("event") == "verify"]
    assert reasons.count("FRAME_REPLAYED") == 2 and "NEAR_DUPLICATE_FRAMES" in reasons


def test_production_refuses_the_replay_check_off() -> None:
    import pytest

    from idv.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="replay_check"):
        load_settings(environ={}, overrides={"mode": "production", "integrity__replay_check": False})


def test_session_frames_older_than_the_session_fail(node_settings, model_set, testdata) -> None:
    """A capture whose frame times span longer than the session has existed was taken before it."""
    from idv.assemble import build_service

    with build_service(node_settings, model_set, capture_base_url="http://127.0.0.1:9") as assembled:
        assembled.service.enroll(EnrollCommand(ID_SUBJECT_1, NAME, (nuaa_frames(testdata, "print", "0001")[0]
                                                                    .read_bytes(),)), Budget(30))
        frames = tuple(p.read_bytes() for p in next(iter(nuaa_sequences(testdata, "live", "0001").values()))[:15:3])
        opened = assembled.sessions.create_session("anonymous", ID_SUBJECT_1, NAME, Purpose.CHECK_IN)
        stamps = tuple(float(t) for t in np.linspace(0, 300_000, len(frames)))  # five minutes of "capture"
        _, outcome, _ = assembled.sessions.verify_capture(opened.capture_token, frames, Budget(30), stamps)
        assert (outcome.reason, outcome.true_reason) == (Reason.LIVENESS_FAILED, TrueReason.CAPTURE_TIMING)
