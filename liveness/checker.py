"""The liveness check of one burst: measure every enabled cue, then decide."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Executor, Future, wait
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
from liveness.passive import PassiveScorer, PassiveScores
from liveness.planarity import measure_planarity
from liveness.scratch import Scratch
from liveness.tasks import run_on

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
              track: Sequence[tuple[float, float, float, float]] | None = None,
              executor: Executor | None = None) -> LivenessDecision:
        """With `scratch`, every buffer derived from the frames (patches, crops, motion and planarity
        arrays) is appended to it for the caller to zero when the request ends. `track`: the face box
        of every frame of the capture, when `observations` are a subset of a longer burst (the
        identity cue's continuity is judged between consecutive frames). `executor`: see `begin`."""
        return self.begin(observations, scratch, track, executor).finish(
            [o.embedding for o in observations if o.embedding is not None])

    def begin(self, observations: Sequence[FaceObservation], scratch: Scratch | None = None,
              track: Sequence[tuple[float, float, float, float]] | None = None,
              executor: Executor | None = None) -> PendingCheck:
        """Start the cues that read pixels (each passive model, motion, planarity); `finish` adds the
        identity cue, which needs the embeddings, and decides. The caller may embed meanwhile: the
        observations' `embedding` is not read here.

        With `executor`, each of those cues is a task on it, so one burst's check uses several
        cores (and overlaps the caller's embedding); every task computes what it computes in
        order, so the evidence is the same as without. The caller's thread must not be one of
        the executor's (`finish` waits for them)."""
        if not observations:
            raise ValueError("a liveness check needs at least one observation")
        if not burst_length_ok(len(observations), self._config):
            # A burst of the wrong length is refused whatever it shows: measuring it would only cost time.
            return PendingCheck(self._config, len(observations), {}, None, measured=False)
        return self._start(observations, scratch, track, executor)

    def _start(self, observations: Sequence[FaceObservation], scratch: Scratch | None,
               track: Sequence[tuple[float, float, float, float]] | None, executor: Executor | None) -> PendingCheck:
        cfg = self._config
        n = len(observations)
        frames = [o.frame_bgr for o in observations]
        boxes = [tuple(float(v) for v in o.box_xywh) for o in observations]
        landmarks = [np.asarray(o.landmarks5, dtype=np.float64).reshape(5, 2) for o in observations]
        multi = n >= 2
        tasks: dict[str, Future] = {}
        if cfg.passive_enabled:
            chosen = sorted({int(round(i)) for i in np.linspace(0, n - 1, min(cfg.passive_frames, n))})
            picked = ([frames[i] for i in chosen], [boxes[i] for i in chosen])
            tasks["v2"] = run_on(executor, self._passive.v2_probability, *picked, scratch)
            tasks["v1se"] = run_on(executor, self._passive.v1se_probability, *picked, scratch)
        if cfg.motion_enabled and multi:
            tasks["motion"] = run_on(executor, measure_motion, frames, boxes, landmarks, scratch)
        if cfg.planarity_enabled and multi:
            tasks["planarity"] = run_on(executor, measure_planarity, frames, boxes, landmarks, scratch)
        return PendingCheck(cfg, n, tasks, list(track) if track is not None else boxes, measured=True)

    def measure(self, observations: Sequence[FaceObservation], scratch: Scratch | None = None,
                track: Sequence[tuple[float, float, float, float]] | None = None,
                executor: Executor | None = None) -> LivenessEvidence:
        """Every enabled cue's raw values (the multi-frame cues need 2+ frames), whatever the burst's length."""
        pending = self._start(observations, scratch, track, executor)
        return pending.evidence([o.embedding for o in observations if o.embedding is not None])


class PendingCheck:
    """A liveness check whose pixel cues are running (`LivenessChecker.begin`)."""

    def __init__(self, config: LivenessConfig, frames: int, tasks: dict[str, Future],
                 track: list | None, measured: bool):
        self._config = config
        self._frames = frames
        self._tasks = tasks
        self._track = track
        self._measured = measured

    def wait(self) -> None:
        """Until every cue's task has ended (however): nothing appends to the caller's scratch after."""
        wait(self._tasks.values())

    def evidence(self, embeddings: Sequence[np.ndarray]) -> LivenessEvidence:
        """The cues' raw values; `embeddings`: the embedded frames' vectors, in burst order."""
        self.wait()  # all of them, even when one failed
        if not self._measured:
            return _unmeasured(self._frames)
        found = {name: task.result() for name, task in self._tasks.items()}  # re-raises the first failure
        cfg = self._config
        multi = self._frames >= 2
        v2: tuple[float, ...] = ()
        v1se: tuple[float, ...] = ()
        passive_score = None
        if cfg.passive_enabled:
            scores = PassiveScores(tuple(found["v2"].tolist()), tuple(found["v1se"].tolist()))
            v2, v1se = scores.v2, scores.v1se
            passive_score = float(np.mean(scores.per_frame))
        identity = None
        jump = None
        if cfg.identity_enabled and multi:
            if not embeddings:
                raise ValueError("the identity cue is enabled but no observation has an embedding")
            identity = min_pairwise_cosine(list(embeddings))
            jump = track_jump(self._track)
        return LivenessEvidence(self._frames, v2, v1se, passive_score, found.get("motion"), identity,
                                found.get("planarity"), jump)

    def finish(self, embeddings: Sequence[np.ndarray]) -> LivenessDecision:
        evidence = self.evidence(embeddings)
        verdicts = judge(evidence, self._config)
        passed = decide(verdicts)
        # No scores, frames, crops or embeddings in logs: only the burst length and the outcome.
        log.debug("liveness decided", extra={"frames": evidence.frames, "passed": passed})
        return LivenessDecision(passed, verdicts, evidence)


def _unmeasured(frames: int) -> LivenessEvidence:
    # A burst of the wrong length is refused whatever it shows: measuring it would only cost time.
    return LivenessEvidence(frames, (), (), None, None, None, None, None)
