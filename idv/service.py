"""The verification service: policy around the pipeline. No gRPC in here.

    caller rate -> validate -> caller's distinct-identity velocity -> identity lockout
    -> challenge (required by purpose? valid, bound, unexpired, unused?)
    -> pipeline (decode, detect, liveness, actions, compare, 1:N screen) -> count the attempt -> audit

Enroll: pipeline (decode, detect, embed, duplicate screen against the gallery, store) -> audit.

Callers are authenticated and their scopes checked by the rpc layer before any
of this runs.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from idv.audit import AuditLog
from idv.challenges import ChallengeIssuer
from idv.errors import IdvError, InvalidRequest, NotFound, NotServing, Throttled, Unauthenticated
from idv.gallery.screening import DuplicateFace
from idv.identity import IdentityError, normalise_name, parse_id_number
from idv.pipeline import (
    Budget,
    EnrollCommand,
    EnrollOutcome,
    VerificationPipeline,
    VerifyCommand,
    VerifyOutcome,
)
from idv.sessions import OpenedSession, SessionKeeper, SessionView
from idv.state.base import SessionResult, StoredChallenge
from idv.throttle import Throttle
from idv.verdicts import CALLER_REASON, Purpose, TrueReason, Verdict
from liveness.actions import Action

log = logging.getLogger(__name__)

# Outcomes that say something about the claimed identity count as failed attempts;
# capture problems (no face, blur) do not, so a clumsy user is not locked out.
_FAILED_ATTEMPT = frozenset({
    TrueReason.FACE_MISMATCH, TrueReason.NO_REFERENCE, TrueReason.NAME_MISMATCH, TrueReason.LIVENESS_FAILED,
    TrueReason.CHALLENGE_FAILED, TrueReason.CHALLENGE_INVALID, TrueReason.IMPERSONATION_SUSPECTED,
})


@dataclass(frozen=True)
class VerifyPolicy:
    challenge_required_for: frozenset[Purpose] = frozenset({Purpose.REGISTRATION})


class VerificationService:
    def __init__(
        self,
        pipeline: VerificationPipeline,
        throttle: Throttle,
        audit: AuditLog,
        policy: VerifyPolicy,
        challenges: ChallengeIssuer | None = None,
        sessions: SessionKeeper | None = None,
        fixed_challenges_allowed: bool = False,
    ):
        self._pipeline = pipeline
        self._throttle = throttle
        self._audit = audit
        self._policy = policy
        self._challenges = challenges
        # --- verification sessions (issue 13) ---
        self._sessions = sessions
        self._fixed_challenges_allowed = fixed_challenges_allowed  # tests only; refused in production

    @property
    def pipeline(self) -> VerificationPipeline:
        return self._pipeline

    def _audit_decision(self, command: VerifyCommand, outcome: VerifyOutcome) -> None:
        self._audit.append({
            "event": "verify",
            "request_id": outcome.request_id,
            "caller": command.caller,
            "purpose": command.purpose.value if command.purpose else "",
            "id_key": outcome.id_key,
            "verdict": outcome.verdict.value,
            "true_reason": outcome.true_reason.value,
            "models": self._pipeline.fingerprints,
            "timings_ms": {k: round(v, 2) for k, v in outcome.timings_ms.items()},
        })

    def _audit_refusal(self, command: VerifyCommand, id_key: str, error: Throttled) -> None:
        self._audit.append({
            "event": "verify_refused",
            "request_id": str(uuid.uuid4()),
            "caller": command.caller,
            "purpose": command.purpose.value if command.purpose else "",
            "id_key": id_key,
            "verdict": "REFUSED",
            "true_reason": error.reason,
        })

    def verify(self, command: VerifyCommand, budget: Budget) -> VerifyOutcome:
        self._throttle.admit_caller(command.caller)
        request = self._pipeline.validate(command)
        try:
            self._throttle.admit_identity_for_caller(command.caller, request.id_key)
            ticket = self._throttle.begin(request.id_key)
        except Throttled as refused:
            self._audit_refusal(command, request.id_key, refused)
            raise
        try:
            outcome = self._decide(command, request, budget)
        except BaseException:
            self._throttle.neutral(ticket)  # errors (deadline, store down) are not the person's failure
            raise
        if outcome.true_reason is TrueReason.VERIFIED:
            self._throttle.succeeded(ticket)
        elif outcome.true_reason in _FAILED_ATTEMPT:
            self._throttle.failed(ticket)
        else:
            self._throttle.neutral(ticket)
        self._audit_decision(command, outcome)
        return outcome

    def _decide(self, command: VerifyCommand, request, budget: Budget) -> VerifyOutcome:
        actions: tuple[str, ...] | None = None
        if command.challenge_id:
            if self._challenges is not None:
                actions = self._challenges.redeem(command.challenge_id, command.caller, request.id_key)
            if actions is None:
                return _early(TrueReason.CHALLENGE_INVALID, request.id_key)
        elif request.purpose in self._policy.challenge_required_for:
            return _early(TrueReason.CHALLENGE_REQUIRED, request.id_key)
        return self._pipeline.evaluate(request, budget, actions)

    def enroll(self, command: EnrollCommand, budget: Budget) -> EnrollOutcome:
        try:
            outcome = self._pipeline.enroll(command, budget)
        except DuplicateFace as refused:
            # One face under two ID numbers (一人多号): the caller hears DUPLICATE_FACE only;
            # the audit names the other identity (keyed hash) for the review.
            self._audit.append({
                "event": "enroll_refused",
                "request_id": str(uuid.uuid4()),
                "caller": command.caller,
                "id_key": refused.id_key,
                "reason": refused.reason,
                "duplicate_of": refused.duplicate_of,
                "models": self._pipeline.fingerprints,
            })
            raise
        id_key = outcome.id_key
        record = {
            "event": "enroll",
            "request_id": outcome.request_id,
            "caller": command.caller,
            "id_key": id_key,
            "templates": outcome.template_count,
            "models": self._pipeline.fingerprints,
        }
        if outcome.flagged_for_review:
            record["flagged_for_review"] = True
            record["duplicate_of"] = outcome.duplicate_of
        self._audit.append(record)
        self._throttle.reset_identity(id_key)  # a fresh reference starts with a clean slate
        return outcome

    def create_challenge(self, caller: str, id_number: str) -> StoredChallenge:
        if self._challenges is None:
            raise NotServing("active challenges need the FaceMesh model, which this node has not loaded")
        self._throttle.admit_caller(caller)
        try:
            canonical = parse_id_number(id_number).value
        except IdentityError as exc:
            raise InvalidRequest(exc.message, exc.reason) from None
        return self._challenges.issue(caller, self._pipeline.vault.id_key(canonical))

    # --- verification sessions (issue 13): the upload runs `verify` above, nothing else ---------

    def create_session(self, caller: str, id_number: str, name: str, purpose: Purpose | None,
                       fixed_actions: tuple[str, ...] = ()) -> OpenedSession:
        if self._sessions is None or self._challenges is None:
            raise NotServing("this node does not serve sessions: they need the device endpoint (device_port) "
                             "and the FaceMesh model (active challenges)")
        self._throttle.admit_caller(caller)
        if purpose is None:
            raise InvalidRequest("purpose is required (REGISTRATION, LICENCE_RENEWAL or CHECK_IN)", "MISSING_PURPOSE")
        try:
            canonical, normalised = parse_id_number(id_number).value, normalise_name(name)
        except IdentityError as exc:
            raise InvalidRequest(exc.message, exc.reason) from None
        if fixed_actions and (not self._fixed_challenges_allowed
                              or not set(fixed_actions) <= {a.value for a in Action}):
            raise InvalidRequest("a fixed challenge is a test facility this node does not allow", "FIXED_CHALLENGE_REFUSED")
        id_key = self._pipeline.vault.id_key(canonical)
        challenge = self._challenges.issue(caller, id_key, fixed_actions)
        opened = self._sessions.open(caller, purpose.value, canonical, normalised, id_key, challenge.challenge_id,
                                     challenge.actions, challenge.expires_at)
        # The upload's decision is audited as any Verify ("verify", same caller and id_key).
        self._audit.append({"event": "session_open", "request_id": str(uuid.uuid4()), "caller": caller,
                            "purpose": purpose.value, "id_key": id_key, "session_id": opened.session_id,
                            "fixed_challenge": bool(fixed_actions)})
        return opened

    def verify_capture(self, capture_token: str, frames: tuple[bytes, ...],
                       budget: Budget) -> tuple[VerifyCommand, VerifyOutcome]:
        """A device's upload: use the token once, then the very decision Verify makes, for the session's
        caller, identity, purpose and challenge. The verdict (or the refusal) is kept for the creator."""
        if self._sessions is None:
            raise NotServing("this node does not serve verification sessions")
        claimed = self._sessions.claim(capture_token)
        if claimed is None:
            raise Unauthenticated("the capture token is not valid (unknown, already used or expired)",
                                  "CAPTURE_TOKEN_INVALID")
        session = claimed.session
        command = VerifyCommand(claimed.canonical_id, claimed.name, Purpose(session.purpose), frames,
                                session.challenge_id, session.caller)
        try:
            outcome = self.verify(command, budget)
        except IdvError as refused:
            self._sessions.finish(session.session_id, SessionResult("", "", "", refused.reason))
            raise
        self._sessions.finish(session.session_id,
                              SessionResult(outcome.verdict.value, outcome.reason.value, outcome.request_id))
        return command, outcome

    def session_result(self, caller: str, session_id: str, grace_seconds: float) -> SessionView:
        if self._sessions is None:
            raise NotServing("this node does not serve verification sessions")
        view = self._sessions.view(caller, session_id, grace_seconds)
        if view is None:
            raise NotFound("no such session for this caller (unknown, expired or created by another caller)")
        return view


def _early(true_reason: TrueReason, id_key: str) -> VerifyOutcome:
    """A verdict reached before any frame was decoded."""
    return VerifyOutcome(str(uuid.uuid4()), Verdict.FAIL, CALLER_REASON[true_reason], true_reason, id_key, {})
