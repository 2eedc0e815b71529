from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Purpose(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PURPOSE_UNSPECIFIED: _ClassVar[Purpose]
    REGISTRATION: _ClassVar[Purpose]
    LICENCE_RENEWAL: _ClassVar[Purpose]
    CHECK_IN: _ClassVar[Purpose]

class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_UNSPECIFIED: _ClassVar[Verdict]
    PASS: _ClassVar[Verdict]
    FAIL: _ClassVar[Verdict]

class Reason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REASON_UNSPECIFIED: _ClassVar[Reason]
    VERIFIED: _ClassVar[Reason]
    NOT_VERIFIED: _ClassVar[Reason]
    LIVENESS_FAILED: _ClassVar[Reason]
    NO_FACE: _ClassVar[Reason]
    MULTIPLE_FACES: _ClassVar[Reason]
    LOW_QUALITY: _ClassVar[Reason]
    CHALLENGE_REQUIRED: _ClassVar[Reason]
    CHALLENGE_FAILED: _ClassVar[Reason]
    CHALLENGE_INVALID: _ClassVar[Reason]
    IMPERSONATION_SUSPECTED: _ClassVar[Reason]
    REENROLMENT_REQUIRED: _ClassVar[Reason]

class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_UNSPECIFIED: _ClassVar[Action]
    TURN_LEFT: _ClassVar[Action]
    TURN_RIGHT: _ClassVar[Action]
    NOD: _ClassVar[Action]
    BLINK: _ClassVar[Action]
    OPEN_MOUTH: _ClassVar[Action]

class SessionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_STATE_UNSPECIFIED: _ClassVar[SessionState]
    PENDING: _ClassVar[SessionState]
    COMPLETED: _ClassVar[SessionState]
    EXPIRED: _ClassVar[SessionState]
    REFUSED: _ClassVar[SessionState]
PURPOSE_UNSPECIFIED: Purpose
REGISTRATION: Purpose
LICENCE_RENEWAL: Purpose
CHECK_IN: Purpose
VERDICT_UNSPECIFIED: Verdict
PASS: Verdict
FAIL: Verdict
REASON_UNSPECIFIED: Reason
VERIFIED: Reason
NOT_VERIFIED: Reason
LIVENESS_FAILED: Reason
NO_FACE: Reason
MULTIPLE_FACES: Reason
LOW_QUALITY: Reason
CHALLENGE_REQUIRED: Reason
CHALLENGE_FAILED: Reason
CHALLENGE_INVALID: Reason
IMPERSONATION_SUSPECTED: Reason
REENROLMENT_REQUIRED: Reason
ACTION_UNSPECIFIED: Action
TURN_LEFT: Action
TURN_RIGHT: Action
NOD: Action
BLINK: Action
OPEN_MOUTH: Action
SESSION_STATE_UNSPECIFIED: SessionState
PENDING: SessionState
COMPLETED: SessionState
EXPIRED: SessionState
REFUSED: SessionState

class VerifyRequest(_message.Message):
    __slots__ = ("id_number", "name", "purpose", "frames", "challenge_id", "frame_timestamps_ms", "terminal_id", "terminal_signature")
    ID_NUMBER_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    CHALLENGE_ID_FIELD_NUMBER: _ClassVar[int]
    FRAME_TIMESTAMPS_MS_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_ID_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    id_number: str
    name: str
    purpose: Purpose
    frames: _containers.RepeatedScalarFieldContainer[bytes]
    challenge_id: str
    frame_timestamps_ms: _containers.RepeatedScalarFieldContainer[float]
    terminal_id: str
    terminal_signature: bytes
    def __init__(self, id_number: _Optional[str] = ..., name: _Optional[str] = ..., purpose: _Optional[_Union[Purpose, str]] = ..., frames: _Optional[_Iterable[bytes]] = ..., challenge_id: _Optional[str] = ..., frame_timestamps_ms: _Optional[_Iterable[float]] = ..., terminal_id: _Optional[str] = ..., terminal_signature: _Optional[bytes] = ...) -> None: ...

class VerifyResponse(_message.Message):
    __slots__ = ("verdict", "reason", "request_id", "credential")
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    verdict: Verdict
    reason: Reason
    request_id: str
    credential: Credential
    def __init__(self, verdict: _Optional[_Union[Verdict, str]] = ..., reason: _Optional[_Union[Reason, str]] = ..., request_id: _Optional[str] = ..., credential: _Optional[_Union[Credential, _Mapping]] = ...) -> None: ...

class Credential(_message.Message):
    __slots__ = ("code", "expires_at_unix")
    CODE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    code: str
    expires_at_unix: int
    def __init__(self, code: _Optional[str] = ..., expires_at_unix: _Optional[int] = ...) -> None: ...

class EnrollRequest(_message.Message):
    __slots__ = ("id_number", "name", "reference_images", "replace")
    ID_NUMBER_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_IMAGES_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    id_number: str
    name: str
    reference_images: _containers.RepeatedScalarFieldContainer[bytes]
    replace: bool
    def __init__(self, id_number: _Optional[str] = ..., name: _Optional[str] = ..., reference_images: _Optional[_Iterable[bytes]] = ..., replace: _Optional[bool] = ...) -> None: ...

class EnrollResponse(_message.Message):
    __slots__ = ("request_id", "template_count", "flagged_for_review")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    FLAGGED_FOR_REVIEW_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    template_count: int
    flagged_for_review: bool
    def __init__(self, request_id: _Optional[str] = ..., template_count: _Optional[int] = ..., flagged_for_review: _Optional[bool] = ...) -> None: ...

class CreateChallengeRequest(_message.Message):
    __slots__ = ("id_number", "purpose")
    ID_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    id_number: str
    purpose: Purpose
    def __init__(self, id_number: _Optional[str] = ..., purpose: _Optional[_Union[Purpose, str]] = ...) -> None: ...

class LightStep(_message.Message):
    __slots__ = ("colour", "duration_ms")
    COLOUR_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    colour: str
    duration_ms: int
    def __init__(self, colour: _Optional[str] = ..., duration_ms: _Optional[int] = ...) -> None: ...

class CreateChallengeResponse(_message.Message):
    __slots__ = ("challenge_id", "actions", "expires_at_unix", "light")
    CHALLENGE_ID_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    LIGHT_FIELD_NUMBER: _ClassVar[int]
    challenge_id: str
    actions: _containers.RepeatedScalarFieldContainer[Action]
    expires_at_unix: int
    light: _containers.RepeatedCompositeFieldContainer[LightStep]
    def __init__(self, challenge_id: _Optional[str] = ..., actions: _Optional[_Iterable[_Union[Action, str]]] = ..., expires_at_unix: _Optional[int] = ..., light: _Optional[_Iterable[_Union[LightStep, _Mapping]]] = ...) -> None: ...

class IdentityRequest(_message.Message):
    __slots__ = ("id_number",)
    ID_NUMBER_FIELD_NUMBER: _ClassVar[int]
    id_number: str
    def __init__(self, id_number: _Optional[str] = ...) -> None: ...

class DeleteIdentityResponse(_message.Message):
    __slots__ = ("request_id", "deleted", "propagation_bound_seconds")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    PROPAGATION_BOUND_SECONDS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    deleted: bool
    propagation_bound_seconds: float
    def __init__(self, request_id: _Optional[str] = ..., deleted: _Optional[bool] = ..., propagation_bound_seconds: _Optional[float] = ...) -> None: ...

class UnlockIdentityResponse(_message.Message):
    __slots__ = ("request_id", "was_locked")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    WAS_LOCKED_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    was_locked: bool
    def __init__(self, request_id: _Optional[str] = ..., was_locked: _Optional[bool] = ...) -> None: ...

class GetIdentityStatusResponse(_message.Message):
    __slots__ = ("request_id", "enrolled", "template_count", "enrolled_at_unix", "model_fingerprints", "consecutive_failures", "locked_until_unix", "failure_cap_reached", "reenrolment_required")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ENROLLED_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    ENROLLED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINTS_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    LOCKED_UNTIL_UNIX_FIELD_NUMBER: _ClassVar[int]
    FAILURE_CAP_REACHED_FIELD_NUMBER: _ClassVar[int]
    REENROLMENT_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    enrolled: bool
    template_count: int
    enrolled_at_unix: float
    model_fingerprints: _containers.RepeatedScalarFieldContainer[str]
    consecutive_failures: int
    locked_until_unix: float
    failure_cap_reached: bool
    reenrolment_required: bool
    def __init__(self, request_id: _Optional[str] = ..., enrolled: _Optional[bool] = ..., template_count: _Optional[int] = ..., enrolled_at_unix: _Optional[float] = ..., model_fingerprints: _Optional[_Iterable[str]] = ..., consecutive_failures: _Optional[int] = ..., locked_until_unix: _Optional[float] = ..., failure_cap_reached: _Optional[bool] = ..., reenrolment_required: _Optional[bool] = ...) -> None: ...

class CreateSessionRequest(_message.Message):
    __slots__ = ("id_number", "name", "purpose")
    ID_NUMBER_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    id_number: str
    name: str
    purpose: Purpose
    def __init__(self, id_number: _Optional[str] = ..., name: _Optional[str] = ..., purpose: _Optional[_Union[Purpose, str]] = ...) -> None: ...

class CreateSessionResponse(_message.Message):
    __slots__ = ("session_id", "capture_url", "capture_token", "actions", "expires_at_unix", "frame_count", "light")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_URL_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    FRAME_COUNT_FIELD_NUMBER: _ClassVar[int]
    LIGHT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    capture_url: str
    capture_token: str
    actions: _containers.RepeatedScalarFieldContainer[Action]
    expires_at_unix: int
    frame_count: int
    light: _containers.RepeatedCompositeFieldContainer[LightStep]
    def __init__(self, session_id: _Optional[str] = ..., capture_url: _Optional[str] = ..., capture_token: _Optional[str] = ..., actions: _Optional[_Iterable[_Union[Action, str]]] = ..., expires_at_unix: _Optional[int] = ..., frame_count: _Optional[int] = ..., light: _Optional[_Iterable[_Union[LightStep, _Mapping]]] = ...) -> None: ...

class GetSessionResultRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class GetSessionResultResponse(_message.Message):
    __slots__ = ("verdict", "reason", "request_id", "state", "refusal", "credential")
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    verdict: Verdict
    reason: Reason
    request_id: str
    state: SessionState
    refusal: str
    credential: Credential
    def __init__(self, verdict: _Optional[_Union[Verdict, str]] = ..., reason: _Optional[_Union[Reason, str]] = ..., request_id: _Optional[str] = ..., state: _Optional[_Union[SessionState, str]] = ..., refusal: _Optional[str] = ..., credential: _Optional[_Union[Credential, _Mapping]] = ...) -> None: ...

class RedeemCredentialRequest(_message.Message):
    __slots__ = ("code",)
    CODE_FIELD_NUMBER: _ClassVar[int]
    code: str
    def __init__(self, code: _Optional[str] = ...) -> None: ...

class RedeemCredentialResponse(_message.Message):
    __slots__ = ("id_number", "name", "purpose", "verified_at_unix", "level", "verification_request_id", "request_id")
    ID_NUMBER_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    id_number: str
    name: str
    purpose: Purpose
    verified_at_unix: float
    level: str
    verification_request_id: str
    request_id: str
    def __init__(self, id_number: _Optional[str] = ..., name: _Optional[str] = ..., purpose: _Optional[_Union[Purpose, str]] = ..., verified_at_unix: _Optional[float] = ..., level: _Optional[str] = ..., verification_request_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetVerificationHistoryRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class HistoryEntry(_message.Message):
    __slots__ = ("time_unix", "caller", "purpose", "verdict")
    TIME_UNIX_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    time_unix: float
    caller: str
    purpose: Purpose
    verdict: str
    def __init__(self, time_unix: _Optional[float] = ..., caller: _Optional[str] = ..., purpose: _Optional[_Union[Purpose, str]] = ..., verdict: _Optional[str] = ...) -> None: ...

class GetVerificationHistoryResponse(_message.Message):
    __slots__ = ("entries", "window_days")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    WINDOW_DAYS_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[HistoryEntry]
    window_days: int
    def __init__(self, entries: _Optional[_Iterable[_Union[HistoryEntry, _Mapping]]] = ..., window_days: _Optional[int] = ...) -> None: ...
