"""Per-frame action signals of a video file, for diagnosing a capture.

An integrator whose challenge keeps failing can run this on the recorded clip
(the CLI prints the rows) and see which signal never moved far enough.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from liveness.actions import FrameSignals, frame_signals
from liveness.facemesh import FaceMesh


class DetectedFace(Protocol):
    @property
    def box_xywh(self) -> tuple[float, float, float, float]: ...


class FaceDetector(Protocol):
    def detect(self, image_bgr: np.ndarray) -> Sequence[DetectedFace]: ...


def signals_for_frame(image_bgr: np.ndarray, frame_index: int, detector: FaceDetector, facemesh: FaceMesh) -> FrameSignals:
    """Signals of the most confident face in one frame (FrameSignals.missing when there is none)."""
    faces = detector.detect(image_bgr)
    if not faces:
        return FrameSignals.missing(frame_index)
    return frame_signals(facemesh.landmarks(image_bgr, faces[0].box_xywh), frame_index)


def iter_video_frames(path: Path, every_nth: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, BGR frame) for every `every_nth` decoded frame."""
    if every_nth < 1:
        raise ValueError(f"every_nth must be >= 1, got {every_nth}")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise OSError(f"cannot open video {path}")
    try:
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            if index % every_nth == 0:
                yield index, frame
            index += 1
    finally:
        capture.release()


def signals_for_video(path: Path | str, detector: FaceDetector, facemesh: FaceMesh, every_nth: int = 1) -> list[FrameSignals]:
    """Per-frame signals of a video file; frame_index is the decoded frame's index in the file."""
    return [signals_for_frame(frame, index, detector, facemesh) for index, frame in iter_video_frames(Path(path), every_nth)]
