"""Adapter from the pipeline's observations to the `liveness` library (passive + multi-frame cues)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from liveness import MAX_BURST, MIN_BURST, FaceObservation, LivenessChecker, LivenessConfig


@dataclass(frozen=True)
class LivenessSettings:
    """The `[liveness]` settings section."""

    enabled: bool = True
    # A 1-frame burst cannot show motion or 3-D structure: refused (FRAME_COUNT) unless this
    # allows a passive-only check for it (weaker against a still photo; an operator's choice).
    allow_single_frame: bool = False

    def problems(self) -> list[str]:
        return []


class LibraryLivenessGate:
    def __init__(self, checker: LivenessChecker, executor: Executor | None = None):
        self._checker = checker
        # The node's frame pool (idv/assemble.py): the cues of one burst run on it side by side.
        self._executor = executor

    @property
    def min_frames(self) -> int:
        """Shorter bursts cannot pass, so Verify refuses them before decoding (FRAME_COUNT)."""
        return 1 if self._checker.config.allow_single_frame else MIN_BURST

    def is_live(self, observations: Sequence, owned: list[np.ndarray] | None = None) -> bool:
        """`owned`: the request's buffer list; every array liveness derives from the frames joins it."""
        # Challenge bursts carry up to 24 frames; the multi-frame cues were calibrated on
        # bursts of at most MAX_BURST, so judge an evenly spread subset of that size that
        # keeps every embedded frame (the identity cue compares those).
        track = [o.face.box_xywh for o in observations]  # every frame: continuity is judged on the whole capture
        if len(observations) > MAX_BURST:
            embedded = [i for i, o in enumerate(observations) if o.embedding is not None]
            spread = np.linspace(0, len(observations) - 1, MAX_BURST).round().astype(int).tolist()
            picks = sorted(set(embedded) | set(spread))
            while len(picks) > MAX_BURST:  # drop spread picks nearest a kept neighbour, never an embedded one
                droppable = [p for p in picks if p not in embedded]
                gaps = {p: min(abs(p - q) for q in picks if q != p) for p in droppable}
                picks.remove(min(droppable, key=lambda p: gaps[p]))
            observations = [observations[i] for i in picks]
        return self._checker.check([
            FaceObservation(o.frame_bgr, o.face.box_xywh, o.face.landmarks, o.embedding) for o in observations
        ], scratch=owned, track=track, executor=self._executor).passed


def build_liveness_gate(minifasnet_v2: Any, minifasnet_v1se: Any, settings: LivenessSettings,
                        executor: Executor | None = None) -> LibraryLivenessGate:
    """The gate on two loaded MiniFASNet sessions (from idv.models.model_set.load_models); `executor`:
    the frame pool its cues run on (None: in the calling thread, one after another)."""
    config = LivenessConfig(allow_single_frame=settings.allow_single_frame)
    return LibraryLivenessGate(LivenessChecker(minifasnet_v2, minifasnet_v1se, config), executor)
