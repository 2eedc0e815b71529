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
  YuNet to find it): a 640x480 frame then costs a 256x192 run. The subject such a coarse run
  finds is re-detected in `detect` on a window of the full-size canvas around it: within about
  a pixel of the box and landmarks a full-size run gives, which every threshold and liveness cue
  was calibrated on (the coarse ones are 4-15 px off). A frame the coarse run cannot settle (no
  face, a second face near bystander size, a window without the face) is detected at full size.

Why a refinement costs what it costs (measured on NUAA/video/replay/LFW frames, issue 12): not
onnxruntime re-planning (a run after an input-shape change is as fast as a repeated one), but
the window's area: a run costs in proportion to its input's pixels. YuNet's output for a face depends on context well beyond the face: a window
reproduces the full-size box and landmarks exactly only when it covers the whole canvas; 2 face
widths leaves the subject ~1 px off (median; p90 3.4 px, max 10 px on distant subjects), 1.5 and
1.25 widths 1.3 and 3 px (p90 5-6 px), and moved liveness decisions on NUAA. A webcam face at the
calibrated scale is 180-320 px of a 640x480 frame, so a 2-width window is 60-100 % of it and the
coarse run plus the window cost more than the full-size run (detection_scale_liveness.json).
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
        """`face` with its box and landmarks as a full-resolution run gives them (or as it was)."""
        ...

    def detect_coarse(self, image_bgr: np.ndarray) -> list[FaceDetection]:
        """As `detect`, where a frame's faces only need to be found and roughly placed: on a shrunk
        copy when the detector has one (boxes a few pixels off), else `detect` itself."""
        ...


_INPUT_SIZE = 640
_STRIDES = (8, 16, 32)
_ALIGN = 32  # the coarsest stride: a dynamic input's sides are multiples of it
# Refinement windows' sides are rounded up to it: the extra context keeps the subject closer to the
# full-size run (rounded to 32 instead, 2-face-width windows moved 2 of 744 liveness decisions:
# detection_scale_liveness.json at 9918540; at 64, none).
_WINDOW_STEP = 64


