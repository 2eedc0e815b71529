"""YuNet face detector (opencv_zoo face_detection_yunet_2023mar) run on onnxruntime.

Anchor-free heads at strides 8/16/32 (cls, obj, bbox, kps). Pre- and post-processing
follow OpenCV's FaceDetectorYN, written out here so the model runs under our own
session options: the image is scaled, placed top-left on a black canvas, fed as BGR
0..255; each cell's score is sqrt(cls * obj).

Two input shapes (issue 12):

* the exported graph's fixed 640x640: the image is scaled to fit it;
* the pull-time `dynamic_image_size` build: the image is scaled by `DetectionScale`
  onto a canvas rounded up to a multiple of 32. At full size (factor 1, the default) the
  scale is the fixed graph's own (the image fitted to 640x640, upscaled when smaller), only
  the canvas is trimmed to the image: the boxes and landmarks every threshold was calibrated
  on, for a 640x480 frame at 640x480 instead of 640x640. Below 1 the image is shrunk further
  (so the smallest face the quality gate accepts is still `target_face_px` wide, enough for
  YuNet to find it): a 640x480 frame then costs a 256x192 run. `refine` re-detects one face
  on a region around it at the fixed graph's scale: the landmarks a full-size run gives.
"""

from __future__ import annotations

from dataclasses import dataclass
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

    def refine(self, image_bgr: np.ndarray, face: FaceDetection) -> FaceDetection:
        """`face` with its box and landmarks measured again at full resolution (or as it was)."""
        ...


_INPUT_SIZE = 640
_STRIDES = (8, 16, 32)
_ALIGN = 32  # the coarsest stride: a dynamic input's sides are multiples of it


@dataclass(frozen=True)
class DetectionScale:
    """How far a frame is shrunk before detection (dynamic-input YuNet only).

    The smallest face the quality gate accepts (`min_face_px`, QualityLimits.min_face_size)
    is detected at `target_face_px` pixels: scale = target / min, never above 1.
    `refine_margin`: the width of the region `refine` re-detects on, in face sizes.
    Chosen in benchmarks/accuracy/burst_sweep.py (results/burst_sweep.json).
    """

    min_face_px: float = 60.0
    # 60 (factor 1: the fixed graph's scale, a 640x480 canvas instead of 640x640 for a 640x480
    # frame) keeps every face box what the full-size detector gives, so the liveness cues judge
    # the boxes they were calibrated on. 24 (a 256x192 canvas) kept verification identical but
    # moves liveness: motion and planarity read the union of every frame's box, planarity the
    # first frame's, so refining only the embedded (or also the passive) frames leaves coarse
    # boxes 10-15 px off in the cues, and refining every frame costs more than detecting at full
    # size (detection_scale_liveness.json). Lower it once the cues are calibrated on coarse boxes.
    target_face_px: float = 60.0
    refine_margin: float = 2.0

    def __post_init__(self) -> None:
        if not (self.min_face_px > 0 and self.target_face_px > 0 and self.refine_margin >= 1.0):
            raise ValueError("detection scale sizes must be positive")

    @property
    def factor(self) -> float:
        return min(1.0, self.target_face_px / self.min_face_px)


def _ceil_to(value: float, step: int) -> int:
    return max(step, int(np.ceil(value / step)) * step)


