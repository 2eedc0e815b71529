"""Near-duplicate frames within one burst: a still repeated, or re-encoded, instead of a capture.

A burst of distinct captures holds distinct pictures: even a person holding still moves a
little (breathing, micro-saccades, blinks). An injected burst built from one still (or a few)
repeats it. Small grey thumbnails of the face region are compared (downscaling averages
sensor and compression noise away), and a burst fails when it holds too few distinct pictures.
Measured limits (benchmarks/results/near_duplicates.json): a still person differs by only
~0.4 grey levels between frames, so exact and near-lossless repeats are caught, a still
re-encoded with visible noise is not; and real cameras do repeat a frame when polled faster
than they run, so a burst is judged by its share of distinct pictures, not by one pair.

The thumbnails are derived from the probe: the caller owns them and zeroes them with the
rest of the request's buffers. Nothing here is kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class DuplicateConfig:
    # Thumbnail side (pixels) of the face region, grey.
    thumbnail_size: int = 32
    # The face box is widened by this fraction on each side (0: measured best; a margin adds static
    # background, which makes a still person look more like a repeated still).
    box_margin: float = 0.0
    # Two frames whose thumbnails differ by less than this mean absolute grey level (0-255) are
    # the same picture. Chosen on a calibration half of the subjects as half the smallest genuine
    # value seen there (benchmarks/results/near_duplicates.json, report half alongside): a person
    # holding still on a webcam reaches ~0.4, so only byte-identical and near-lossless repeats are
    # caught; a still re-encoded with visible noise is not (it is left to the liveness checks).
    max_difference: float = 0.19
    # A burst must hold at least this fraction of distinct pictures (see has_near_duplicates).
    min_distinct_fraction: float = 1 / 3

    def problems(self) -> list[str]:
        problems: list[str] = []
        if not (8 <= self.thumbnail_size <= 128):
            problems.append("near-duplicate thumbnail_size must be in [8, 128]")
        if not (0 <= self.box_margin <= 1):
            problems.append("near-duplicate box_margin must be in [0, 1]")
        if not (0 < self.min_distinct_fraction <= 1):
            problems.append("near-duplicate min_distinct_fraction must be in (0, 1]")
        if self.max_difference < 0:
            problems.append("near-duplicate max_difference must not be negative")
        return problems


def face_thumbnail(frame_bgr: np.ndarray, box_xywh: tuple[float, float, float, float],
                   config: DuplicateConfig) -> np.ndarray:
    """A float32 (size, size) grey thumbnail of the widened face box; the caller zeroes it."""
    height, width = frame_bgr.shape[:2]
    x1, y1 = box_xywh[0], box_xywh[1]
    x2, y2 = x1 + box_xywh[2], y1 + box_xywh[3]
    mx, my = (x2 - x1) * config.box_margin, (y2 - y1) * config.box_margin
    left, top = max(int(x1 - mx), 0), max(int(y1 - my), 0)
    right, bottom = min(int(x2 + mx) + 1, width), min(int(y2 + my) + 1, height)
    if right - left < 2 or bottom - top < 2:
        left, top, right, bottom = 0, 0, width, height
    region = frame_bgr[top:bottom, left:right]
    grey = cv2.cvtColor(region, cv2.COLOR_BGR2GRAY) if region.ndim == 3 else region
    small = cv2.resize(grey, (config.thumbnail_size, config.thumbnail_size), interpolation=cv2.INTER_AREA)
    grey_copy = small.astype(np.float32)
    if grey is not region:
        grey.fill(0)
    small.fill(0)
    return grey_copy


def burst_thumbnails(frames_bgr: Sequence[np.ndarray], boxes_xywh: Sequence[tuple[float, float, float, float]],
                     config: DuplicateConfig) -> list[np.ndarray]:
    """One thumbnail per frame, all cut from the SAME region: the burst's median face box.

    A per-frame box would jitter with the detector's response to noise or re-encoding, and a
    copy of one still would then be cut differently each time (measured: repeats with noise
    added then differ by several grey levels). One region for the burst makes repeats identical
    up to noise, while a live face still moves inside it.
    """
    median = tuple(float(v) for v in np.median(np.asarray(boxes_xywh, dtype=np.float64), axis=0))
    return [face_thumbnail(frame, median, config) for frame in frames_bgr]  # type: ignore[arg-type]


def smallest_difference(thumbnails: Sequence[np.ndarray]) -> float:
    """The smallest mean absolute difference over all pairs of thumbnails (inf for fewer than two).

    All pairs, not only neighbours: a still may be repeated anywhere in the burst. Each pair is
    compared after removing its mean brightness difference, so a repeat with a brightness
    offset (an exposure change applied to a copy) is still the same picture.
    """
    smallest = float("inf")
    for i in range(len(thumbnails)):
        for j in range(i + 1, len(thumbnails)):
            delta = thumbnails[i] - thumbnails[j]
            difference = float(np.mean(np.abs(delta - float(np.mean(delta)))))
            smallest = min(smallest, difference)
    return smallest


def distinct_pictures(thumbnails: Sequence[np.ndarray], max_difference: float) -> int:
    """How many different pictures the burst holds: a frame is new when it differs from every
    picture kept so far by at least `max_difference` (mean-removed mean absolute grey level)."""
    kept: list[np.ndarray] = []
    for thumbnail in thumbnails:
        if all(_difference(thumbnail, other) >= max_difference for other in kept):
            kept.append(thumbnail)
    return len(kept)


def _difference(a: np.ndarray, b: np.ndarray) -> float:
    delta = a - b
    return float(np.mean(np.abs(delta - float(np.mean(delta)))))


def has_near_duplicates(thumbnails: Sequence[np.ndarray], config: DuplicateConfig) -> bool:
    """True when the burst is mostly one picture (or a few) repeated.

    Not "any two frames alike": real cameras deliver the same frame twice when a terminal polls
    faster than the sensor runs, or a driver converts 25 to 30 fps (measured: the live clips hold
    exact duplicates between neighbouring frames). A burst fails only when it holds fewer distinct
    pictures than `min_distinct_fraction` of its frames (and at least two): one still repeated
    gives one, a camera at half the polling rate gives half.
    """
    needed = max(2, math.ceil(len(thumbnails) * config.min_distinct_fraction))
    return len(thumbnails) >= 2 and distinct_pictures(thumbnails, config.max_difference) < needed
