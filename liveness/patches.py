"""The multi-scale context patch each MiniFASNet model was trained on.

Follows the upstream CropImage exactly (MODELS.md): grow the face box about its
centre by the model's scale, but never beyond what the image allows; shift the
grown box back inside the image where it sticks out; truncate the corners to
int (upstream's `int()`, i.e. toward zero, not rounding); crop inclusive of the
bottom-right pixel; resize to 80x80 bilinear. Each model judges texture and
context (screen bezels, paper edges) at its own scale, so the scale is part of
the model, not a tuning knob.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PATCH_SIZE = 80


@dataclass(frozen=True)
class PatchSpec:
    scale: float
    size: int = PATCH_SIZE


V2_PATCH = PatchSpec(scale=2.7)
V1SE_PATCH = PatchSpec(scale=4.0)


def patch_box(
    image_wh: tuple[int, int], box_xywh: tuple[float, float, float, float], scale: float
) -> tuple[int, int, int, int]:
    """(left, top, right, bottom), inclusive, in pixels: upstream `_get_new_box`."""
    src_w, src_h = image_wh
    x, y, box_w, box_h = box_xywh
    if box_w <= 0 or box_h <= 0:
        raise ValueError(f"face box has no area: {box_xywh}")
    scale = min((src_h - 1) / box_h, (src_w - 1) / box_w, scale)
    new_w, new_h = box_w * scale, box_h * scale
    cx, cy = x + box_w / 2, y + box_h / 2
    left, top = cx - new_w / 2, cy - new_h / 2
    right, bottom = cx + new_w / 2, cy + new_h / 2
    if left < 0:
        right -= left
        left = 0
    if top < 0:
        bottom -= top
        top = 0
    if right > src_w - 1:
        left -= right - src_w + 1
        right = src_w - 1
    if bottom > src_h - 1:
        top -= bottom - src_h + 1
        bottom = src_h - 1
    return int(left), int(top), int(right), int(bottom)


def crop_patch(image_bgr: np.ndarray, box_xywh: tuple[float, float, float, float], spec: PatchSpec) -> np.ndarray:
    """spec.size x spec.size x 3 uint8 BGR patch around the face."""
    height, width = image_bgr.shape[:2]
    left, top, right, bottom = patch_box((width, height), box_xywh, spec.scale)
    region = image_bgr[top : bottom + 1, left : right + 1]
    return cv2.resize(region, (spec.size, spec.size), interpolation=cv2.INTER_LINEAR)
