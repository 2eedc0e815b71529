"""Is the face in the burst a flat surface moved in front of the camera?

Every point of a plane (a printed photo, a phone or monitor screen) maps from
one view to the next by a single homography, however the plane is moved. A real
head is not flat: when it turns, the nose, cheeks and ears move by different
amounts (parallax), and the mouth and eyes change on their own. Five YuNet
landmarks are too few and too coarse to see this (MODELS.md), so here many
corner points inside the face box are tracked with pyramidal Lucas-Kanade from
the first frame to each later one; tracks that do not come back to where they
started (forward-backward check) are dropped; one homography is fitted to the
rest by least squares, and what it cannot explain is the residual.

Only a burst with enough movement can be judged: a still plane and a still head
both give residual ~ tracking noise. The evidence therefore carries the
movement as well, and the decision only calls a burst planar when it moved
enough to tell (see liveness/decision.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from liveness.scratch import Scratch, own

_MAX_CORNERS = 120
_MIN_TRACKS = 12
_FB_MAX_ERROR = 0.7  # pixels, at the working scale
_WORK_IOD = 60.0  # the face is resampled so the eyes are about this many pixels apart
_LK_PARAMS = dict(winSize=(15, 15), maxLevel=2, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03))


@dataclass(frozen=True)
class PlanarityEvidence:
    movement: float  # median track displacement in the most-moved frame, / inter-ocular distance
    residual: float  # median homography residual in that frame, / inter-ocular distance
    tracks: int  # tracks that survived the forward-backward check there (0: not measurable)


_NOT_MEASURABLE = PlanarityEvidence(movement=0.0, residual=0.0, tracks=0)


def _working_region(
    boxes: Sequence[tuple[float, float, float, float]], shape: tuple[int, int]
) -> tuple[int, int, int, int]:
    height, width = shape
    x0 = max(0, int(min(b[0] for b in boxes)))
    y0 = max(0, int(min(b[1] for b in boxes)))
    x1 = min(width, int(np.ceil(max(b[0] + b[2] for b in boxes))))
    y1 = min(height, int(np.ceil(max(b[1] + b[3] for b in boxes))))
    return x0, y0, x1, y1


def measure_planarity(
    frames: Sequence[np.ndarray],
    boxes: Sequence[tuple[float, float, float, float]],
    landmarks: Sequence[np.ndarray],
    scratch: Scratch | None = None,
) -> PlanarityEvidence:
    if len(frames) < 2 or len({f.shape[:2] for f in frames}) != 1:
        return _NOT_MEASURABLE
    x0, y0, x1, y1 = _working_region(boxes, frames[0].shape[:2])
    if x1 - x0 < 16 or y1 - y0 < 16:
        return _NOT_MEASURABLE
    iod = max(float(np.linalg.norm(np.asarray(landmarks[0][0]) - np.asarray(landmarks[0][1]))), 1.0)
    # Track at a fixed face scale: cost and noise then do not depend on how near the camera is.
    factor = min(1.0, _WORK_IOD / iod)
    greys = []
    for frame in frames:
        grey = own(scratch, cv2.cvtColor(frame[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY))
        if factor < 1.0:
            grey = own(scratch, cv2.resize(grey, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA))
        greys.append(grey)
    work_iod = iod * factor

    # Corners only inside the first frame's face box (not the background around it).
    mask = own(scratch, np.zeros_like(greys[0]))
    bx, by, bw, bh = boxes[0]
    mx0, my0 = int((bx - x0) * factor), int((by - y0) * factor)
    mask[max(0, my0) : int(my0 + bh * factor), max(0, mx0) : int(mx0 + bw * factor)] = 255
    corners = own(scratch, cv2.goodFeaturesToTrack(greys[0], _MAX_CORNERS, 0.01, max(3.0, work_iod / 12), mask=mask))
    if corners is None or len(corners) < _MIN_TRACKS:
        return _NOT_MEASURABLE

    best = _NOT_MEASURABLE
    for grey in greys[1:]:
        moved, status, _ = (own(scratch, a) for a in cv2.calcOpticalFlowPyrLK(greys[0], grey, corners, None,
                                                                                 **_LK_PARAMS))
        back, status_back, _ = (own(scratch, a) for a in cv2.calcOpticalFlowPyrLK(grey, greys[0], moved, None,
                                                                                     **_LK_PARAMS))
        ok = (status.ravel() == 1) & (status_back.ravel() == 1)
        ok &= np.linalg.norm((back - corners).reshape(-1, 2), axis=1) < _FB_MAX_ERROR
        if ok.sum() < _MIN_TRACKS:
            continue
        src = own(scratch, corners.reshape(-1, 2)[ok].astype(np.float64))
        dst = own(scratch, moved.reshape(-1, 2)[ok].astype(np.float64))
        movement = float(np.median(np.linalg.norm(dst - src, axis=1))) / work_iod
        # least squares over every track: no inlier picking
        homography, _ = (own(scratch, a) for a in cv2.findHomography(src, dst, 0))
        if homography is None:
            continue
        projected = own(scratch, cv2.perspectiveTransform(src.reshape(-1, 1, 2), homography)).reshape(-1, 2)
        residual = float(np.median(np.linalg.norm(projected - dst, axis=1))) / work_iod
        if movement > best.movement:
            best = PlanarityEvidence(movement=movement, residual=residual, tracks=int(ok.sum()))
    return best
