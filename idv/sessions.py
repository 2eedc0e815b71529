"""Verification sessions for capture devices (issue 13): open, hand out a capture token, claim it once,
keep the verdict for the creating caller.

What the shared state holds per session, and why:

- the keyed hash of the ID (`id_key`): throttling and the audit use it, as on Verify;
- the canonical ID number and normalised name *sealed* with the node's newest data key
  (AES-256-GCM; associated data binds the ciphertext to the session id, caller and purpose,
  so a record cannot be replayed under another session): the upload must run exactly the
  decision Verify runs, and that decision needs both (the reference lookup and the name
  check). Nothing readable leaves the server: a Redis dump shows neither;
- the challenge id and its actions (the challenge itself is issued by the ChallengeIssuer and
  bound to caller and identity as for CreateChallenge);
- the SHA-256 of the capture token, never the token: a store dump gives no usable token.

A result stays readable by the creating caller until the session record expires
(`SessionPolicy.result_ttl_seconds` after the capture window closes), rather than being
deleted on first read: a backend whose GetSessionResult answer was lost in transit
(timeout, reconnect, retry on another replica) must be able to read it again, and a
repeated read tells nothing new. A second caller gets NOT_FOUND, exactly as for an
unknown session id, so session ids cannot be probed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum
from urllib.parse import urlencode

from idv.credentials import IssuedCredential
from idv.keys import KeyRing
from idv.state.base import SessionResult, SessionStore, StoredSession

TOKEN_MAX_CHARS = 128


@dataclass(frozen=True)
class SessionSettings:
    """The `[sessions]` settings section."""

    frame_count: int = 24  # frames a device is asked to capture
    result_ttl_seconds: float = 600.0  # the result stays readable this long after the capture window
    # Tests only: CreateSession may fix the challenge's actions (gRPC metadata idv-test-fixed-actions);
    # production mode refuses it.
    fixed_challenges: bool = False

    def problems(self) -> list[str]:
        problems: list[str] = []
        if self.frame_count < 1:
            problems.append("sessions.frame_count must be at least 1")
        if self.result_ttl_seconds < 10:
            problems.append("sessions.result_ttl_seconds must be at least 10")
        return problems


@dataclass(frozen=True)
class SessionPolicy:
    # How long the session's result stays readable after the capture window closes.
    result_ttl_seconds: float = 600.0
    # Frames the device is asked to capture (at most the pipeline's max_frames_with_challenge).
    frame_count: int = 24
    # Base of capture_url: the device endpoint as the device reaches it (scheme://host:port).
    capture_base_url: str = "http://127.0.0.1:8080"
    # Record mode (issue 14, development only): the page asks the operator to label each capture.
    record_mode: bool = False


class SessionState(Enum):
    PENDING = "PENDING"
    COMPLETED = "COMPLETED"
    EXPIRED = "EXPIRED"
    REFUSED = "REFUSED"


@dataclass(frozen=True)
class OpenedSession:
    session_id: str
    capture_token: str
    capture_url: str
    actions: tuple[str, ...]
    expires_at: float
    frame_count: int
    light: tuple[tuple[str, int], ...] = ()  # issue 14: the colour sequence the page flashes


@dataclass(frozen=True)
class SessionView:
    state: SessionState
    result: SessionResult | None
    credential: IssuedCredential | None = None  # issue 18: the check-in code while it is valid


@dataclass(frozen=True, repr=False)
class ClaimedCapture:
    """A session whose token was just used: what the decision needs. repr hides the identity."""

    session: StoredSession
    canonical_id: str
    name: str


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class SessionKeeper:
    def __init__(self, store: SessionStore, keys: KeyRing, policy: SessionPolicy,
                 clock: Callable[[], float] = time.time):
        self._store = store
        self._keys = keys
        self._policy = policy
        self._clock = clock

    @property
    def policy(self) -> SessionPolicy:
        return self._policy

    @staticmethod
    def _associated(session_id: str, caller: str, purpose: str) -> bytes:
        return b"idv-session\x00" + "\x00".join((session_id, caller, purpose)).encode()

    def open(self, caller: str, purpose: str, canonical_id: str, name: str, id_key: str,
             challenge_id: str, actions: tuple[str, ...], capture_expires_at: float,
             light: tuple[tuple[str, int], ...] = ()) -> OpenedSession:
        session_id = secrets.token_urlsafe(18)
        token = secrets.token_urlsafe(32)
        key_id, sealed = self._keys.encrypt(f"{canonical_id}\x00{name}".encode(),
                                            self._associated(session_id, caller, purpose))
        self._store.put(StoredSession(
            session_id=session_id, caller=caller, purpose=purpose, id_key=id_key, sealed_identity=sealed,
            key_id=key_id, challenge_id=challenge_id, actions=actions, token_digest=token_digest(token),
            capture_expires_at=capture_expires_at,
            expires_at=capture_expires_at + self._policy.result_ttl_seconds,
        ))
        # The fragment is never sent to any server (not in access logs, not in a Referer).
        fields = {"token": token, "actions": ",".join(actions), "frames": self._policy.frame_count,
                  "expires": int(capture_expires_at)}
        if light:  # issue 14: the page flashes these, in order, while it captures
            fields["light"] = ",".join(f"{colour}:{duration}" for colour, duration in light)
        if self._policy.record_mode:  # issue 14: the page shows the label picker (the node saves the capture)
            fields["record"] = 1
        fragment = urlencode(fields)
        url = f"{self._policy.capture_base_url.rstrip('/')}/capture/#{fragment}"
        return OpenedSession(session_id, token, url, actions, capture_expires_at, self._policy.frame_count, light)

    def claim(self, token: str) -> ClaimedCapture | None:
        """Use the token (once); None for an unknown, used or expired token alike."""
        if not token or len(token) > TOKEN_MAX_CHARS:
            return None
        digest = token_digest(token)
        session = self._store.claim(digest)
        if session is None or not hmac.compare_digest(session.token_digest, digest):
            return None
        plain = self._keys.decrypt(session.key_id, session.sealed_identity,
                                   self._associated(session.session_id, session.caller, session.purpose))
        canonical_id, _, name = plain.decode().partition("\x00")
        return ClaimedCapture(session, canonical_id, name)

    def finish(self, session_id: str, result: SessionResult) -> None:
        self._store.finish(session_id, result)

    def view(self, caller: str, session_id: str, grace_seconds: float) -> SessionView | None:
        """The session's state for its creator; None when unknown or not theirs (same answer)."""
        if not session_id or len(session_id) > TOKEN_MAX_CHARS:
            return None
        found = self._store.get(session_id)
        if found is None:
            return None
        session, result = found
        if not hmac.compare_digest(session.caller, caller):
            return None
        if result is not None:
            return SessionView(SessionState.REFUSED if result.refusal else SessionState.COMPLETED, result,
                               self._unseal_credential(session_id, result))
        # A claimed capture may still be in the pipeline for up to one request budget.
        if self._clock() <= session.capture_expires_at + grace_seconds:
            return SessionView(SessionState.PENDING, None)
        return SessionView(SessionState.EXPIRED, None)

    # --- issue 18: the check-in credential and the person's history, for a session that passed ---

    @staticmethod
    def _credential_associated(session_id: str) -> bytes:
        return b"idv-session-credential\x00" + session_id.encode()

    def passed(self, session_id: str, result: SessionResult, credential: IssuedCredential | None,
               history_token: str) -> None:
        """Record a PASS with its check-in code (sealed: a store dump gives no usable code) and the
        digest of the token the page reads the person's history with ("" when history is off)."""
        if credential is not None:
            key_id, sealed = self._keys.encrypt(credential.code.encode(), self._credential_associated(session_id))
            result = replace(result, sealed_credential=sealed, credential_key_id=key_id,
                             credential_expires_at=credential.expires_at)
        if history_token:
            result = replace(result, history_digest=token_digest(history_token))
        self._store.finish(session_id, result)

    def _unseal_credential(self, session_id: str, result: SessionResult) -> IssuedCredential | None:
        if not result.sealed_credential or result.credential_expires_at < self._clock():
            return None  # none issued, or worthless now: not worth handing out
        code = self._keys.decrypt(result.credential_key_id, result.sealed_credential,
                                  self._credential_associated(session_id))
        return IssuedCredential(code.decode(), result.credential_expires_at)

    def proven_identity(self, session_id: str, caller: str | None = None, history_token: str | None = None) -> str | None:
        """The keyed ID a session proved with PASS, for its creator (`caller`) or for the device that
        holds its history token; None otherwise (unknown, not theirs, not passed: one answer)."""
        if not session_id or len(session_id) > TOKEN_MAX_CHARS:
            return None
        found = self._store.get(session_id)
        if found is None:
            return None
        session, result = found
        if result is None or result.verdict != "PASS":
            return None
        if caller is not None and hmac.compare_digest(session.caller, caller):
            return session.id_key
        if history_token and result.history_digest and len(history_token) <= TOKEN_MAX_CHARS \
                and hmac.compare_digest(result.history_digest, token_digest(history_token)):
            return session.id_key
        return None
