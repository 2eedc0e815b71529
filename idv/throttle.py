"""Throttling: per identity (lockouts with growing delays, then a failure cap) and per caller
(request rate and distinct-identity velocity). Counters are keyed by the keyed hash of the ID.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from idv.errors import Throttled
from idv.state.base import AttemptTicket, CounterStore, LockoutPolicy


@dataclass(frozen=True)
class ThrottlePolicy:
    """The `[throttle]` settings section."""

    # Consecutive failures before an identity is locked; the lock then grows (doubling).
    lockout_after_failures: int = 5
    lockout_base_seconds: float = 30.0
    # After this many consecutive failures the identity needs another method (in person,
    # or an operator reset): NIST SP 800-63B 5.2.2 caps at 100.
    failure_cap: int = 50
    caller_requests_per_minute: int = 120
    caller_distinct_identities_per_hour: int = 300

    @property
    def lockout(self) -> LockoutPolicy:
        return LockoutPolicy(max_consecutive_failures=self.lockout_after_failures,
                             base_lockout_seconds=self.lockout_base_seconds, failure_cap=self.failure_cap)

    def problems(self) -> list[str]:
        problems = [f"throttle.{name} must be at least 1" for name in (
            "lockout_after_failures", "failure_cap", "caller_requests_per_minute",
            "caller_distinct_identities_per_hour") if getattr(self, name) < 1]
        if self.failure_cap < self.lockout_after_failures:
            problems.append("throttle.failure_cap must be at least lockout_after_failures")
        return problems


@dataclass(frozen=True)
class IdentityLockState:
    consecutive_failures: int
    locked_until: float  # unix time; 0 when not locked now
    failure_cap_reached: bool  # ALTERNATIVE_METHOD_REQUIRED until an operator unlocks

    @property
    def locked(self) -> bool:
        return self.locked_until > 0 or self.failure_cap_reached


class Throttle:
    def __init__(self, store: CounterStore, policy: ThrottlePolicy, clock: Callable[[], float] = time.time):
        self._store = store
        self._policy = policy
        self._lockout = policy.lockout
        self._clock = clock

    def admit_caller(self, caller: str) -> None:
        now = self._clock()
        count = self._store.hit(f"rate:{caller}", 60, now)
        if count > self._policy.caller_requests_per_minute:
            raise Throttled("this caller is over its request rate; retry later", "RATE_LIMITED", 60 - now % 60)

    def admit_identity_for_caller(self, caller: str, id_key: str) -> None:
        now = self._clock()
        distinct = self._store.add_distinct(f"ids:{caller}", id_key, 3600, now)
        if distinct > self._policy.caller_distinct_identities_per_hour:
            raise Throttled("this caller has tried too many different identities; retry later",
                            "VELOCITY_LIMITED", 3600 - now % 3600)

    def begin(self, id_key: str) -> AttemptTicket:
        now = self._clock()
        ticket = self._store.begin_attempt(f"id:{id_key}", self._lockout, now)
        if not ticket.granted:
            if ticket.state.consecutive_failures >= self._lockout.failure_cap:
                raise Throttled("too many failed attempts for this identity; verify by another method",
                                "ALTERNATIVE_METHOD_REQUIRED", self._lockout.max_lockout_seconds)
            raise Throttled("too many failed attempts for this identity; retry later", "IDENTITY_LOCKED",
                            ticket.state.locked_until - now)
        return ticket

    def succeeded(self, ticket: AttemptTicket) -> None:
        self._store.succeed(ticket.key)

    def neutral(self, ticket: AttemptTicket) -> None:
        self._store.refund(ticket)

    def reset_identity(self, id_key: str) -> None:
        self._store.reset(f"id:{id_key}")

    def identity_state(self, id_key: str) -> IdentityLockState:
        """The identity's failures and lock as an operator sees them (GetIdentityStatus)."""
        state = self._store.peek(f"id:{id_key}")
        now = self._clock()
        return IdentityLockState(state.consecutive_failures,
                                 state.locked_until if state.locked_until > now else 0.0,
                                 state.consecutive_failures >= self._lockout.failure_cap)