class YuNetDetector:
    def __init__(self, model: LoadedModel, score_threshold: float = 0.6, nms_threshold: float = 0.3, top_k: int = 50,
                 scale: DetectionScale = DetectionScale()):
        self._session = model.session
        self._input_name = model.session.get_inputs()[0].name
        self._output_names = [o.name for o in model.session.get_outputs()]
        shape = model.session.get_inputs()[0].shape
        self._dynamic = not (isinstance(shape[2], int) and isinstance(shape[3], int))
        self._score_threshold = score_threshold
        self._nms_threshold = nms_threshold
        self._top_k = top_k
        self._scale = scale
        self.fingerprint = model.fingerprint
        self._grids: dict[tuple[int, int, int], np.ndarray] = {}

    def _grid(self, stride: int, height: int, width: int) -> np.ndarray:
        key = (stride, height, width)
        grid = self._grids.get(key)
        if grid is None:  # a handful of canvas sizes per deployment: cached, never evicted
            rows, cols = np.meshgrid(np.arange(height // stride, dtype=np.float32),
                                     np.arange(width // stride, dtype=np.float32), indexing="ij")
            grid = self._grids[key] = np.stack([cols.ravel(), rows.ravel()], axis=1)  # (N, 2) as (col, row)
        return grid

    def _detection_scale(self, height: int, width: int) -> float:
        """The scale `detect` runs at: the fixed graph's (the reference every threshold was calibrated
        on), shrunk further by the detection scale's factor when that is below 1. Not min(1, ...):
        an image smaller than 640 is upscaled as the fixed graph upscales it. Measured with
        burst_sweep.py on LFW's 250x250 images: at their own size the score at FMR 1e-3 moved from
        0.367 to 0.359 (a calibrated threshold no longer means its FMR); at this scale the scores
        are the fixed graph's (burst_sweep.json `dyn_face60`)."""
        reference = min(_INPUT_SIZE / width, _INPUT_SIZE / height)
        factor = self._scale.factor
        return reference if factor >= 1.0 else min(reference, factor)

    def _letterbox(self, image_bgr: np.ndarray, scale: float | None = None) -> tuple[np.ndarray, float]:
        height, width = image_bgr.shape[:2]
        if not self._dynamic:
            scale = min(_INPUT_SIZE / width, _INPUT_SIZE / height)
            canvas_h = canvas_w = _INPUT_SIZE
        else:
            scale = self._detection_scale(height, width) if scale is None else scale
            canvas_h, canvas_w = _ceil_to(height * scale, _ALIGN), _ceil_to(width * scale, _ALIGN)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        # INTER_AREA when shrinking: a bilinear 2.5x shrink aliases fine texture into the face.
        interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
        resized = image_bgr if scale == 1.0 else cv2.resize(image_bgr, (new_w, new_h), interpolation=interpolation)
        blob = np.zeros((1, 3, canvas_h, canvas_w), dtype=np.float32)
        blob[0, :, :new_h, :new_w] = resized.transpose(2, 0, 1)  # one copy: HWC uint8 -> NCHW float32
        return blob, scale

    def detect(self, image_bgr: np.ndarray) -> list[FaceDetection]:
        """All faces above the score threshold, best first.

        A frame where the downscaled copy shows no face is run again at the full-size graph's
        scale: a capture the previous full-size detection accepted is not refused as NO_FACE
        (measured: 12 of 744 liveness bursts had such a frame, burst_sweep.json)."""
        faces = self._detect(image_bgr, None)
        if faces or not self._dynamic:
            return faces
        height, width = image_bgr.shape[:2]
        reference = min(_INPUT_SIZE / width, _INPUT_SIZE / height)
        if self._detection_scale(height, width) == reference:
            return faces  # already the full-size graph's view
        return self._detect(image_bgr, reference)

    def refine(self, image_bgr: np.ndarray, face: FaceDetection) -> FaceDetection:
        """Re-detect `face` as the fixed 640x640 graph would have seen it, at a fraction of its cost.

        The frame is scaled as the fixed graph scales it (to fit 640x640), and only a region
        around the face is run: `refine_margin` face sizes wide, its corner on the coarsest
        stride's grid, so every anchor near the face sees the same pixels at the same grid
        position as in a full-frame run. YuNet's landmarks move by 5-9 % of the inter-ocular
        distance between input scales (burst_sweep.json), and the thresholds were calibrated
        on full-size landmarks: this keeps the embedded faces' alignment what it was.
        The coarse face is kept if the region shows no face overlapping it."""
        height, width = image_bgr.shape[:2]
        scale = min(_INPUT_SIZE / width, _INPUT_SIZE / height)
        if not self._dynamic or self._detection_scale(height, width) == scale:
            return face  # already detected at the full-size graph's scale
        scaled = image_bgr if scale == 1.0 else cv2.resize(
            image_bgr, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_LINEAR)
        side = self._scale.refine_margin * max(face.width, face.height) * scale
        cx, cy = (face.x + face.width / 2) * scale, (face.y + face.height / 2) * scale
        x0 = max(0, int((cx - side / 2) // _ALIGN) * _ALIGN)
        y0 = max(0, int((cy - side / 2) // _ALIGN) * _ALIGN)
        x1 = min(scaled.shape[1], int(np.ceil((cx + side / 2) / _ALIGN)) * _ALIGN)
        y1 = min(scaled.shape[0], int(np.ceil((cy + side / 2) / _ALIGN)) * _ALIGN)
        if x1 - x0 < 16 or y1 - y0 < 16:
            return face
        found = self._detect(scaled[y0:y1, x0:x1], 1.0)  # a view of the scaled frame: no copy
        mapped = [FaceDetection((f.x + x0) / scale, (f.y + y0) / scale, f.width / scale, f.height / scale, f.score,
                                (f.landmarks + np.array([x0, y0], dtype=np.float32)) / scale) for f in found]
        best = max(mapped, key=lambda f: _overlap(f, face), default=None)
        if best is None or _overlap(best, face) < 0.5:
            return face
        return best

    def _detect(self, image_bgr: np.ndarray, scale: float | None) -> list[FaceDetection]:
        blob, scale = self._letterbox(image_bgr, scale)
        outputs = self._session.run(None, {self._input_name: blob})
        named = dict(zip(self._output_names, outputs))
        canvas_h, canvas_w = blob.shape[2], blob.shape[3]
        boxes, scores, landmarks = [], [], []
        for stride in _STRIDES:
            cls = np.clip(named[f"cls_{stride}"][0, :, 0], 0.0, 1.0)
            obj = np.clip(named[f"obj_{stride}"][0, :, 0], 0.0, 1.0)
            score = np.sqrt(cls * obj)
            keep = score >= self._score_threshold
            if not np.any(keep):
                continue
            grid = self._grid(stride, canvas_h, canvas_w)[keep]
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


def _overlap(found: FaceDetection, face: FaceDetection) -> float:
    """Intersection over union of two face boxes."""
    ax0, ay0 = found.x, found.y
    ax1, ay1 = ax0 + found.width, ay0 + found.height
    bx0, by0, bx1, by1 = face.x, face.y, face.x + face.width, face.y + face.height
    iw, ih = max(0.0, min(ax1, bx1) - max(ax0, bx0)), max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = found.width * found.height + face.width * face.height - inter
    return inter / union if union > 0 else 0.0
