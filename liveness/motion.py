"""Real change between the frames of a burst.

A camera pointed at a living person never delivers the same picture twice: the
person breathes, blinks and sways, the light shifts. A "burst" made by
repeating one still changes by what the attacker adds: compression artefacts
or noise. Those are fine-grained and spatially incoherent; real change moves
edges and shading, which is coarse and coherent. So, on the face only (one
common box for every frame), comparing each frame with the first:

* first, the best global tone mapping from the first frame to the other is
  removed: a change of brightness or contrast (auto-exposure, or an attacker
  re-lighting a repeated still per copy) is not motion;
* `coarse_change`: mean absolute grey level of what remains, averaged down to
  16x16 over the face: noise and JPEG blocking average out there, a moving
  face does not;
* `coherence`: the share of the difference's energy (face at 64x64) that
  survives a Gaussian low-pass (sigma 2 px): about 0.03 for added white noise,
  0.05-0.2 for re-encoding, 0.1-0.9 for a real face (measured, see README);
* `landmark`: the largest landmark displacement over the inter-ocular distance
  (reported, not judged: detector jitter on re-encoded copies is as large as a
  still person's real movement).

Measured on ../shared/testdata in benchmarks/accuracy/liveness_eval.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from liveness.scratch import Scratch, own

_FINE_SIDE = 64
_COARSE_SIDE = 16
_LOW_PASS_SIGMA = 2.0
_TONE_BINS = 32


@dataclass(frozen=True)
class MotionEvidence:
    coarse_change: float  # grey levels (0..255), largest over the frames
    coherence: float  # 0..1, largest over the frames
    landmark: float  # fraction of the inter-ocular distance, largest over the frames


_NO_MOTION = MotionEvidence(coarse_change=0.0, coherence=0.0, landmark=0.0)


def _union_box(boxes: Sequence[tuple[float, float, float, float]], shape: tuple[int, int]) -> tuple[int, int, int, int]:
    height, width = shape
    x0 = max(0, int(min(b[0] for b in boxes)))
    y0 = max(0, int(min(b[1] for b in boxes)))
    x1 = min(width, int(np.ceil(max(b[0] + b[2] for b in boxes))))
    y1 = min(height, int(np.ceil(max(b[1] + b[3] for b in boxes))))
    return x0, y0, max(x0 + 1, x1), max(y0 + 1, y1)


def _face_grey(frame_bgr: np.ndarray, box: tuple[int, int, int, int], side: int, scratch: Scratch | None) -> np.ndarray:
    x0, y0, x1, y1 = box
    grey = own(scratch, cv2.cvtColor(frame_bgr[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY))
    small = own(scratch, cv2.resize(grey, (side, side), interpolation=cv2.INTER_AREA))
    return own(scratch, small.astype(np.float32))


def _photometric_residual(image: np.ndarray, reference: np.ndarray, scratch: Scratch | None = None) -> np.ndarray:
    """`image` minus the best global tone mapping of `reference`.

    A global change of brightness, contrast or tone curve (auto-exposure, or an
    attacker re-lighting a repeated still per copy, clipping included) is not
    motion. The mapping is estimated without assuming its shape: the mean of
    the difference over the pixels of each grey-level bin of `reference`. Motion puts
    different values on pixels of equal reference grey and survives it.
    """
    # Binned on the difference, not on `image`, so identical frames leave exactly nothing.
    delta = own(scratch, image - reference)
    diff = own(scratch, delta.ravel().astype(np.float64))
    bins = own(scratch, np.minimum((reference * (_TONE_BINS / 256.0)).astype(np.int32), _TONE_BINS - 1).ravel())
    counts = own(scratch, np.bincount(bins, minlength=_TONE_BINS))
    shift = own(scratch, np.bincount(bins, weights=diff, minlength=_TONE_BINS) / np.maximum(counts, 1))
    residual = own(scratch, diff - shift[bins])
    return own(scratch, residual.reshape(image.shape).astype(np.float32))


def _coherence(diff: np.ndarray, scratch: Scratch | None = None) -> float:
    energy = float(np.mean(own(scratch, diff * diff)))
    if energy < 1e-6:
        return 0.0
    low = own(scratch, cv2.GaussianBlur(diff, (0, 0), _LOW_PASS_SIGMA))
    return float(np.mean(own(scratch, low * low))) / energy


def measure_motion(
    frames: Sequence[np.ndarray],
    boxes: Sequence[tuple[float, float, float, float]],
    landmarks: Sequence[np.ndarray],
    scratch: Scratch | None = None,
) -> MotionEvidence:
    if len(frames) < 2 or len({f.shape[:2] for f in frames}) != 1:
        # Frames of one burst come from one camera; differing sizes mean a spliced burst.
        return _NO_MOTION
    region = _union_box(boxes, frames[0].shape[:2])
    fine = [_face_grey(f, region, _FINE_SIDE, scratch) for f in frames]
    residuals = [_photometric_residual(f, fine[0], scratch) for f in fine[1:]]
    coarse_change = max(
        float(np.mean(own(scratch, np.abs(own(scratch, cv2.resize(r, (_COARSE_SIDE, _COARSE_SIDE),
                                                                    interpolation=cv2.INTER_AREA))))))
        for r in residuals
    )
    coherence = max(_coherence(r, scratch) for r in residuals)

    ref = np.asarray(landmarks[0], dtype=np.float64)
    iod = max(float(np.linalg.norm(ref[0] - ref[1])), 1.0)
    landmark = max(float(np.max(np.linalg.norm(np.asarray(l, np.float64) - ref, axis=1))) for l in landmarks[1:]) / iod
    return MotionEvidence(coarse_change=coarse_change, coherence=coherence, landmark=landmark)
