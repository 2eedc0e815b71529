"""insightface SCRFD face detector (e.g. buffalo_l's det_10g), for operators licensed for that pack.

insightface's `SCRFD` owns the family's pre- and post-processing (mean 127.5 / std 128,
RGB, anchors at strides 8/16/32 with two anchors per cell, distance-encoded boxes and
five key points); it runs on the session idv opened with its own options.
"""

from __future__ import annotations

import numpy as np
from insightface.model_zoo.scrfd import SCRFD

from idv.face.types import FaceDetection
from idv.models.runtime import LoadedModel, ModelLoadError


def check_scrfd_contract(model: LoadedModel) -> None:
    inputs, outputs = model.session.get_inputs(), model.session.get_outputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[1] != 3:
        raise ModelLoadError(f"{model.entry.name}: an SCRFD detector has one Nx3xHxW input")
    # 9 outputs (3 strides) or 15 (5 strides): scores, boxes and key points; alignment needs the key points.
    if len(outputs) not in (9, 15):
        raise ModelLoadError(f"{model.entry.name}: an SCRFD detector with key points has 9 or 15 outputs, "
                             f"not {len(outputs)}")


class ScrfdDetector:
    def __init__(self, model: LoadedModel, score_threshold: float = 0.5, nms_threshold: float = 0.4):
        check_scrfd_contract(model)
        self._model = SCRFD(model_file=str(model.path), session=model.session)
        # Set directly: SCRFD.prepare() would re-create the session with insightface's providers.
        self._model.det_thresh = score_threshold
        self._model.nms_thresh = nms_threshold
        self.fingerprint = model.fingerprint

    def detect(self, image_bgr: np.ndarray) -> list[FaceDetection]:
        boxes, keypoints = self._model.detect(image_bgr)
        faces = []
        for box, points in zip(boxes, keypoints):
            x1, y1, x2, y2, score = (float(v) for v in box)
            faces.append(FaceDetection(x1, y1, x2 - x1, y2 - y1, score, np.asarray(points, dtype=np.float32)))
        return sorted(faces, key=lambda f: -f.score)

    def detect_coarse(self, image_bgr: np.ndarray) -> list[FaceDetection]:
        """No shrunk mode: the full-size run."""
        return self.detect(image_bgr)

    def refine(self, image_bgr: np.ndarray, face: FaceDetection) -> FaceDetection:
        """SCRFD already runs at its own full input size: nothing to refine."""
        return face
