"""The same person in every frame of the burst.

Without this, a burst could splice a live stranger's frames (for motion and
texture) with frames of the victim's photo (for the comparison). Two measures:

* the embeddings the caller computed (the recognizer is not this library's business;
  the service embeds only k frames spread over the burst): every pair is compared and
  the worst counts;
* track continuity over every frame: a face cannot jump across the picture or change
  size abruptly between consecutive frames of one capture, so a splice shows as a jump
  of the face box or landmarks unless the two captures were framed alike, which is
  when the embeddings, taken on both sides of the burst, see it.
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


def track_jump(boxes: Sequence[tuple[float, float, float, float]], landmarks: Sequence[np.ndarray]) -> float:
    """The largest step of the face between consecutive frames: the landmarks' mean
    displacement, or the change of box side, over the earlier frame's box side (0.0 for
    one frame). A live face moves a fraction of its size between frames of a burst."""
    worst = 0.0
    for i in range(1, len(boxes)):
        side = max(float(min(boxes[i - 1][2], boxes[i - 1][3])), 1.0)
        moved = float(np.mean(np.linalg.norm(np.asarray(landmarks[i], np.float64).reshape(5, 2)
                                             - np.asarray(landmarks[i - 1], np.float64).reshape(5, 2), axis=1)))
        resized = abs(float(min(boxes[i][2], boxes[i][3])) - side)
        worst = max(worst, moved / side, resized / side)
    return worst
