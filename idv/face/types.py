"""Typed values passed between the face stages."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class FaceDetection:
    """One detected face in image pixel coordinates.

    landmarks: 5x2 float32 in the ArcFace order (right eye, left eye, nose tip,
    right mouth corner, left mouth corner; "right" is the subject's right, on the
    image's left).
    """

    x: float
    y: float
    width: float
    height: float
    score: float
    landmarks: np.ndarray

    @property
    def box_xywh(self) -> tuple[float, float, float, float]:
        return (self.x, self.y, self.width, self.height)

    @property
    def inter_ocular(self) -> float:
        return float(np.linalg.norm(self.landmarks[0] - self.landmarks[1]))
