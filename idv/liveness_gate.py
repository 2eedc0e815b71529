"""Adapter from the pipeline's observations to the `liveness` library (passive + multi-frame cues)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from liveness import MAX_BURST, MIN_BURST, FaceObservation, LivenessChecker, LivenessConfig
from liveness.checker import PendingCheck


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

    def frames_judged(self, frames: int, embedded: Sequence[int]) -> list[int]:
        """The frames of a burst of `frames` whose faces the cues read (`embedded`: kept among them)."""
        return _judged(frames, embedded)

    def is_live(self, observations: Sequence, owned: list[np.ndarray] | None = None) -> bool:
        """`owned`: the request's buffer list; every array liveness derives from the frames joins it."""
        embedded = [i for i, o in enumerate(observations) if o.embedding is not None]
        picks = _judged(len(observations), embedded)
        track = [o.face.box_xywh for o in observations]  # every frame: continuity is judged on the whole capture
        return self._checker.check([_observation(observations[i]) for i in picks], scratch=owned, track=track,
                                   executor=self._executor).passed

    def begin(self, observations: Sequence, embedded: Sequence[int], owned: list[np.ndarray]) -> _PendingGate:
        """Start the pixel cues while the caller embeds the `embedded` frames (on the executor, when
        there is one); `finish` with the embedded observations decides as `is_live` would."""
        picks = _judged(len(observations), embedded)
        track = [o.face.box_xywh for o in observations]
        pending = self._checker.begin([_observation(observations[i], with_embedding=False) for i in picks],
                                      scratch=owned, track=track, executor=self._executor)
        return _PendingGate(pending, picks)


class _PendingGate:
    def __init__(self, pending: PendingCheck, picks: list[int]):
        self._pending = pending
        self._picks = picks

    def wait(self) -> None:
        self._pending.wait()

    def finish(self, observations: Sequence) -> bool:
        embeddings = [observations[i].embedding for i in self._picks if observations[i].embedding is not None]
        return self._pending.finish(embeddings).passed


def _judged(frames: int, embedded: Sequence[int]) -> list[int]:
    """The frames liveness judges. Challenge bursts carry up to 24 frames; the multi-frame cues were
    calibrated on bursts of at most MAX_BURST, so an evenly spread subset of that size that keeps
    every embedded frame (the identity cue compares those)."""
    if frames <= MAX_BURST:
        return list(range(frames))
    spread = np.linspace(0, frames - 1, MAX_BURST).round().astype(int).tolist()
    picks = sorted(set(embedded) | set(spread))
    while len(picks) > MAX_BURST:  # drop spread picks nearest a kept neighbour, never an embedded one
        droppable = [p for p in picks if p not in embedded]
        gaps = {p: min(abs(p - q) for q in picks if q != p) for p in droppable}
        picks.remove(min(droppable, key=lambda p: gaps[p]))
    return picks


def _observation(o: Any, with_embedding: bool = True) -> FaceObservation:
    return FaceObservation(o.frame_bgr, o.face.box_xywh, o.face.landmarks, o.embedding if with_embedding else None)


def build_liveness_gate(minifasnet_v2: Any, minifasnet_v1se: Any, settings: LivenessSettings,
                        executor: Executor | None = None) -> LibraryLivenessGate:
    """The gate on two loaded MiniFASNet sessions (from idv.models.model_set.load_models); `executor`:
    the frame pool its cues run on (None: in the calling thread, one after another)."""
    config = LivenessConfig(allow_single_frame=settings.allow_single_frame)
    return LibraryLivenessGate(LivenessChecker(minifasnet_v2, minifasnet_v1se, config), executor)