@dataclass(frozen=True)
class DetectionScale:
    """How far a frame is shrunk before detection (dynamic-input YuNet only).

    The smallest face the quality gate accepts (`min_face_px`, QualityLimits.min_face_size)
    is detected at `target_face_px` pixels: scale = target / min, never above 1.
    Below 1, the subject found on the shrunk copy is re-detected on a window of the full-size
    canvas `refine_margin` face sizes wide (2: about 1 px from the full-size run, exact when the
    window covers the frame; narrower windows are cheaper and further off).
    `exact_ratio`: a second face at least this fraction of the subject's size on the shrunk
    copy sends the frame to full-size detection, so the bystander check (PipelineLimits.
    bystander_ratio, 0.5) is decided on full-size boxes; below it a face cannot be a bystander
    whatever the coarse box error.
    Chosen in benchmarks/accuracy/burst_sweep.py and detection_scale_liveness.py.
    """

    min_face_px: float = 60.0
    # 60 (factor 1: the fixed graph's scale, a 640x480 canvas instead of 640x640 for a 640x480
    # frame) keeps every face box what the full-size detector gives, so the liveness cues judge
    # the boxes they were calibrated on. 24 (a 256x192 canvas, every subject refined on a window
    # of the full-size canvas) gives the full-size boxes within a pixel or so, but for webcam-
    # distance faces the window is most of the frame and costs more than the full-size run: see
    # the module docstring and detection_scale_liveness.json.
    target_face_px: float = 60.0
    refine_margin: float = 2.0
    exact_ratio: float = 0.35
    # `detect_coarse` (the frames of a long burst whose faces are only found and tracked, see
    # idv/pipeline.py): the smallest accepted face is this wide on the copy, no refinement.
    coarse_face_px: float = 24.0

    def __post_init__(self) -> None:
        if not (self.min_face_px > 0 and self.target_face_px > 0 and self.coarse_face_px > 0
                and self.refine_margin >= 1.0):
            raise ValueError("detection scale sizes must be positive")
        if not 0.0 < self.exact_ratio <= 1.0:
            raise ValueError("detection exact_ratio must be in (0, 1]")

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

    def _reference_scale(self, height: int, width: int) -> float:
        return min(_INPUT_SIZE / width, _INPUT_SIZE / height)

    def _coarse(self, height: int, width: int) -> bool:
        """Whether `detect` runs on a shrunk copy (and refines what it finds)."""
        return self._dynamic and self._detection_scale(height, width) != self._reference_scale(height, width)

    def detect(self, image_bgr: np.ndarray) -> list[FaceDetection]:
        """All faces above the score threshold, best first, the subject's box and landmarks as a
        full-size run gives them.

        On the shrunk copy: no face, or a second face big enough to be a bystander, or a subject
        its full-size window does not show, and the frame is detected again at full size (a
        capture the full-size detector accepts is not refused as NO_FACE: 12 of 744 liveness
        bursts had a frame the shrunk copy missed, burst_sweep.json). Otherwise the largest face
        is replaced by its refinement; the others (too small to be bystanders) keep coarse boxes."""
        height, width = image_bgr.shape[:2]
        if not self._coarse(height, width):
            return self._detect(image_bgr, None)
        reference = self._reference_scale(height, width)
        faces = self._detect(image_bgr, None)
        if not faces:
            return self._detect(image_bgr, reference)
        subject = max(faces, key=lambda f: min(f.width, f.height))
        size = min(subject.width, subject.height)
        if any(f is not subject and min(f.width, f.height) >= self._scale.exact_ratio * size for f in faces):
            return self._detect(image_bgr, reference)
        refined = self._refine(image_bgr, subject, reference)
        if refined is None:
            return self._detect(image_bgr, reference)
        return sorted([refined if f is subject else f for f in faces], key=lambda f: -f.score)

    def detect_coarse(self, image_bgr: np.ndarray) -> list[FaceDetection]:
        """All faces found on a copy shrunk so the smallest accepted face is `coarse_face_px` wide,
        unrefined: boxes and landmarks 4-15 px off the full-size run's (module docstring), enough to
        place a face, track it and crop it, not for the cues calibrated on full-size boxes. A frame
        whose copy shows no face or a second face near bystander size is detected at full size, so
        NO_FACE and MULTIPLE_FACES are decided as `detect` decides them."""
        height, width = image_bgr.shape[:2]
        reference = self._reference_scale(height, width)
        scale = min(reference, self._scale.coarse_face_px / self._scale.min_face_px)
        if not self._dynamic or scale >= self._detection_scale(height, width):
            return self.detect(image_bgr)  # no cheaper copy than what `detect` runs on
        faces = self._detect(image_bgr, scale)
        if not faces:
            return self.detect(image_bgr)
        subject = max(faces, key=lambda f: min(f.width, f.height))
        size = min(subject.width, subject.height)
        if any(f is not subject and min(f.width, f.height) >= self._scale.exact_ratio * size for f in faces):
            return self.detect(image_bgr)
        return faces

    def refine(self, image_bgr: np.ndarray, face: FaceDetection) -> FaceDetection:
        """`face` as `detect` returned it: its box and landmarks are already the full-size run's
        (refined in `detect` when it ran on a shrunk copy)."""
        return face

    def _refine(self, image_bgr: np.ndarray, face: FaceDetection, scale: float) -> FaceDetection | None:
        """Re-detect `face` on a window of the full-size canvas (the frame scaled as the fixed
        graph scales it, placed top-left): `refine_margin` face sizes wide, rounded up to
        `_WINDOW_STEP`, its corner on the coarsest stride's grid, so every anchor near the face sees
        the pixels it sees in a full-frame run at the same grid position. Only the window is
        scaled. None when the window shows no face overlapping `face`."""
        height, width = image_bgr.shape[:2]
        canvas_w = _ceil_to(width * scale, _ALIGN)
        canvas_h = _ceil_to(height * scale, _ALIGN)
        side = self._scale.refine_margin * max(face.width, face.height) * scale
        win_w, win_h = min(canvas_w, _ceil_to(side, _WINDOW_STEP)), min(canvas_h, _ceil_to(side, _WINDOW_STEP))
        cx, cy = (face.x + face.width / 2) * scale, (face.y + face.height / 2) * scale
        x0 = int(np.clip(round((cx - win_w / 2) / _ALIGN) * _ALIGN, 0, canvas_w - win_w))
        y0 = int(np.clip(round((cy - win_h / 2) / _ALIGN) * _ALIGN, 0, canvas_h - win_h))
        # The scaled frame's pixels inside the window (zeros past its edge, as on the full canvas).
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        vis_w, vis_h = max(0, min(win_w, new_w - x0)), max(0, min(win_h, new_h - y0))
        blob = np.zeros((1, 3, win_h, win_w), dtype=np.float32)
        if vis_w and vis_h:
            if scale == 1.0:
                region = image_bgr[y0:y0 + vis_h, x0:x0 + vis_w]
            else:  # resize's pixel-centre mapping, for the window only
                sx, sy = width / new_w, height / new_h
                matrix = np.array([[1.0 / sx, 0.0, (0.5 / sx - 0.5) - x0], [0.0, 1.0 / sy, (0.5 / sy - 0.5) - y0]])
                interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
                if interpolation == cv2.INTER_AREA:  # no affine INTER_AREA: the frame's shrunk copy, cut
                    region = cv2.resize(image_bgr, (new_w, new_h), interpolation=interpolation)[
                        y0:y0 + vis_h, x0:x0 + vis_w]
                else:
                    region = cv2.warpAffine(image_bgr, matrix, (vis_w, vis_h), flags=cv2.INTER_LINEAR,
                                            borderMode=cv2.BORDER_REPLICATE)
            blob[0, :, :vis_h, :vis_w] = region.transpose(2, 0, 1)
        found = self._run(blob, 1.0)
        mapped = [FaceDetection((f.x + x0) / scale, (f.y + y0) / scale, f.width / scale, f.height / scale, f.score,
                                (f.landmarks + np.array([x0, y0], dtype=np.float32)) / scale) for f in found]
        best = max(mapped, key=lambda f: _overlap(f, face), default=None)
        if best is None or _overlap(best, face) < 0.5:
            return None
        return best

    def _detect(self, image_bgr: np.ndarray, scale: float | None) -> list[FaceDetection]:
        blob, scale = self._letterbox(image_bgr, scale)
        return self._run(blob, scale)

    def _run(self, blob: np.ndarray, scale: float) -> list[FaceDetection]:
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
