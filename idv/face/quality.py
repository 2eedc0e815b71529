"""Basic capture-quality gate: face size, sharpness and exposure of the aligned crop."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from idv.face.types import FaceDetection


@dataclass(frozen=True)
class QualityLimits:
    min_face_size: int = 60
    min_sharpness: float = 15.0
    min_brightness: float = 40.0
    max_brightness: float = 220.0

    def problems(self) -> list[str]:
        problems: list[str] = []
        if self.min_face_size < 1:
            problems.append("quality.min_face_size must be at least 1")
        if not (0 < self.min_brightness < self.max_brightness <= 255):
            problems.append("brightness limits must satisfy 0 < min_brightness < max_brightness <= 255")
        return problems


@dataclass(frozen=True)
class QualityReport:
    face_size: float
    sharpness: float
    brightness: float
    passed: bool
    failure: str = ""  # which limit failed, for the audit record only


def assess(face: FaceDetection, aligned_bgr: np.ndarray, limits: QualityLimits) -> QualityReport:
    grey = cv2.cvtColor(aligned_bgr, cv2.COLOR_BGR2GRAY)
    # Only the central face region: the aligned crop's corners hold background.
    centre = grey[16:96, 16:96]
    sharpness = float(cv2.Laplacian(centre, cv2.CV_64F).var())
    brightness = float(centre.mean())
    size = float(min(face.width, face.height))
    failure = ""
    if size < limits.min_face_size:
        failure = "face_size"
    elif sharpness < limits.min_sharpness:
        failure = "sharpness"
    elif not (limits.min_brightness <= brightness <= limits.max_brightness):
        failure = "exposure"
    return QualityReport(face_size=size, sharpness=sharpness, brightness=brightness, passed=not failure, failure=failure)
