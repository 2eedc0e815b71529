"""Verification sessions for capture devices: open one for a backend, take the device's capture once
with its token, keep the verdict for the backend. No gRPC or HTTP in here.

The upload is judged by `VerificationService.verify`, the very decision a trusted terminal's
Verify gets (same throttling, challenge, reference, core and audit): there is no second pipeline.
"""

from __future__ import annotations

import secrets
import time
import uuid

from idv.audit import AuditLog
from idv.challenges import ChallengeIssuer
from idv.errors import IdvError, InvalidRequest, NotFound, Unauthenticated
from idv.history import History, HistoryDisabled, VerificationHistory
from idv.pipeline import Budget
from idv.references import ReferenceVault
from idv.security.terminals import TerminalAttestation
from idv.service import VerificationService, VerifyCommand, VerifyOutcome, parse_identity
from idv.sessions import OpenedSession, SessionKeeper, SessionView
from idv.state.base import SessionResult
from idv.throttle import Throttle
from idv.verdicts import Purpose, Verdict
from liveness.actions import Action


class SessionService:
    def __init__(self, verification: VerificationService, keeper: SessionKeeper, challenges: ChallengeIssuer,
                 vault: ReferenceVault, throttle: Throttle, audit: AuditLog, fixed_challenges_allowed: bool = False,
                 history: VerificationHistory | None = None):
        self._verification = verification
        self._audit = audit
        self._keeper = keeper
        self._challenges = challenges
        self._vault = vault
        self._throttle = throttle
        self._fixed_challenges_allowed = fixed_challenges_allowed  # tests only; production refuses it
        self._history = history  # issue 18: the person's own verification history (None: off)

    def create_session(self, caller: str, id_number: str, name: str, purpose: Purpose | None,
                       fixed_actions: tuple[str, ...] = ()) -> OpenedSession:
        self._throttle.admit_caller(caller)
        if purpose is None:
            raise InvalidRequest("purpose is required (REGISTRATION, LICENCE_RENEWAL or CHECK_IN)", "MISSING_PURPOSE")
        parsed = parse_identity(id_number, name)
        canonical, normalised = parsed.canonical, parsed.name
        if fixed_actions and (not self._fixed_challenges_allowed
                              or not set(fixed_actions) <= {a.value for a in Action}):
            raise InvalidRequest("a fixed challenge is a test facility this node does not allow",
                                 "FIXED_CHALLENGE_REFUSED")
        id_key = self._vault.id_key(canonical)
        kind = self._challenges.policy.kind_for(purpose)  # actions, light or both
        if fixed_actions and kind == "light":
            kind = "both"  # a test fixed the actions: keep them
        challenge = self._challenges.issue(caller, id_key, fixed_actions, kind)
        opened = self._keeper.open(caller, purpose.value, canonical, normalised, id_key, challenge.challenge_id,
                                   challenge.actions, challenge.expires_at, challenge.light)
        # The upload's decision is audited as any Verify ("verify", same caller and id_key).
        self._audit.append({"event": "session_open", "request_id": str(uuid.uuid4()), "caller": caller,
                            "purpose": purpose.value, "id_key": id_key, "session_id": opened.session_id,
                            "fixed_challenge": bool(fixed_actions)})
        return opened

    def verify_capture(self, capture_token: str, frames: tuple[bytes, ...], budget: Budget,
                       timestamps_ms: tuple[float, ...] = (), attestation: TerminalAttestation | None = None,
                       ) -> tuple[VerifyCommand, VerifyOutcome, str]:
        """A device's upload: use the token once, then Verify's own decision for the session's caller,
        identity, purpose and challenge. The verdict (or the refusal) is kept for the creator.

        Issue 18: with PASS, the outcome may carry a check-in credential (kept sealed in the session for
        the creator too), and the third value is the token the device may read the person's
        verification history with ("" otherwise)."""
        claimed = self._keeper.claim(capture_token)
        if claimed is None:
            raise Unauthenticated("the capture token is not valid (unknown, already used or expired)",
                                  "CAPTURE_TOKEN_INVALID")
        session = claimed.session
        # The session opened when its challenge was issued (capture_expires_at is the challenge's expiry).
        opened_at = session.capture_expires_at - self._challenges.policy.ttl_seconds
        command = VerifyCommand(claimed.canonical_id, claimed.name, Purpose(session.purpose), frames,
                                session.challenge_id, session.caller, timestamps_ms,
                                session_window_seconds=max(time.time() - opened_at, 0.001) + 1.0,
                                # An attested terminal signs the capture token: the one value it holds.
                                attestation=attestation, attestation_nonce=capture_token)
        try:
            outcome = self._verification.verify(command, budget)
        except IdvError as refused:
            self._keeper.finish(session.session_id, SessionResult("", "", "", refused.reason))
            raise
        result = SessionResult(outcome.verdict.value, outcome.reason.value, outcome.request_id)
        if outcome.verdict is not Verdict.PASS:
            self._keeper.finish(session.session_id, result)
            return command, outcome, ""
        history_token = ""
        if self._history is not None and self._history.enabled:
            history_token = f"{session.session_id}.{secrets.token_urlsafe(24)}"
        self._keeper.passed(session.session_id, result, outcome.credential, history_token)
        return command, outcome, history_token

    def session_result(self, caller: str, session_id: str, grace_seconds: float) -> SessionView:
        view = self._keeper.view(caller, session_id, grace_seconds)
        if view is None:
            raise NotFound("no such session for this caller (unknown, expired or created by another caller)")
        return view

    # --- issue 18: the person's own verification history ------------------------------------------

    def history(self, caller: str, session_id: str) -> History:
        """For the backend that opened a session which ended in PASS: the history of the identity it proved."""
        history = self._require_history()
        id_key = self._keeper.proven_identity(session_id, caller=caller)
        if id_key is None:
            raise NotFound("no passed session of this caller with that id (unknown, expired, not passed or "
                           "created by another caller)")
        return history.for_identity(id_key, caller, "backend")

    def history_for_device(self, history_token: str) -> History:
        """For the capture page that just passed (it holds the history token the upload answered with)."""
        history = self._require_history()
        session_id, _, _ = history_token.partition(".")
        id_key = self._keeper.proven_identity(session_id, history_token=history_token)
        if id_key is None:
            raise Unauthenticated("the history token is not valid (unknown or expired)", "HISTORY_TOKEN_INVALID")
        return history.for_identity(id_key, "device", "device")

    def _require_history(self) -> VerificationHistory:
        if self._history is None or not self._history.enabled:
            raise HistoryDisabled("the operator has turned the verification history off")
        return self._history
