"""The same person in every frame of the burst.

Without this, a burst could splice a live stranger's frames (for motion and
texture) with frames of the victim's photo (for the comparison). The caller
computes the embeddings (the recognizer is not this library's business); here
every frame is compared with every other and the worst pair counts.
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
