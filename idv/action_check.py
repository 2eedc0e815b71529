"""Checks that a burst shows the challenge's actions, in order (FaceMesh signals per frame)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor, Future, wait

import numpy as np

from idv.face.types import FaceDetection
from liveness.actions import Action, ActionConfig, FrameSignals, detect_actions, frame_signals
from liveness.facemesh import FaceMesh


class ActionVerifier:
    def __init__(self, facemesh: FaceMesh, config: ActionConfig):
        self._facemesh = facemesh
        self._config = config

    def begin(self, frames: Sequence[np.ndarray], faces: Sequence[FaceDetection], actions: Sequence[str],
              owned: list[np.ndarray] | None = None, executor: Executor | None = None) -> PendingActions:
        """With `executor`, start FaceMesh on every frame now, one task per frame; without, nothing
        runs until `finish` (then in frame order, on the caller's thread, as a sequential node
        always did: a burst that fails earlier never pays for it). Each frame's signals depend on
        that frame alone, so the answer is the same either way. `owned`: the request's buffer
        list; FaceMesh crops and inputs join it, to be zeroed."""
        jobs = [(frame, face, index, owned) for index, (frame, face) in enumerate(zip(frames, faces, strict=True))]
        tasks: list[Future] | None = None
        if executor is not None:
            tasks = []
            try:
                for job in jobs:
                    tasks.append(executor.submit(self._signals, *job))
            except BaseException:  # the pool refused one (shutting down): the started ones end first
                for task in tasks:
                    task.cancel()
                wait(tasks)
                raise
        return PendingActions(self, jobs, tasks, tuple(Action(a) for a in actions))

    def _signals(self, frame: np.ndarray, face: FaceDetection, index: int,
                 owned: list[np.ndarray] | None) -> FrameSignals:
        return frame_signals(self._facemesh.landmarks(frame, face.box_xywh, owned), index)

    def _judge(self, signals: Sequence[FrameSignals], actions: Sequence[Action]) -> bool:
        return detect_actions(signals, actions, self._config).passed


class PendingActions:
    """An action check begun by `ActionVerifier.begin`: its FaceMesh tasks running on a pool, or
    its frames waiting for `finish`."""

    def __init__(self, verifier: ActionVerifier, jobs: list[tuple], tasks: list[Future] | None,
                 actions: tuple[Action, ...]):
        self._verifier = verifier
        self._jobs = jobs
        self._tasks = tasks
        self._actions = actions

    def stop(self) -> None:
        """Drop the tasks that have not started (a request that fails earlier does not need them) and
        wait for the others: nothing appends to the caller's buffers after this returns."""
        if self._tasks is None:
            return
        for task in self._tasks:
            task.cancel()
        wait(self._tasks)

    def finish(self) -> bool:
        if self._tasks is None:
            signals = [self._verifier._signals(*job) for job in self._jobs]
        else:
            wait(self._tasks)  # all of them, even when one failed
            signals = [task.result() for task in self._tasks]  # re-raises the first failure, in frame order
        return self._verifier._judge(signals, self._actions)
