"""A second, independent face recognizer to confirm label noise: dlib's ResNet (128-D).

Used only by the evaluation, never by the node: a pair of images filed under
different people is taken to be one person only when a recognizer *other than
the one being calibrated* says so (together with image hashing, see
`label_noise`). dlib's model differs from SFace in architecture, training data
and alignment (its own 5-point landmarks, 150x150 chip), so its errors are not
SFace's. The face box comes from YuNet (dlib's HOG detector misses many of these
crops); the box only seeds dlib's landmark model.

Weights: the PyPI package face-recognition-models (dlib-models, CC0 / public
domain), read from its installed files; dlib from dlib-bin. Both in the `bench` extra.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from idv.evaluation.embedding import PICK_LARGEST, ModelSelection, pick_face

_RECOGNIZER_FILE = "dlib_face_recognition_resnet_model_v1.dat"
_LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"


class SecondRecognizerUnavailable(RuntimeError):
    """dlib or its model package is not installed (pip install -e '.[demographics]')."""


def model_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise SecondRecognizerUnavailable("face-recognition-models is not installed: pip install -e '.[demographics]'")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def fingerprint() -> str:
    digest = hashlib.sha256()
    for name in (_RECOGNIZER_FILE, _LANDMARKS_FILE):
        digest.update((model_dir() / name).read_bytes())
    return "dlib_resnet_v1:" + digest.hexdigest()[:16]


@dataclass(frozen=True)
class _Chunk:
    paths: tuple[str, ...]
    detector: ModelSelection


def _descriptors(chunk: _Chunk) -> tuple[np.ndarray, np.ndarray]:
    try:
        import dlib
    except ImportError as exc:  # pragma: no cover - reported by the caller's check
        raise SecondRecognizerUnavailable(f"dlib is not installed: {exc}") from None
    from idv.models.manifest import load_manifest
    from idv.models.model_set import open_detector

    cv2.setNumThreads(1)
    manifest = load_manifest(chunk.detector.manifest_path)
    detector = open_detector(manifest, chunk.detector.detector, chunk.detector.model_dir)
    landmarks = dlib.shape_predictor(str(model_dir() / _LANDMARKS_FILE))
    recognizer = dlib.face_recognition_model_v1(str(model_dir() / _RECOGNIZER_FILE))
    found = np.zeros(len(chunk.paths), dtype=bool)
    vectors = np.zeros((len(chunk.paths), 128), dtype=np.float32)
    for i, path in enumerate(chunk.paths):
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise OSError(f"cannot read image {path}")
        faces = detector.detect(image)
        if not faces:
            continue
        face = pick_face(faces, image.shape, PICK_LARGEST)
        rgb = np.ascontiguousarray(image[:, :, ::-1])
        box = dlib.rectangle(int(face.x), int(face.y), int(face.x + face.width), int(face.y + face.height))
        chip = dlib.get_face_chip(rgb, landmarks(rgb, box), 150, 0.25)
        vectors[i] = np.asarray(recognizer.compute_face_descriptor(chip), dtype=np.float32)
        found[i] = True
    return found, vectors


def describe(paths: list[Path] | tuple[Path, ...], detector: ModelSelection, cache_dir: Path | None,
             workers: int = 2, chunk_size: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """(found bool (N,), dlib descriptors (N, 128)); compare with Euclidean distance."""
    names = tuple(str(p) for p in paths)
    key = hashlib.sha256(json.dumps([fingerprint(), list(names)]).encode()).hexdigest()[:24]
    cache = cache_dir / f"dlib-{key}.npz" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        with np.load(cache) as stored:
            return stored["found"], stored["vectors"]
    chunks = [_Chunk(names[i : i + chunk_size], detector) for i in range(0, len(names), chunk_size)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, workers), mp_context=context) as pool:
        parts = list(pool.map(_descriptors, chunks))
    found = np.concatenate([p[0] for p in parts])
    vectors = np.concatenate([p[1] for p in parts])
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, found=found, vectors=vectors)
    return found, vectors


def distances(vectors: np.ndarray) -> np.ndarray:
    squared = (vectors**2).sum(axis=1)
    return np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2 * vectors @ vectors.T, 0.0))
