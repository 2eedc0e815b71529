"""Several enrolled reference photos compared as one template (issue 15).

With m templates and "PASS iff max over templates >= threshold", an impostor gets m
chances, so a level's false-match rate grows up to m-fold with what was enrolled.
The node instead compares against the renormalised mean of the templates: one
comparison whatever m is. Averaging raises impostor scores (the mean template sits
closer to every face), so each level has a threshold per m (idv/reference_thresholds.py),
calibrated on single-photo populations for m = 1 and on fused 2- and 3-photo references
for m = 2 and m >= 3 (idv/evaluation/demographics_run.py; the rates at the threshold
each m gets are in benchmarks/results/demographics.md).
"""

from __future__ import annotations

import numpy as np


def fuse_references(templates: np.ndarray) -> np.ndarray:
    """(m, D) unit rows -> (1, D): their mean, renormalised (one row is returned as is)."""
    if templates.ndim != 2 or templates.shape[0] < 1:
        raise ValueError(f"reference templates must be (m >= 1, D), got {templates.shape}")
    if templates.shape[0] == 1:
        return templates
    mean = templates.astype(np.float32).mean(axis=0, keepdims=True)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)
