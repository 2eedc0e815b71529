"""The liveness check of one burst: measure every enabled cue, then decide."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from liveness.decision import (
    LivenessConfig,
    LivenessDecision,
    LivenessEvidence,
    burst_length_ok,
    decide,
    judge,
)
from liveness.identity import min_pairwise_cosine, track_jump
from liveness.motion import measure_motion
from liveness.passive import PassiveScorer
from liveness.planarity import measure_planarity
from liveness.scratch import Scratch

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class FaceObservation:
    """One frame of the burst with the face the caller detected in it.

    frame_bgr: HxWx3 uint8; box_xywh: the detector's face box in pixels;
    landmarks5: 5x2 (ArcFace order); embedding: the recognizer's vector for this
    face, or None for a frame the caller did not embed (the identity cue compares the
    embedded frames and checks the track's continuity over all of them).
    """

    frame_bgr: np.ndarray
    box_xywh: tuple[float, float, float, float]
    landmarks5: np.ndarray
    embedding: np.ndarray | None = None


class LivenessChecker:
    """Stateless apart from the two sessions: safe to share between threads
    as far as onnxruntime sessions are (run() is thread-safe)."""

    def __init__(self, passive_v2_session: Any, passive_v1se_session: Any, config: LivenessConfig = LivenessConfig()):
        self._passive = PassiveScorer(passive_v2_session, passive_v1se_session)
        self._config = config

    @property
    def config(self) -> LivenessConfig:
        return self._config

    def check(self, observations: Sequence[FaceObservation], scratch: Scratch | None = None,
              track: Sequence[tuple[float, float, float, float]] | None = None) -> LivenessDecision:
        """With `scratch`, every buffer derived from the frames (patches, crops, motion and planarity
        arrays) is appended to it for the caller to zero when the request ends. `track`: the face box
        of every frame of the capture, when `observations` are a subset of a longer burst (the
        identity cue's continuity is judged between consecutive frames)."""
        if not observations:
            raise ValueError("a liveness check needs at least one observation")
        cfg = self._config
        evidence = self.measure(observations, scratch, track) if burst_length_ok(len(observations), cfg) else _unmeasured(len(observations))
        verdicts = judge(evidence, cfg)
        passed = decide(verdicts)
        # No scores, frames, crops or embeddings in logs: only the burst length and the outcome.
        log.debug("liveness decided", extra={"frames": evidence.frames, "passed": passed})
        return LivenessDecision(passed, verdicts, evidence)

    def measure(self, observations: Sequence[FaceObservation], scratch: Scratch | None = None,
                track: Sequence[tuple[float, float, float, float]] | None = None) -> LivenessEvidence:
        """Every enabled cue's raw values (the multi-frame cues need 2+ frames)."""
        cfg = self._config
        n = len(observations)
        frames = [o.frame_bgr for o in observations]
        boxes = [tuple(float(v) for v in o.box_xywh) for o in observations]
        landmarks = [np.asarray(o.landmarks5, dtype=np.float64).reshape(5, 2) for o in observations]
        multi = n >= 2

        v2: tuple[float, ...] = ()
        v1se: tuple[float, ...] = ()
        passive_score = None
        if cfg.passive_enabled:
            chosen = sorted({int(round(i)) for i in np.linspace(0, n - 1, min(cfg.passive_frames, n))})
            scores = self._passive.score([frames[i] for i in chosen], [boxes[i] for i in chosen], scratch)
            v2, v1se = scores.v2, scores.v1se
            passive_score = float(np.mean(scores.per_frame))

        motion = measure_motion(frames, boxes, landmarks, scratch) if cfg.motion_enabled and multi else None

        identity = None
        jump = None
        if cfg.identity_enabled and multi:
            embedded = [o.embedding for o in observations if o.embedding is not None]
            if not embedded:
                raise ValueError("the identity cue is enabled but no observation has an embedding")
            identity = min_pairwise_cosine(embedded)
            jump = track_jump(list(track) if track is not None else boxes)

        planarity = measure_planarity(frames, boxes, landmarks, scratch) if cfg.planarity_enabled and multi else None
        return LivenessEvidence(n, v2, v1se, passive_score, motion, identity, planarity, jump)


def _unmeasured(frames: int) -> LivenessEvidence:
    # A burst of the wrong length is refused whatever it shows: measuring it would only cost time.
    return LivenessEvidence(frames, (), (), None, None, None, None, None)
