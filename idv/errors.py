"""Errors that end a request before a verdict, each with its gRPC status and a stable reason.

    IdvError                       (code, reason, message: safe to send; never holds personal data)
    ├── InvalidRequest             INVALID_ARGUMENT
    │     reasons: INVALID_ID_FORMAT, INVALID_NAME, MISSING_PURPOSE, FRAME_COUNT,
    │              FRAME_TOO_LARGE, IMAGE_TOO_LARGE, UNSUPPORTED_FORMAT,
    │              UNDECODABLE_IMAGE, REFERENCE_NO_FACE, REFERENCE_MULTIPLE_FACES,
    │              REFERENCE_LOW_QUALITY
    ├── AlreadyEnrolled            ALREADY_EXISTS       IDENTITY_ENROLLED,
    │   └── DuplicateFace                                DUPLICATE_FACE (the face is enrolled under
    │                                                   another ID number; never says which)
    ├── TemplateMismatch           FAILED_PRECONDITION  TEMPLATE_MODEL_MISMATCH
    ├── DeadlineExceeded           DEADLINE_EXCEEDED    DEADLINE_EXCEEDED
    ├── Cancelled                  CANCELLED            CANCELLED (the caller went away; work stops)
    ├── NotServing                 UNAVAILABLE          NOT_SERVING
    ├── StoreUnavailable           UNAVAILABLE          REFERENCE_STORE_UNAVAILABLE,
    │                                                   STATE_STORE_UNAVAILABLE (Redis or SQLite: counters, challenges),
    │                                                   AUDIT_LOG_UNAVAILABLE (the decision could not be recorded)
    ├── Overloaded                 RESOURCE_EXHAUSTED   OVERLOADED
    ├── Throttled                  RESOURCE_EXHAUSTED   IDENTITY_LOCKED, ALTERNATIVE_METHOD_REQUIRED,
    │                                                   RATE_LIMITED, VELOCITY_LIMITED (+ RetryInfo)
    ├── NotFound                   NOT_FOUND            SESSION_NOT_FOUND (unknown, expired or another caller's)
    ├── Unauthenticated            UNAUTHENTICATED      UNAUTHENTICATED, CAPTURE_TOKEN_INVALID (device
    │                                                   endpoint: unknown, used or expired token alike)
    └── PermissionDenied           PERMISSION_DENIED    PERMISSION_DENIED

Verdicts (PASS/FAIL with a reason) are not errors: see idv.pipeline.
The mapping to gRPC status and rich details lives in one place: idv.rpc.status.
"""

from __future__ import annotations

from enum import Enum


class Code(Enum):
    """The gRPC status codes idv uses, without importing grpc into the core."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    NOT_FOUND = "NOT_FOUND"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    CANCELLED = "CANCELLED"
    UNAVAILABLE = "UNAVAILABLE"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    INTERNAL = "INTERNAL"


class IdvError(Exception):
    code: Code = Code.INTERNAL
    default_reason: str = "INTERNAL"

    def __init__(self, message: str, reason: str | None = None, metadata: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        # Extra ErrorInfo metadata: only non-personal values (indices, limits).
        self.metadata = dict(metadata or {})


class InvalidRequest(IdvError):
    code = Code.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


class AlreadyEnrolled(IdvError):
    code = Code.ALREADY_EXISTS
    default_reason = "IDENTITY_ENROLLED"


class DuplicateFace(AlreadyEnrolled):
    """The face is already enrolled under another identity (ALREADY_EXISTS, DUPLICATE_FACE).

    `duplicate_of` is that identity's keyed hash and `id_key` the enrolling one's, for the
    audit record only: never put in the message or the error details (the caller must not
    learn the other ID).
    """

    def __init__(self, duplicate_of: str, id_key: str):
        super().__init__("this face is already enrolled under another identity; it needs a manual review",
                         "DUPLICATE_FACE")
        self.duplicate_of = duplicate_of
        self.id_key = id_key


class TemplateMismatch(IdvError):
    code = Code.FAILED_PRECONDITION
    default_reason = "TEMPLATE_MODEL_MISMATCH"


class DeadlineExceeded(IdvError):
    code = Code.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


class Cancelled(IdvError):
    code = Code.CANCELLED
    default_reason = "CANCELLED"


class NotServing(IdvError):
    code = Code.UNAVAILABLE
    default_reason = "NOT_SERVING"


class StoreUnavailable(IdvError):
    code = Code.UNAVAILABLE
    default_reason = "REFERENCE_STORE_UNAVAILABLE"


class Overloaded(IdvError):
    code = Code.RESOURCE_EXHAUSTED
    default_reason = "OVERLOADED"


class Throttled(IdvError):
    """Too many attempts: IDENTITY_LOCKED, ALTERNATIVE_METHOD_REQUIRED, RATE_LIMITED or VELOCITY_LIMITED."""

    code = Code.RESOURCE_EXHAUSTED
    default_reason = "RATE_LIMITED"

    def __init__(self, message: str, reason: str, retry_after_seconds: float):
        super().__init__(message, reason)
        self.retry_after_seconds = retry_after_seconds


class NotFound(IdvError):
    code = Code.NOT_FOUND
    default_reason = "SESSION_NOT_FOUND"


class Unauthenticated(IdvError):
    code = Code.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(IdvError):
    code = Code.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"
