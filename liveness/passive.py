"""Passive (single-frame) anti-spoofing score from the two MiniFASNet models.

Each model sees the face at its own context scale (V2 at 2.7x the face box,
V1SE at 4.0x). A frame's score is upstream's fusion: the mean of the two
models' probability of class 1 ("real"). All frames of a burst go through each
model as one batch: one session call per model per burst.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from liveness.patches import V1SE_PATCH, V2_PATCH, PatchSpec, crop_patch
from liveness.scratch import Scratch, own

REAL_CLASS = 1


class _Session(Protocol):
    def run(self, output_names: Any, input_feed: dict[str, np.ndarray]) -> list[np.ndarray]: ...
    def get_inputs(self) -> Any: ...


def as_session(model: Any) -> _Session:
    """Accept an onnxruntime session or a LoadedModel-like object that carries one."""
    return getattr(model, "session", model)


@dataclass(frozen=True)
class PassiveScores:
    """Per-frame probabilities of "real" from each model and their fusion (all in 0..1)."""

    v2: tuple[float, ...]
    v1se: tuple[float, ...]

    @property
    def per_frame(self) -> tuple[float, ...]:
        return tuple((a + b) / 2 for a, b in zip(self.v2, self.v1se, strict=True))


class _PatchModel:
    def __init__(self, model: Any, spec: PatchSpec):
        self._session = as_session(model)
        self._input = self._session.get_inputs()[0].name
        self._spec = spec
        # Upstream graphs exported with a fixed batch of 1 need one call per patch.
        batch_dim = self._session.get_inputs()[0].shape[0]
        self._batched = not isinstance(batch_dim, int) or batch_dim != 1

    def real_probability(self, frames: Sequence[np.ndarray], boxes: Sequence[tuple[float, float, float, float]],
                         scratch: Scratch | None = None) -> np.ndarray:
        crops = [own(scratch, crop_patch(f, b, self._spec)) for f, b in zip(frames, boxes, strict=True)]
        patches = own(scratch, np.stack(crops))
        blob = own(scratch, patches.transpose(0, 3, 1, 2).astype(np.float32))
        if self._batched:
            probs = own(scratch, self._session.run(None, {self._input: blob})[0])
        else:
            probs = own(scratch, np.concatenate([own(scratch, self._session.run(None, {self._input: blob[i : i + 1]})[0])
                                                 for i in range(len(blob))]))
        return probs[:, REAL_CLASS].astype(np.float64)


class PassiveScorer:
    def __init__(self, v2_model: Any, v1se_model: Any):
        self._v2 = _PatchModel(v2_model, V2_PATCH)
        self._v1se = _PatchModel(v1se_model, V1SE_PATCH)

    def score(self, frames: Sequence[np.ndarray], boxes: Sequence[tuple[float, float, float, float]],
              scratch: Scratch | None = None) -> PassiveScores:
        return PassiveScores(
            v2=tuple(self.v2_probability(frames, boxes, scratch).tolist()),
            v1se=tuple(self.v1se_probability(frames, boxes, scratch).tolist()),
        )

    # Each model alone: the checker may run the two on different threads (sessions are thread-safe).
    def v2_probability(self, frames: Sequence[np.ndarray], boxes: Sequence[tuple[float, float, float, float]],
                       scratch: Scratch | None = None) -> np.ndarray:
        return self._v2.real_probability(frames, boxes, scratch)

    def v1se_probability(self, frames: Sequence[np.ndarray], boxes: Sequence[tuple[float, float, float, float]],
                         scratch: Scratch | None = None) -> np.ndarray:
        return self._v1se.real_probability(frames, boxes, scratch)
