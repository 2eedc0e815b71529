"""Face alignment and embedding.

Alignment uses insightface's 5-point similarity transform to the ArcFace
112x112 template (`insightface.utils.face_align.norm_crop`); SFace was trained
on the same template. Two recognizer kinds share one interface:

* `sface`   – OpenCV-zoo SFace (fp32 after the pull-time fold): RGB, raw 0..255
              in, 128-d out; normalisation is inside the graph.
* `arcface` – any insightface ArcFace-format ONNX (e.g. buffalo_l's w600k_r50):
              driven through insightface's `ArcFaceONNX`, which owns that
              family's preprocessing, on a session we opened with our options.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from insightface.model_zoo.arcface_onnx import ArcFaceONNX
from insightface.utils import face_align

from idv.face.types import FaceDetection
from idv.models.runtime import LoadedModel

ALIGNED_SIZE = 112


def align_face(image_bgr: np.ndarray, face: FaceDetection) -> np.ndarray:
    """112x112 BGR crop aligned on the ArcFace template."""
    return face_align.norm_crop(image_bgr, landmark=face.landmarks, image_size=ALIGNED_SIZE)


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class Embedder(Protocol):
    fingerprint: str
    dimension: int

    def embed(self, aligned_bgr: list[np.ndarray]) -> np.ndarray:
        """(N, D) float32 unit vectors for N aligned 112x112 BGR crops."""
        ...


class SFaceEmbedder:
    """`fingerprint` names the weights templates are tagged with: a variant serving in the
    reference's place (idv/models/variants.py) passes the reference's."""

    def __init__(self, model: LoadedModel, fingerprint: str | None = None):
        self._session = model.session
        self._input_name = model.session.get_inputs()[0].name
        self.fingerprint = fingerprint or model.fingerprint
        self.dimension = int(model.session.get_outputs()[0].shape[-1])
        batch = model.session.get_inputs()[0].shape[0]
        # The exported graph has a fixed batch of 1; the pull-time `dynamic_batch` build does not.
        self.batched = not (isinstance(batch, int) and batch == 1)

    def embed(self, aligned_bgr: list[np.ndarray]) -> np.ndarray:
        if not aligned_bgr:
            return np.zeros((0, self.dimension), dtype=np.float32)
        # BGR HWC uint8 -> RGB NCHW float32 in one copy per crop.
        blob = np.empty((len(aligned_bgr), 3, ALIGNED_SIZE, ALIGNED_SIZE), dtype=np.float32)
        for i, crop in enumerate(aligned_bgr):
            blob[i] = crop[:, :, ::-1].transpose(2, 0, 1)
        if self.batched:
            out = self._session.run(None, {self._input_name: blob})[0]
        else:
            out = np.concatenate([self._session.run(None, {self._input_name: blob[i:i + 1]})[0]
                                  for i in range(len(blob))])
        blob.fill(0)  # pixels of the probe: not left in a freed buffer
        return l2_normalise(np.asarray(out, dtype=np.float32))


class ArcFaceEmbedder:
    """insightface ArcFace-format recognizer on a session opened by idv (explicit options)."""

    def __init__(self, model: LoadedModel):
        self._model = ArcFaceONNX(model_file=str(model.path), session=model.session)
        self.fingerprint = model.fingerprint
        self.dimension = int(model.session.get_outputs()[0].shape[-1])

    def embed(self, aligned_bgr: list[np.ndarray]) -> np.ndarray:
        feats = np.concatenate([self._model.get_feat(crop) for crop in aligned_bgr], axis=0)
        return l2_normalise(feats.astype(np.float32))
