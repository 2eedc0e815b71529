"""The same person in every frame of the burst.

Without this, a burst could splice a live stranger's frames (for motion and
texture) with frames of the victim's photo (for the comparison). Two measures:

* the embeddings the caller computed (the recognizer is not this library's business;
  the service embeds only k frames spread over the burst): every pair is compared and
  the worst counts;
* track continuity over every frame of the burst: a face cannot jump across the picture
  or change size abruptly between consecutive frames of one capture, so a splice shows
  as a jump of the face box unless the two captures were framed alike, which is when
  the embeddings, taken on both sides of the burst, see it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def min_pairwise_cosine(embeddings: Sequence[np.ndarray]) -> float:
    """Lowest cosine similarity between any two frames' embeddings (1.0 for a single frame)."""
    if len(embeddings) < 2:
        return 1.0
    matrix = np.stack([np.asarray(e, dtype=np.float64).ravel() for e in embeddings])
    matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    cosines = matrix @ matrix.T
    return float(np.min(cosines[np.triu_indices(len(matrix), k=1)]))


def track_jump(boxes: Sequence[tuple[float, float, float, float]]) -> float:
    """The largest step of the face box between consecutive frames: its centre's displacement,
    or the change of its shorter side, over the earlier box's shorter side (0.0 for one frame).

    Boxes, not landmarks: a head turn moves the landmarks by half a face between the frames
    of a challenge, the box far less (measured on the challenge clips: at most 0.37)."""
    worst = 0.0
    for (x0, y0, w0, h0), (x1, y1, w1, h1) in zip(boxes, boxes[1:]):
        side = max(float(min(w0, h0)), 1.0)
        moved = float(np.hypot((x1 + w1 / 2) - (x0 + w0 / 2), (y1 + h1 / 2) - (y0 + h0 / 2)))
        resized = abs(float(min(w1, h1)) - side)
        worst = max(worst, moved / side, resized / side)
    return worst
