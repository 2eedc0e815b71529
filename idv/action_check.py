"""Checks that a burst shows the challenge's actions, in order (FaceMesh signals per frame)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from idv.face.types import FaceDetection
from liveness.actions import Action, ActionConfig, detect_actions, frame_signals
from liveness.facemesh import FaceMesh


class ActionVerifier:
    def __init__(self, facemesh: FaceMesh, config: ActionConfig):
        self._facemesh = facemesh
        self._config = config

    def performed(self, frames: Sequence[np.ndarray], faces: Sequence[FaceDetection], actions: Sequence[str],
                  owned: list[np.ndarray] | None = None) -> bool:
        """`owned`: the request's buffer list; FaceMesh crops and inputs join it, to be zeroed."""
        signals = [frame_signals(self._facemesh.landmarks(frame, face.box_xywh, owned), index)
                   for index, (frame, face) in enumerate(zip(frames, faces, strict=True))]
        return detect_actions(signals, [Action(a) for a in actions], self._config).passed
