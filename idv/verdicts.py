"""Verdicts and reasons as the core sees them (the rpc layer maps them to idv.v1 enums by name)."""

from __future__ import annotations

from enum import Enum


class Verdict(Enum):
    PASS = "PASS"
    FAIL = "FAIL"


class Reason(Enum):
    VERIFIED = "VERIFIED"
    NOT_VERIFIED = "NOT_VERIFIED"
    LIVENESS_FAILED = "LIVENESS_FAILED"
    NO_FACE = "NO_FACE"
    MULTIPLE_FACES = "MULTIPLE_FACES"
    LOW_QUALITY = "LOW_QUALITY"
    CHALLENGE_REQUIRED = "CHALLENGE_REQUIRED"
    CHALLENGE_FAILED = "CHALLENGE_FAILED"
    CHALLENGE_INVALID = "CHALLENGE_INVALID"
    IMPERSONATION_SUSPECTED = "IMPERSONATION_SUSPECTED"
    REENROLMENT_REQUIRED = "REENROLMENT_REQUIRED"


class Purpose(Enum):
    REGISTRATION = "REGISTRATION"
    LICENCE_RENEWAL = "LICENCE_RENEWAL"
    CHECK_IN = "CHECK_IN"


class TrueReason(Enum):
    """What really happened, for the audit record only: several map to one caller-visible Reason."""

    VERIFIED = "VERIFIED"
    FACE_MISMATCH = "FACE_MISMATCH"
    NO_REFERENCE = "NO_REFERENCE"
    NAME_MISMATCH = "NAME_MISMATCH"
    LIVENESS_FAILED = "LIVENESS_FAILED"
    NO_FACE = "NO_FACE"
    MULTIPLE_FACES = "MULTIPLE_FACES"
    LOW_QUALITY = "LOW_QUALITY"
    CHALLENGE_REQUIRED = "CHALLENGE_REQUIRED"
    CHALLENGE_FAILED = "CHALLENGE_FAILED"
    CHALLENGE_INVALID = "CHALLENGE_INVALID"
    IMPERSONATION_SUSPECTED = "IMPERSONATION_SUSPECTED"
    # The face matched a reference older than the retention limit.
    REFERENCE_EXPIRED = "REFERENCE_EXPIRED"
    # A template failed to decrypt (altered at rest, or this node's data key differs): answered
    # like any other non-match, so the answer does not tell who is enrolled.
    REFERENCE_INVALID = "REFERENCE_INVALID"
    # Capture integrity (issue 14): answered LIVENESS_FAILED, like a person with bad luck.
    FRAME_REPLAYED = "FRAME_REPLAYED"  # a frame already presented (keyed digest seen before)
    NEAR_DUPLICATE_FRAMES = "NEAR_DUPLICATE_FRAMES"  # one still repeated or re-encoded within the burst
    CAPTURE_TIMING = "CAPTURE_TIMING"  # frame times implausible or outside the session window
    ATTESTATION_MISSING = "ATTESTATION_MISSING"  # the purpose requires a terminal's signature; none was sent
    ATTESTATION_INVALID = "ATTESTATION_INVALID"  # unregistered terminal, or a signature over other frames/challenge


CALLER_REASON: dict[TrueReason, Reason] = {
    TrueReason.VERIFIED: Reason.VERIFIED,
    TrueReason.FACE_MISMATCH: Reason.NOT_VERIFIED,
    TrueReason.NO_REFERENCE: Reason.NOT_VERIFIED,
    TrueReason.NAME_MISMATCH: Reason.NOT_VERIFIED,
    TrueReason.LIVENESS_FAILED: Reason.LIVENESS_FAILED,
    TrueReason.NO_FACE: Reason.NO_FACE,
    TrueReason.MULTIPLE_FACES: Reason.MULTIPLE_FACES,
    TrueReason.LOW_QUALITY: Reason.LOW_QUALITY,
    TrueReason.CHALLENGE_REQUIRED: Reason.CHALLENGE_REQUIRED,
    TrueReason.CHALLENGE_FAILED: Reason.CHALLENGE_FAILED,
    TrueReason.CHALLENGE_INVALID: Reason.CHALLENGE_INVALID,
    TrueReason.IMPERSONATION_SUSPECTED: Reason.IMPERSONATION_SUSPECTED,
    TrueReason.REFERENCE_EXPIRED: Reason.REENROLMENT_REQUIRED,
    TrueReason.REFERENCE_INVALID: Reason.NOT_VERIFIED,
    TrueReason.FRAME_REPLAYED: Reason.LIVENESS_FAILED,
    TrueReason.NEAR_DUPLICATE_FRAMES: Reason.LIVENESS_FAILED,
    TrueReason.CAPTURE_TIMING: Reason.LIVENESS_FAILED,
    TrueReason.ATTESTATION_MISSING: Reason.LIVENESS_FAILED,
    TrueReason.ATTESTATION_INVALID: Reason.LIVENESS_FAILED,
}
