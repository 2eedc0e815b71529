"""A small Python client for an idv node: deadlines, TLS, credentials, and retries only where safe.

A call is retried only when the node says it did not process it: UNAVAILABLE
(starting, draining, store down) or RESOURCE_EXHAUSTED with reason OVERLOADED.
Verdicts are never retried, and neither is a throttled identity.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from grpc_health.v1 import health_pb2, health_pb2_grpc

from idv.rpc.status import error_info
from idv.security.terminals import sign_capture
from idv.v1 import verification_pb2 as pb
from idv.v1 import verification_pb2_grpc as pb_grpc

PURPOSES = {"registration": pb.REGISTRATION, "licence_renewal": pb.LICENCE_RENEWAL, "check_in": pb.CHECK_IN}


@dataclass(frozen=True)
class VerifyResult:
    verdict: str  # "PASS" | "FAIL"
    reason: str
    request_id: str
    credential: Credential | None = None  # issue 18: with PASS for a purpose that issues check-in codes

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"verdict": self.verdict, "reason": self.reason, "request_id": self.request_id}
        if self.credential is not None:
            out["credential"] = {"code": self.credential.code, "expires_at_unix": self.credential.expires_at_unix}
        return out


@dataclass(frozen=True)
class Credential:
    """A check-in credential (issue 18): single use, short-lived; the code is a secret."""

    code: str = field(repr=False)
    expires_at_unix: int = 0


@dataclass(frozen=True, repr=False)
class RedeemedCredential:
    id_number: str
    name: str
    purpose: str
    verified_at_unix: float
    level: str
    verification_request_id: str
    request_id: str

    def as_dict(self) -> dict[str, object]:
        return {"id_number": self.id_number, "name": self.name, "purpose": self.purpose,
                "verified_at_unix": self.verified_at_unix, "level": self.level,
                "verification_request_id": self.verification_request_id, "request_id": self.request_id}


@dataclass(frozen=True)
class HistoryEntry:
    time_unix: float
    caller: str
    purpose: str
    verdict: str


def _credential(message) -> Credential | None:
    return Credential(message.code, message.expires_at_unix) if message.code else None


@dataclass(frozen=True)
class EnrollResult:
    request_id: str
    template_count: int
    flagged_for_review: bool


@dataclass(frozen=True)
class Challenge:
    challenge_id: str
    actions: tuple[str, ...]
    expires_at_unix: int
    light: tuple[tuple[str, int], ...] = ()  # issue 14: (colour, duration_ms) flashes


@dataclass(frozen=True)
class IdentityStatus:
    """GetIdentityStatus: no biometric, only facts an operator needs."""

    enrolled: bool
    template_count: int
    enrolled_at_unix: float
    model_fingerprints: tuple[str, ...]
    consecutive_failures: int
    locked_until_unix: float
    failure_cap_reached: bool
    reenrolment_required: bool
    request_id: str

    def as_dict(self) -> dict[str, object]:
        return {"enrolled": self.enrolled, "template_count": self.template_count,
                "enrolled_at_unix": self.enrolled_at_unix, "model_fingerprints": list(self.model_fingerprints),
                "consecutive_failures": self.consecutive_failures, "locked_until_unix": self.locked_until_unix,
                "failure_cap_reached": self.failure_cap_reached, "reenrolment_required": self.reenrolment_required,
                "request_id": self.request_id}


@dataclass(frozen=True)
class Session:
    """An open verification session: give capture_url (or the token and actions) to the device only."""

    session_id: str
    capture_url: str
    capture_token: str
    actions: tuple[str, ...]
    expires_at_unix: int
    frame_count: int
    light: tuple[tuple[str, int], ...] = ()  # issue 14: (colour, duration_ms) flashes


@dataclass(frozen=True)
class SessionResult:
    state: str  # PENDING | COMPLETED | EXPIRED | REFUSED
    verdict: str  # "PASS" | "FAIL", "" unless COMPLETED
    reason: str
    request_id: str
    refusal: str  # with REFUSED: the upload's error reason
    credential: Credential | None = None  # issue 18: the check-in credential while it is valid

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"state": self.state, "verdict": self.verdict, "reason": self.reason,
                                  "request_id": self.request_id, "refusal": self.refusal}
        if self.credential is not None:
            out["credential"] = {"code": self.credential.code, "expires_at_unix": self.credential.expires_at_unix}
        return out


@dataclass(frozen=True)
class TlsConfig:
    ca_file: Path
    cert_file: Path | None = None  # client certificate for mutual TLS
    key_file: Path | None = None
    server_name: str | None = None  # override for certificates issued to another host name


class IdvClient:
    def __init__(
        self,
        target: str,
        timeout: float = 10.0,
        tls: TlsConfig | None = None,
        api_key: str | None = None,
        retries: int = 2,
    ):
        options = [("grpc.max_send_message_length", 16 * 1024 * 1024)]
        if tls is not None:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=tls.ca_file.read_bytes(),
                private_key=tls.key_file.read_bytes() if tls.key_file else None,
                certificate_chain=tls.cert_file.read_bytes() if tls.cert_file else None,
            )
            if tls.server_name:
                options.append(("grpc.ssl_target_name_override", tls.server_name))
            self._channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._stub = pb_grpc.IdentityVerificationStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._timeout = timeout
        self._metadata = (("x-api-key", api_key),) if api_key else ()
        self._retries = retries

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> IdvClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _invoke(self, method, request, metadata: tuple[tuple[str, str], ...] = ()):
        deadline = time.monotonic() + self._timeout
        attempt = 0
        while True:
            try:
                return method(request, timeout=max(deadline - time.monotonic(), 0.01),
                              metadata=self._metadata + metadata)
            except grpc.RpcError as error:
                attempt += 1
                if attempt > self._retries or not _safe_to_retry(error) or time.monotonic() >= deadline:
                    raise
                time.sleep(min(0.2 * 2**attempt, max(deadline - time.monotonic(), 0)))

    def verify(self, id_number: str, name: str, frames: Sequence[bytes], purpose: str = "check_in",
               challenge_id: str = "", timestamps_ms: Sequence[float] = (), terminal_id: str = "",
               terminal_key: Ed25519PrivateKey | None = None, terminal_signature: bytes = b"") -> VerifyResult:
        """With `terminal_key` (an attested terminal's private key, issue 14) the capture is signed
        under `terminal_id`; `terminal_signature` sends a signature made elsewhere instead."""
        if terminal_key is not None and not terminal_signature:
            terminal_signature = sign_capture(terminal_key, challenge_id, pb.Purpose.Name(PURPOSES[purpose]),
                                              frames, timestamps_ms)
        request = pb.VerifyRequest(id_number=id_number, name=name, purpose=PURPOSES[purpose],
                                   frames=list(frames), challenge_id=challenge_id,
                                   frame_timestamps_ms=list(timestamps_ms), terminal_id=terminal_id,
                                   terminal_signature=terminal_signature)
        response = self._invoke(self._stub.Verify, request)
        return VerifyResult(pb.Verdict.Name(response.verdict), pb.Reason.Name(response.reason), response.request_id,
                            _credential(response.credential))

    def enroll(self, id_number: str, name: str, images: Sequence[bytes], replace: bool = False) -> EnrollResult:
        request = pb.EnrollRequest(id_number=id_number, name=name, reference_images=list(images), replace=replace)
        response = self._invoke(self._stub.Enroll, request)
        return EnrollResult(response.request_id, response.template_count, response.flagged_for_review)

    def create_challenge(self, id_number: str, purpose: str = "") -> Challenge:
        request = pb.CreateChallengeRequest(id_number=id_number, purpose=PURPOSES[purpose] if purpose else 0)
        response = self._invoke(self._stub.CreateChallenge, request)
        return Challenge(response.challenge_id, tuple(pb.Action.Name(a) for a in response.actions),
                         response.expires_at_unix, tuple((s.colour, s.duration_ms) for s in response.light))

    # ---- admin (scope `admin`)
    def delete_identity(self, id_number: str) -> tuple[bool, float]:
        """Erase the identity; returns (whether it was enrolled, seconds until every replica forgot it)."""
        response = self._invoke(self._stub.DeleteIdentity, pb.IdentityRequest(id_number=id_number))
        return response.deleted, response.propagation_bound_seconds

    def unlock_identity(self, id_number: str) -> bool:
        """Reset the lockout and failure cap; returns whether it was locked or had failures."""
        return self._invoke(self._stub.UnlockIdentity, pb.IdentityRequest(id_number=id_number)).was_locked

    def identity_status(self, id_number: str) -> IdentityStatus:
        r = self._invoke(self._stub.GetIdentityStatus, pb.IdentityRequest(id_number=id_number))
        return IdentityStatus(r.enrolled, r.template_count, r.enrolled_at_unix, tuple(r.model_fingerprints),
                              r.consecutive_failures, r.locked_until_unix, r.failure_cap_reached,
                              r.reenrolment_required, r.request_id)

    # ---- verification sessions
    def create_session(self, id_number: str, name: str, purpose: str = "check_in",
                       fixed_actions: Sequence[str] = ()) -> Session:
        """Open a verification session. `fixed_actions` is for tests against recorded clips only
        (a node refuses it unless session_fixed_challenges is on, never in production)."""
        metadata = (("idv-test-fixed-actions", ",".join(fixed_actions)),) if fixed_actions else ()
        request = pb.CreateSessionRequest(id_number=id_number, name=name, purpose=PURPOSES[purpose])
        response = self._invoke(self._stub.CreateSession, request, metadata)
        return Session(response.session_id, response.capture_url, response.capture_token,
                       tuple(pb.Action.Name(a) for a in response.actions), response.expires_at_unix,
                       response.frame_count, tuple((s.colour, s.duration_ms) for s in response.light))

    def session_result(self, session_id: str) -> SessionResult:
        response = self._invoke(self._stub.GetSessionResult, pb.GetSessionResultRequest(session_id=session_id))
        completed = response.verdict != pb.VERDICT_UNSPECIFIED
        return SessionResult(pb.SessionState.Name(response.state),
                             pb.Verdict.Name(response.verdict) if completed else "",
                             pb.Reason.Name(response.reason) if completed else "",
                             response.request_id, response.refusal, _credential(response.credential))

    # ---- check-in credentials and the person's history (issue 18)
    def redeem_credential(self, code: str) -> RedeemedCredential:
        """Exchange a check-in code, once (scope redeem). Never retried: a lost answer is a used code."""
        r = self._stub.RedeemCredential(pb.RedeemCredentialRequest(code=code), timeout=self._timeout,
                                        metadata=self._metadata)
        return RedeemedCredential(r.id_number, r.name, pb.Purpose.Name(r.purpose), r.verified_at_unix, r.level,
                                  r.verification_request_id, r.request_id)

    def verification_history(self, session_id: str) -> tuple[tuple[HistoryEntry, ...], int]:
        """The verifications against the identity a PASS session proved; (entries newest first, window days)."""
        r = self._invoke(self._stub.GetVerificationHistory, pb.GetVerificationHistoryRequest(session_id=session_id))
        return tuple(HistoryEntry(e.time_unix, e.caller, pb.Purpose.Name(e.purpose), e.verdict)
                     for e in r.entries), r.window_days

    def health(self, service: str = "") -> str:
        response = self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=self._timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def wait_until_serving(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.health() == "SERVING":
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() >= deadline:
                raise TimeoutError("the node did not report SERVING in time")
            time.sleep(0.1)


def _safe_to_retry(error: grpc.RpcError) -> bool:
    code = error.code()  # type: ignore[attr-defined]
    if code == grpc.StatusCode.UNAVAILABLE:
        return True
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        info = error_info(error)
        # Refused before the request was processed (load shedding, or the node's intake caps, issue 16).
        return info is not None and info.reason in ("OVERLOADED", "RECEIVE_BUSY", "TOO_MANY_STREAMS")
    return False
