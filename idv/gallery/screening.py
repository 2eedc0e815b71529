"""Policies on the gallery: one face under several ID numbers (一人多号) at enrolment, and a live
face that belongs to another enrolled identity (冒用) at verification.

Thresholds come from the recognizer's calibration (idv/models/manifest.toml), see
docs/scaling.md: a duplicate is a match at the strictest calibrated operating point
(FMR 1e-5 per comparison) against an identity other than the one being enrolled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from idv.errors import DuplicateFace
from idv.gallery.index import Gallery


@dataclass(frozen=True)
class ScreeningPolicy:
    duplicate_threshold: float
    duplicate_action: str = "refuse"  # refuse | flag | off
    impersonation: bool = False
    impersonation_margin: float = 0.1


class Screening:
    """The pipeline's hook into the gallery (idv.pipeline.Screening)."""

    def __init__(self, gallery: Gallery, policy: ScreeningPolicy, refresh: Callable[[], object] = lambda: None):
        self._gallery = gallery
        self._policy = policy
        # Called before a duplicate check: enrolments made through other replicas count too.
        self._refresh = refresh

    @property
    def gallery(self) -> Gallery:
        return self._gallery

    @property
    def policy(self) -> ScreeningPolicy:
        return self._policy

    def refresh(self) -> None:
        """Bring the gallery up to the store now (after a deletion, before a duplicate check)."""
        self._refresh()

    def _best_other(self, id_key: str, vector: np.ndarray) -> tuple[str, float] | None:
        for match in self._gallery.search(vector, identities=2):
            if match.id_key != id_key:
                return match.id_key, match.score
        return None

    def before_enroll(self, id_key: str, templates: np.ndarray) -> str:
        """'' when no other identity has this face; its keyed hash when policy flags it; raises
        DuplicateFace when policy refuses. Re-enrolling the same identity is not a duplicate."""
        if self._policy.duplicate_action == "off":
            return ""
        self._refresh()
        best: tuple[str, float] | None = None
        for vector in templates:
            other = self._best_other(id_key, vector)
            if other is not None and (best is None or other[1] > best[1]):
                best = other
        if best is None or best[1] < self._policy.duplicate_threshold:
            return ""
        if self._policy.duplicate_action == "refuse":
            raise DuplicateFace(best[0], id_key)
        return best[0]

    def after_enroll(self, id_key: str, templates: np.ndarray) -> None:
        self._gallery.upsert(id_key, templates)

    def impersonated(self, id_key: str, probe: np.ndarray, claimed_score: float) -> bool:
        """The probe matched the claimed identity; does it match another one clearly better?"""
        if not self._policy.impersonation:
            return False
        other = self._best_other(id_key, probe)
        if other is None:
            return False
        score = other[1]
        return score >= self._policy.duplicate_threshold and score >= claimed_score + self._policy.impersonation_margin
