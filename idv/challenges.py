"""One-time active-liveness challenges: issue, bind, consume exactly once, and check the actions.

A challenge is bound to the caller that asked for it and to the keyed hash of the
ID number, stored server-side, and consumed atomically by the first Verify that
presents it. Unknown, expired, replayed, cross-caller and cross-identity uses
all get the same answer (CHALLENGE_INVALID): no oracle.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from idv.state.base import ChallengeStore, StoredChallenge
from liveness.actions import Action, ActionConfig, detect_actions, frame_signals
from liveness.facemesh import FaceMesh


@dataclass(frozen=True)
class ChallengePolicy:
    ttl_seconds: float = 120.0
    min_actions: int = 2
    max_actions: int = 3


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
        """The challenge's actions if it is valid for this caller and identity, else None. Consumes it."""
        if not challenge_id or len(challenge_id) > 128:
            return None
        challenge = self._store.consume(challenge_id)
        if challenge is None:
            return None
        bound = hmac.compare_digest(challenge.caller, caller) & hmac.compare_digest(challenge.id_key, id_key)
        if not bound or challenge.expires_at < self._clock():
            return None
        return challenge.actions


def _opposite(a: str, b: str) -> bool:
    return {a, b} == {Action.TURN_LEFT.value, Action.TURN_RIGHT.value}


class ActionVerifier:
    """Checks that a burst shows the requested actions in order (FaceMesh signals per frame)."""

    def __init__(self, facemesh: FaceMesh, config: ActionConfig):
        self._facemesh = facemesh
        self._config = config

    def performed(self, frames: Sequence[np.ndarray], faces: Sequence[object], actions: Sequence[str]) -> bool:
        signals = [frame_signals(self._facemesh.landmarks(frame, face.box_xywh), index)
                   for index, (frame, face) in enumerate(zip(frames, faces, strict=True))]
        return detect_actions(signals, [Action(a) for a in actions], self._config).passed
