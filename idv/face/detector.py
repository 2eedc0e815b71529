"""YuNet face detector (opencv_zoo face_detection_yunet_2023mar) run on onnxruntime.

The exported graph has a fixed 1x3x640x640 input and anchor-free heads at
strides 8/16/32 (cls, obj, bbox, kps). Pre- and post-processing follow OpenCV's
FaceDetectorYN, written out here so the model runs under our own session
options: the image is scaled to fit 640x640, placed top-left on a black canvas,
fed as BGR 0..255; each cell's score is sqrt(cls * obj).
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np

from idv.face.types import FaceDetection
from idv.models.runtime import LoadedModel

class FaceDetector(Protocol):
    fingerprint: str

    def detect(self, image_bgr: np.ndarray) -> list[FaceDetection]:
        """All faces above the score threshold, best first, landmarks in the ArcFace order."""
        ...


_INPUT_SIZE = 640
_STRIDES = (8, 16, 32)


class YuNetDetector:
    def __init__(self, model: LoadedModel, score_threshold: float = 0.6, nms_threshold: float = 0.3, top_k: int = 50):
        self._session = model.session
        self._input_name = model.session.get_inputs()[0].name
        self._score_threshold = score_threshold
        self._nms_threshold = nms_threshold
        self._top_k = top_k
        self.fingerprint = model.fingerprint
        self._grids = {s: self._grid(s) for s in _STRIDES}

    @staticmethod
    def _grid(stride: int) -> np.ndarray:
        cells = _INPUT_SIZE // stride
        rows, cols = np.meshgrid(np.arange(cells, dtype=np.float32), np.arange(cells, dtype=np.float32), indexing="ij")
        return np.stack([cols.ravel(), rows.ravel()], axis=1)  # (N, 2) as (col, row)

    def _letterbox(self, image_bgr: np.ndarray) -> tuple[np.ndarray, float]:
        height, width = image_bgr.shape[:2]
        scale = min(_INPUT_SIZE / width, _INPUT_SIZE / height)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        canvas = np.zeros((_INPUT_SIZE, _INPUT_SIZE, 3), dtype=np.float32)
        resized = image_bgr if scale == 1.0 else cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        canvas[:new_h, :new_w] = resized
        return canvas.transpose(2, 0, 1)[np.newaxis], scale

    def detect(self, image_bgr: np.ndarray) -> list[FaceDetection]:
        """All faces above the score threshold, best first."""
        blob, scale = self._letterbox(image_bgr)
        outputs = self._session.run(None, {self._input_name: blob})
        named = dict(zip((o.name for o in self._session.get_outputs()), outputs))
        boxes, scores, landmarks = [], [], []
        for stride in _STRIDES:
            cls = np.clip(named[f"cls_{stride}"][0, :, 0], 0.0, 1.0)
            obj = np.clip(named[f"obj_{stride}"][0, :, 0], 0.0, 1.0)
            score = np.sqrt(cls * obj)
            keep = score >= self._score_threshold
            if not np.any(keep):
                continue
            grid = self._grids[stride][keep]
            bbox = named[f"bbox_{stride}"][0][keep]
            kps = named[f"kps_{stride}"][0][keep].reshape(-1, 5, 2)
            centre = (grid + bbox[:, :2]) * stride
            size = np.exp(bbox[:, 2:4]) * stride
            boxes.append(np.concatenate([centre - size / 2, size], axis=1))
            landmarks.append((kps + grid[:, np.newaxis, :]) * stride)
            scores.append(score[keep])
        if not boxes:
            return []
        all_boxes = np.concatenate(boxes) / scale
        all_scores = np.concatenate(scores)
        all_landmarks = np.concatenate(landmarks) / scale
        kept = cv2.dnn.NMSBoxes(
            all_boxes.tolist(), all_scores.tolist(), self._score_threshold, self._nms_threshold, top_k=self._top_k
        )
        order = sorted(np.asarray(kept).ravel().tolist(), key=lambda i: -all_scores[i])
        return [
            FaceDetection(
                x=float(all_boxes[i, 0]),
                y=float(all_boxes[i, 1]),
                width=float(all_boxes[i, 2]),
                height=float(all_boxes[i, 3]),
                score=float(all_scores[i]),
                landmarks=all_landmarks[i].astype(np.float32),
            )
            for i in order
        ]
