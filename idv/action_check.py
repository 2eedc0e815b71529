"""Checks that a burst shows the challenge's actions, in order (FaceMesh signals per frame)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor, Future, wait

import numpy as np

from idv.face.types import FaceDetection
from liveness.actions import Action, ActionConfig, FrameSignals, detect_actions, frame_signals
from liveness.facemesh import FaceMesh
from liveness.tasks import run_on


class ActionVerifier:
    def __init__(self, facemesh: FaceMesh, config: ActionConfig):
        self._facemesh = facemesh
        self._config = config

    def performed(self, frames: Sequence[np.ndarray], faces: Sequence[FaceDetection], actions: Sequence[str],
                  owned: list[np.ndarray] | None = None) -> bool:
        """`owned`: the request's buffer list; FaceMesh crops and inputs join it, to be zeroed."""
        return self.begin(frames, faces, actions, owned).finish()

    def begin(self, frames: Sequence[np.ndarray], faces: Sequence[FaceDetection], actions: Sequence[str],
              owned: list[np.ndarray] | None = None, executor: Executor | None = None) -> PendingActions:
        """Start FaceMesh on every frame (one task per frame on `executor`, else now, in order);
        `finish` matches the actions. Each frame's signals depend on that frame alone, so the
        answer is the same on either path."""
        tasks = [run_on(executor, self._signals, frame, face, index, owned)
                 for index, (frame, face) in enumerate(zip(frames, faces, strict=True))]
        return PendingActions(tasks, tuple(Action(a) for a in actions), self._config)

    def _signals(self, frame: np.ndarray, face: FaceDetection, index: int,
                 owned: list[np.ndarray] | None) -> FrameSignals:
        return frame_signals(self._facemesh.landmarks(frame, face.box_xywh, owned), index)


class PendingActions:
    """An action check whose FaceMesh tasks are running (`ActionVerifier.begin`)."""

    def __init__(self, tasks: list[Future], actions: tuple[Action, ...], config: ActionConfig):
        self._tasks = tasks
        self._actions = actions
        self._config = config

    def stop(self) -> None:
        """Drop the tasks that have not started (a request that fails earlier does not need them) and
        wait for the others: nothing appends to the caller's buffers after this returns."""
        for task in self._tasks:
            task.cancel()
        wait(self._tasks)

    def finish(self) -> bool:
        wait(self._tasks)  # all of them, even when one failed
        signals = [task.result() for task in self._tasks]  # re-raises the first failure, in frame order
        return detect_actions(signals, self._actions, self._config).passed
