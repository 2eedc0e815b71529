"""Real change between the frames of a burst.

A camera pointed at a living person never delivers the same picture twice: the
person breathes, blinks and sways, the light flickers, the sensor adds fresh
noise to every exposure. A "burst" made by repeating one still (or re-encoding
it) changes by compression noise at most. Two measures, both on the face only:

* `appearance`: the largest mean absolute grey-level difference between any
  frame and the first, on the face region cut with one common box and lightly
  blurred (so JPEG blocking and sensor noise count for less than real change);
* `landmark`: the largest displacement of any of the 5 landmarks from the
  first frame, over the inter-ocular distance.

The burst passes when either shows real change; their thresholds are measured
in benchmarks/accuracy/liveness_eval.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

_FACE_SIDE = 64  # pixels the face region is resampled to before comparing


@dataclass(frozen=True)
class MotionEvidence:
    appearance: float  # grey levels (0..255)
    landmark: float  # fraction of the inter-ocular distance


def _union_box(boxes: Sequence[tuple[float, float, float, float]], shape: tuple[int, int]) -> tuple[int, int, int, int]:
    height, width = shape
    x0 = max(0, int(min(b[0] for b in boxes)))
    y0 = max(0, int(min(b[1] for b in boxes)))
    x1 = min(width, int(np.ceil(max(b[0] + b[2] for b in boxes))))
    y1 = min(height, int(np.ceil(max(b[1] + b[3] for b in boxes))))
    return x0, y0, max(x0 + 1, x1), max(y0 + 1, y1)


def _face_grey(frame_bgr: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    grey = cv2.cvtColor(frame_bgr[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY)
    small = cv2.resize(grey, (_FACE_SIDE, _FACE_SIDE), interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(small, (3, 3), 0).astype(np.float32)


def measure_motion(
    frames: Sequence[np.ndarray],
    boxes: Sequence[tuple[float, float, float, float]],
    landmarks: Sequence[np.ndarray],
) -> MotionEvidence:
    if len(frames) < 2:
        return MotionEvidence(appearance=0.0, landmark=0.0)
    shapes = {f.shape[:2] for f in frames}
    if len(shapes) != 1:
        # Frames of one burst come from one camera; differing sizes mean a spliced burst.
        return MotionEvidence(appearance=0.0, landmark=0.0)
    region = _union_box(boxes, frames[0].shape[:2])
    first = _face_grey(frames[0], region)
    appearance = max(float(np.mean(np.abs(_face_grey(f, region) - first))) for f in frames[1:])

    ref = np.asarray(landmarks[0], dtype=np.float64)
    iod = max(float(np.linalg.norm(ref[0] - ref[1])), 1.0)
    landmark = max(float(np.max(np.linalg.norm(np.asarray(l, np.float64) - ref, axis=1))) for l in landmarks[1:]) / iod
    return MotionEvidence(appearance=appearance, landmark=landmark)
