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
from liveness.light import LightConfig, draw_sequence

CHALLENGE_KINDS = ("actions", "light", "both")


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
    # Always 3 by default: with 2, talking-head video played to the page passed 7 of 144 attempts on the
    # development split, with 3, 0 of 72 (benchmarks/accuracy/attacks_eval.py --split dev; ACTIONS.md, "Timing").
    min_actions: int = 3
    max_actions: int = 3
    # Issue 14: what each purpose's challenge holds: "actions" (head/mouth prompts), "light" (the screen
    # flashes a secret colour sequence; the face must reflect it, see liveness/light.py: thresholds
    # from simulation until field data exists) or "both". Light needs the capture page (or a terminal
    # that flashes and sends per-frame timestamps).
    registration_kind: str = "actions"
    licence_renewal_kind: str = "actions"
    check_in_kind: str = "actions"

    def kind_for(self, purpose: Purpose | None) -> str:
        """The challenge kind for a purpose; a challenge asked for without a purpose holds actions."""
        if purpose is None:
            return "actions"
        return str(getattr(self, f"{purpose.value.lower()}_kind")).strip().lower()

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
        for purpose in Purpose:
            if self.kind_for(purpose) not in CHALLENGE_KINDS:
                problems.append(f"challenges.{purpose.value.lower()}_kind must be one of {list(CHALLENGE_KINDS)}")
        if self.ttl_seconds <= 0:
            problems.append("challenges.ttl_seconds must be positive")
        if not (1 <= self.min_actions <= self.max_actions):
            problems.append("challenges: 1 <= min_actions <= max_actions")
        return problems


class ChallengeIssuer:
    def __init__(self, store: ChallengeStore, policy: ChallengePolicy, actions: ActionConfig,
                 clock: Callable[[], float] = time.time, light: LightConfig = LightConfig()):
        self._store = store
        self._policy = policy
        self._drawable = actions.drawable_actions()
        self._clock = clock
        self._light = light

    @property
    def policy(self) -> ChallengePolicy:
        return self._policy

    def issue(self, caller: str, id_key: str, fixed: tuple[str, ...] = (), kind: str = "actions") -> StoredChallenge:
        """A random challenge of `kind`; `fixed` (tests only: the service refuses it outside test mode) sets
        the actions."""
        count = self._policy.min_actions + secrets.randbelow(self._policy.max_actions - self._policy.min_actions + 1)
        if kind == "light":
            count = 0
        light: tuple[tuple[str, int], ...] = ()
        if kind in ("light", "both"):
            light = tuple((step.colour, step.duration_ms) for step in draw_sequence(self._light, secrets.randbelow))
        sequence: list[str] = list(fixed)
        while not fixed and len(sequence) < count:
            action = self._drawable[secrets.randbelow(len(self._drawable))].value
            if sequence and (action == sequence[-1] or _opposite(action, sequence[-1])):
                continue  # "left, left" or "left, right" reads as one movement: draw again
            if action in sequence and count <= len(self._drawable):
                # [A, B, A] would fail a genuine user whose extra A before the third prompt reads as
                # "done before its prompt" (the timing rule); with enough actions, none repeats.
                continue
            sequence.append(action)
        challenge = StoredChallenge(
            challenge_id=secrets.token_urlsafe(24),
            caller=caller,
            id_key=id_key,
            actions=tuple(sequence),
            expires_at=self._clock() + self._policy.ttl_seconds,
            light=light,
        )
        self._store.put(challenge)
        return challenge

    def redeem(self, challenge_id: str, caller: str, id_key: str) -> tuple[str, ...] | None:
        """The challenge's actions if it is valid for this caller and identity, else None. Consumes it
        only then."""
        challenge = self.redeem_challenge(challenge_id, caller, id_key)
        return None if challenge is None else challenge.actions

    def redeem_challenge(self, challenge_id: str, caller: str, id_key: str) -> StoredChallenge | None:
        """The whole challenge (actions and light) if valid for this caller and identity; consumed only then."""
        if not challenge_id or len(challenge_id) > 128:
            return None
        # The store consumes it only for its own caller and ID: a wrong caller or ID cannot burn it.
        challenge = self._store.consume(challenge_id, caller, id_key)
        if challenge is None or challenge.expires_at < self._clock():
            return None
        return challenge


def satisfies(challenge: StoredChallenge, kind: str) -> bool:
    """Does a challenge hold what the purpose's kind requires? (A challenge issued without a purpose,
    or for a laxer one, must not pass where light is required.)"""
    needs_actions = kind in ("actions", "both")
    needs_light = kind in ("light", "both")
    return (bool(challenge.actions) or not needs_actions) and (bool(challenge.light) or not needs_light)


def _opposite(a: str, b: str) -> bool:
    return {a, b} == {Action.TURN_LEFT.value, Action.TURN_RIGHT.value}
