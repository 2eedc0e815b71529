"""Embed each evaluation image once: detect, pick the face, align, embed it and its mirror image.

Images where no face is found are kept in the table with `acquired = False`:
protocols turn them into failures to acquire (FTA) and count them, they are
never dropped from a denominator unnoticed.

Work is split into chunks run in a process pool; each chunk opens its own
onnxruntime sessions (about 0.3 s) with one intra-op thread, so N workers use N
cores without oversubscription and no process-wide model state is needed.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from idv.face.detector import DetectionScale
from idv.face.embedder import align_face, l2_normalise
from idv.face.quality import QualityLimits, assess
from idv.face.types import FaceDetection
from idv.models.manifest import load_manifest
from idv.models.model_set import open_detector, open_embedder

PICK_LARGEST = "largest"  # the biggest box: the subject in front of a webcam, or a held-up print
PICK_CENTRE = "centre"  # the box whose centre is nearest the image centre: LFW centres its subject

# Bump when the way a table is computed changes, so stale disk caches are not reused.
_TABLE_VERSION = 4  # 3: full-size dynamic detection at the fixed graph's scale; 4: below full size, every subject refined in detect (issue 12)


@dataclass(frozen=True)
class AcquisitionPolicy:
    pick: str = PICK_LARGEST
    # Retry a failed detection once on the image upscaled 2x (LFW protocol).
    upscale_retry: bool = False
    detector_score_threshold: float = 0.6  # the service's default
    # Also embed each crop's mirror image (flip fusion); off halves the cost when only plain is scored.
    mirror: bool = True


@dataclass(frozen=True)
class ModelSelection:
    manifest_path: Path
    model_dir: Path
    detector: str = "yunet"
    recognizer: str = "sface_fp32"
    intra_op_threads: int = 1
    # As the service detects (issue 12): on a copy scaled by `detection`, landmarks of the
    # chosen face refined at full resolution before alignment.
    detection: DetectionScale = DetectionScale()
    refine_landmarks: bool = True


@dataclass(frozen=True, eq=False)
class FaceTable:
    """Per image: acquisition outcome, face measurements and embeddings (rows align with `paths`)."""

    paths: tuple[str, ...]
    acquired: np.ndarray  # bool
    upscaled: np.ndarray  # bool: acquired only on the 2x-upscaled retry
    embeddings: np.ndarray  # (N, D) float32 unit rows; zero rows where not acquired
    flipped: np.ndarray  # (N, D) embedding of the horizontally mirrored aligned crop
    detector_score: np.ndarray  # NaN where not acquired (likewise below)
    sharpness: np.ndarray  # variance of the Laplacian of the aligned crop's centre (idv.face.quality)
    yaw: np.ndarray  # (nose x - eye midpoint x) / inter-ocular distance: about 0 when frontal

    @property
    def failures_to_acquire(self) -> int:
        return int((~self.acquired).sum())

    def fused(self, flip: bool) -> np.ndarray:
        """Embeddings to compare: plain, or the renormalised mean of plain and mirrored (flip fusion)."""
        if not flip:
            return self.embeddings
        fused = l2_normalise(self.embeddings + self.flipped)
        fused[~self.acquired] = 0.0
        return fused

    def subset(self, indices: np.ndarray | list[int]) -> FaceTable:
        idx = np.asarray(indices, dtype=np.int64)
        return FaceTable(
            paths=tuple(self.paths[i] for i in idx),
            acquired=self.acquired[idx],
            upscaled=self.upscaled[idx],
            embeddings=self.embeddings[idx],
            flipped=self.flipped[idx],
            detector_score=self.detector_score[idx],
            sharpness=self.sharpness[idx],
            yaw=self.yaw[idx],
        )


def pick_face(faces: list[FaceDetection], image_shape: tuple[int, ...], pick: str) -> FaceDetection:
    if pick == PICK_LARGEST:
        return max(faces, key=lambda f: f.width * f.height)
    if pick == PICK_CENTRE:
        cy, cx = image_shape[0] / 2, image_shape[1] / 2
        return min(faces, key=lambda f: (f.x + f.width / 2 - cx) ** 2 + (f.y + f.height / 2 - cy) ** 2)
    raise ValueError(f"face pick rule must be {PICK_LARGEST!r} or {PICK_CENTRE!r}, not {pick!r}")


def yaw_proxy(face: FaceDetection) -> float:
    right_eye, left_eye, nose = face.landmarks[0], face.landmarks[1], face.landmarks[2]
    return float((nose[0] - (right_eye[0] + left_eye[0]) / 2) / max(face.inter_ocular, 1e-6))


@dataclass(frozen=True)
class _Chunk:
    paths: tuple[str, ...]
    policy: AcquisitionPolicy
    models: ModelSelection


def _embed_chunk(chunk: _Chunk) -> dict[str, np.ndarray]:
    # skimage's deprecation notice from insightface's aligner says nothing about our results.
    warnings.filterwarnings("ignore", category=FutureWarning)
    # OpenCV's own thread pool would compete with the other workers for the same cores.
    cv2.setNumThreads(1)
    manifest = load_manifest(chunk.models.manifest_path)
    threads = chunk.models.intra_op_threads
    detector = open_detector(manifest, chunk.models.detector, chunk.models.model_dir, intra_op_threads=threads,
                             score_threshold=chunk.policy.detector_score_threshold, scale=chunk.models.detection)
    embedder = open_embedder(manifest, chunk.models.recognizer, chunk.models.model_dir, intra_op_threads=threads)
    n, dim = len(chunk.paths), embedder.dimension
    out = {
        "acquired": np.zeros(n, dtype=bool),
        "upscaled": np.zeros(n, dtype=bool),
        "embeddings": np.zeros((n, dim), dtype=np.float32),
        "flipped": np.zeros((n, dim), dtype=np.float32),
        "detector_score": np.full(n, np.nan),
        "sharpness": np.full(n, np.nan),
        "yaw": np.full(n, np.nan),
    }
    for i, path in enumerate(chunk.paths):
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise OSError(f"cannot read image {path}")
        faces = detector.detect(image)
        if not faces and chunk.policy.upscale_retry:
            image = cv2.resize(image, None, fx=2.0, fy=2.0, interpolation=cv2.INTER_CUBIC)
            faces = detector.detect(image)
            out["upscaled"][i] = bool(faces)
        if not faces:
            continue
        face = pick_face(faces, image.shape, chunk.policy.pick)
        if chunk.models.refine_landmarks:
            face = detector.refine(image, face)
        aligned = align_face(image, face)
        crops = [aligned, np.ascontiguousarray(aligned[:, ::-1])] if chunk.policy.mirror else [aligned]
        vectors = embedder.embed(crops)
        out["acquired"][i] = True
        out["embeddings"][i] = vectors[0]
        if chunk.policy.mirror:
            out["flipped"][i] = vectors[1]
        out["detector_score"][i] = face.score
        out["sharpness"][i] = assess(face, aligned, QualityLimits()).sharpness
        out["yaw"][i] = yaw_proxy(face)
    return out


def _cache_key(paths: tuple[str, ...], policy: AcquisitionPolicy, models: ModelSelection) -> str:
    manifest = load_manifest(models.manifest_path)
    identity = {
        "version": _TABLE_VERSION,
        "paths": list(paths),
        "policy": asdict(policy),
        "detector": manifest.entry(models.detector).sha256,
        "recognizer": manifest.entry(models.recognizer).sha256,
        "detection": asdict(models.detection),
        "refine_landmarks": models.refine_landmarks,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


_ARRAYS = ("acquired", "upscaled", "embeddings", "flipped", "detector_score", "sharpness", "yaw")


def embed_images(
    paths: list[Path] | tuple[Path, ...],
    policy: AcquisitionPolicy,
    models: ModelSelection,
    workers: int = 2,
    chunk_size: int = 200,
    cache_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> FaceTable:
    """One FaceTable row per path, in order. With `cache_dir`, a finished table is stored
    there (keyed by paths, policy and model digests) and reused on the next run.

    With workers > 1 the pool spawns fresh interpreters, so a calling script must
    guard its entry point with `if __name__ == "__main__":`."""
    names = tuple(str(p) for p in paths)
    cache_file = None
    if cache_dir is not None:
        cache_file = cache_dir / f"faces-{_cache_key(names, policy, models)}.npz"
        if cache_file.is_file():
            with np.load(cache_file) as stored:
                return FaceTable(paths=names, **{key: stored[key] for key in _ARRAYS})
    chunks = [_Chunk(names[i : i + chunk_size], policy, models) for i in range(0, len(names), chunk_size)]
    results: list[dict[str, np.ndarray]] = []
    if workers <= 1:
        for chunk in chunks:
            results.append(_embed_chunk(chunk))
            if progress:
                progress(sum(len(r["acquired"]) for r in results), len(names))
    else:
        # spawn: workers start clean instead of inheriting the parent's threads and sessions.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            for result in pool.map(_embed_chunk, chunks):
                results.append(result)
                if progress:
                    progress(sum(len(r["acquired"]) for r in results), len(names))
    arrays = {key: np.concatenate([r[key] for r in results]) for key in _ARRAYS}
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache_file, **arrays)
    return FaceTable(paths=names, **arrays)
