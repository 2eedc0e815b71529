"""Contracts for state shared by replicas: throttling counters and one-time challenges.

The embedded defaults (idv.state.local) keep counters in a SQLite file (they must
survive a restart: a lockout that a restart forgets is no lockout) and challenges
in process memory; idv.state.redis_state shares both between replicas.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence
from typing import Protocol


@dataclass(frozen=True)
class AttemptState:
    consecutive_failures: int
    locked_until: float  # unix time; 0 when not locked


@dataclass(frozen=True)
class AttemptTicket:
    """What `begin_attempt` reserved, so a neutral outcome can give it back exactly."""

    key: str
    previous: AttemptState
    granted: bool
    state: AttemptState  # after the reservation (or the refusing state when not granted)


@dataclass(frozen=True)
class LockoutPolicy:
    """Built from the `[throttle]` section (idv.throttle.ThrottlePolicy), where the defaults live."""

    max_consecutive_failures: int
    base_lockout_seconds: float
    failure_cap: int
    growth: float = 2.0
    max_lockout_seconds: float = 24 * 3600.0

    def lock_for(self, consecutive: int) -> float:
        if consecutive < self.max_consecutive_failures:
            return 0.0
        exponent = consecutive - self.max_consecutive_failures
        return min(self.base_lockout_seconds * self.growth**exponent, self.max_lockout_seconds)


class CounterStore(Protocol):
    def begin_attempt(self, key: str, policy: LockoutPolicy, now: float) -> AttemptTicket:
        """Atomically: refuse if locked or capped; otherwise count this attempt as a failure in advance.

        Counting in advance means parallel attempts from many terminals cannot run
        past the limit before the first failures are recorded.
        """
        ...

    def succeed(self, key: str) -> None:
        """The attempt passed: clear the identity's failures and lock."""
        ...

    def refund(self, ticket: AttemptTicket) -> None:
        """The attempt ended without a face comparison (capture problem, error): give it back."""
        ...

    def reset(self, key: str) -> None: ...

    def peek(self, key: str) -> AttemptState:
        """The identity's counted failures and lock, without counting anything (admin status)."""
        ...

    def hit(self, bucket: str, window_seconds: int, now: float) -> int:
        """Count one event in the fixed window containing `now`; returns the window's count."""
        ...

    def add_distinct(self, bucket: str, member: str, window_seconds: int, now: float) -> int:
        """Add `member` to the window's set; returns the set's size."""
        ...

    def ping(self) -> None: ...


@dataclass(frozen=True)
class StoredChallenge:
    challenge_id: str
    caller: str
    id_key: str
    actions: tuple[str, ...]
    expires_at: float
    # Issue 14: the light sequence to flash, as (colour, duration_ms) steps; empty: no light challenge.
    light: tuple[tuple[str, int], ...] = ()


class ChallengeStore(Protocol):
    def put(self, challenge: StoredChallenge) -> None: ...

    def consume(self, challenge_id: str, caller: str, id_key: str) -> StoredChallenge | None:
        """Atomically remove and return the challenge if it was issued to `caller` for `id_key`: of
        concurrent callers exactly one gets it. Any other caller or ID gets None and leaves it in
        place, so seeing a challenge id is not enough to burn it."""
        ...


# --- verification sessions (issue 13) ----------------------------------------------------------


@dataclass(frozen=True)
class StoredSession:
    """A session as the shared state keeps it: no ID number or name in the clear.

    `sealed_identity` is the canonical ID and normalised name under the node's data key
    (AES-GCM, bound to the session id, caller and purpose), because the upload's decision
    must run exactly what Verify runs on them; `id_key` is the keyed hash (throttling,
    audit). The capture token itself is never stored, only its SHA-256.
    """

    session_id: str
    caller: str
    purpose: str
    id_key: str
    sealed_identity: bytes
    key_id: int
    challenge_id: str
    actions: tuple[str, ...]
    token_digest: str
    capture_expires_at: float  # the token is refused after this (unix time)
    expires_at: float  # the whole record, result included, is gone after this


@dataclass(frozen=True)
class SessionResult:
    """What a judged (or refused) capture left in the session: never a score, never a frame."""

    verdict: str  # PASS | FAIL, "" when refused
    reason: str  # caller-visible Reason, "" when refused
    request_id: str
    refusal: str = ""  # the stable error reason when the upload was refused before a verdict
    # Issue 18, with a PASS: the check-in code sealed with the node's data key (bound to the session),
    # and the SHA-256 of the token the capture page may read the person's history with.
    sealed_credential: bytes = b""
    credential_key_id: int = 0
    credential_expires_at: float = 0.0
    history_digest: str = ""


class SessionStore(Protocol):
    def put(self, session: StoredSession) -> None:
        """Store the session and index its token digest until `capture_expires_at`."""
        ...

    def claim(self, token_digest: str) -> StoredSession | None:
        """Atomically use the token: of concurrent claims exactly one gets the session; later ones None."""
        ...

    def finish(self, session_id: str, result: SessionResult) -> None:
        """Record the result; it lives as long as the session record."""
        ...

    def get(self, session_id: str) -> tuple[StoredSession, SessionResult | None] | None: ...


# --- check-in credentials (issue 18) -----------------------------------------------------------


@dataclass(frozen=True, repr=False)
class StoredCredential:
    """A check-in credential as the shared state keeps it: never the code, never a biometric.

    `code_digest` is the SHA-256 of the code (a dump gives no usable code); `sealed_identity` the
    canonical ID and normalised name under the node's data key (AES-GCM, bound to the digest,
    purpose and verification), kept only until redemption or expiry.
    """

    code_digest: str
    purpose: str
    issuer: str  # the caller whose verification issued it
    id_key: str  # keyed hash of the ID (audit)
    sealed_identity: bytes
    key_id: int
    verified_at: float
    level: str
    request_id: str  # the verification's
    expires_at: float


class CredentialStore(Protocol):
    def put(self, credential: StoredCredential) -> None:
        """Keep it until `expires_at` (then it is gone)."""
        ...

    def take(self, code_digest: str) -> StoredCredential | None:
        """Atomically remove and return it: of concurrent takers (on any replica) exactly one gets it;
        an expired, used or unknown digest gives None."""


# --- capture integrity (issue 14) --------------------------------------------------------------


class SeenFrameStore(Protocol):
    """Keyed digests (HMAC, never pixels) of frames already presented, remembered for a while."""

    def remember(self, digests: Sequence[str], ttl_seconds: float) -> bool:
        """Atomically record every digest for `ttl_seconds`; True if any of them was already
        recorded (a replayed frame). Of two concurrent requests with one frame, exactly one gets
        False."""
        ...
