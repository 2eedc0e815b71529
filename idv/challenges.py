"""One-time active-liveness challenges: issue, bind, consume exactly once.

Checking that a burst performs the actions is idv.action_check's job, not this module's.

A challenge is bound to the caller that asked for it and to the keyed hash of the
ID number, stored server-side, and consumed atomically by the first Verify that
presents it from its caller for its ID. Unknown, expired, replayed, cross-caller and cross-identity uses
all get the same answer (CHALLENGE_INVALID): no oracle.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from idv.state.base import ChallengeStore, StoredChallenge
from idv.verdicts import Purpose
from liveness.actions import Action, ActionConfig


ALL_PURPOSES: tuple[str, ...] = tuple(p.value for p in Purpose)


@dataclass(frozen=True)
class ChallengePolicy:
    """The `[challenges]` settings section.

    Every purpose needs a server-issued, single-use challenge by default (issue 14): passive
    liveness alone passes talking-head videos made from one still photo. An operator may allow
    passive-only for a purpose, but only by naming it in `passive_only_for` (weaker; logged as a
    warning at start): a purpose merely left out of `required_for` is a configuration error.
    """

    # Purposes whose Verify must present an active challenge (TOML list or comma-separated).
    required_for: tuple[str, ...] = ALL_PURPOSES
    # Purposes explicitly allowed without a challenge (WEAKER: passive liveness only, which
    # synthetic and injected video defeats). Wins over required_for.
    passive_only_for: tuple[str, ...] = ()
    ttl_seconds: float = 120.0
    min_actions: int = 2
    max_actions: int = 3

    @property
    def passive_purposes(self) -> frozenset[Purpose]:
        return frozenset(Purpose(p.strip().upper()) for p in self.passive_only_for)

    @property
    def required_purposes(self) -> frozenset[Purpose]:
        return frozenset(Purpose(p.strip().upper()) for p in self.required_for) - self.passive_purposes

    def problems(self) -> list[str]:
        problems: list[str] = []
        known = {p.value for p in Purpose}
        for name in ("required_for", "passive_only_for"):
            unknown = sorted({p.strip().upper() for p in getattr(self, name)} - known)
            if unknown:
                problems.append(f"challenges.{name} names unknown purposes {unknown}")
        if problems:
            return problems
        unstated = sorted(known - {p.value for p in self.required_purposes} - {p.value for p in self.passive_purposes})
        if unstated:
            problems.append(f"challenges: purposes {unstated} are neither in required_for nor explicitly in "
                            "passive_only_for (passive-only is weaker and must be named there)")
        if self.ttl_seconds <= 0:
            problems.append("challenges.ttl_seconds must be positive")
        if not (1 <= self.min_actions <= self.max_actions):
            problems.append("challenges: 1 <= min_actions <= max_actions")
        return problems


class ChallengeIssuer:
    def __init__(self, store: ChallengeStore, policy: ChallengePolicy, actions: ActionConfig,
                 clock: Callable[[], float] = time.time):
        self._store = store
        self._policy = policy
        self._drawable = actions.drawable_actions()
        self._clock = clock

    def issue(self, caller: str, id_key: str, fixed: tuple[str, ...] = ()) -> StoredChallenge:
        """A random challenge; `fixed` (tests only: the service refuses it outside test mode) sets the actions."""
        count = self._policy.min_actions + secrets.randbelow(self._policy.max_actions - self._policy.min_actions + 1)
        sequence: list[str] = list(fixed)
        while not fixed and len(sequence) < count:
            action = self._drawable[secrets.randbelow(len(self._drawable))].value
            if sequence and (action == sequence[-1] or _opposite(action, sequence[-1])):
                continue  # "left, left" or "left, right" reads as one movement: draw again
            sequence.append(action)
        challenge = StoredChallenge(
            challenge_id=secrets.token_urlsafe(24),
            caller=caller,
            id_key=id_key,
            actions=tuple(sequence),
            expires_at=self._clock() + self._policy.ttl_seconds,
        )
        self._store.put(challenge)
        return challenge

    def redeem(self, challenge_id: str, caller: str, id_key: str) -> tuple[str, ...] | None:
        """The challenge's actions if it is valid for this caller and identity, else None. Consumes it
        only then."""
        if not challenge_id or len(challenge_id) > 128:
            return None
        # The store consumes it only for its own caller and ID: a wrong caller or ID cannot burn it.
        challenge = self._store.consume(challenge_id, caller, id_key)
        if challenge is None or challenge.expires_at < self._clock():
            return None
        return challenge.actions


def _opposite(a: str, b: str) -> bool:
    return {a, b} == {Action.TURN_LEFT.value, Action.TURN_RIGHT.value}
