"""Every model, loaded in one place and the same way.

`load_models` gives the node (and the tools that measure it) the set it serves. The tools
that compare particular builds of the manifest (evaluation, sweeps, variant checks) open
them with `open_detector`, `open_embedder`, `open_minifasnets` and `open_facemesh` here;
nothing else opens a model session. Whichever way, each model's file is digest-checked on
the very bytes loaded, its contract checked, its output checked on a warm-up input, and its
fingerprint recorded (templates and audit records are tagged with it). A model that fails
any step stops the node from serving.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from idv.config import usable_cores
from idv.face.detector import DetectionScale, FaceDetector
from idv.face.embedder import Embedder
from idv.face.quality import QualityLimits
from idv.models.litert import load_facemesh
from idv.models.manifest import DEFAULT_MANIFEST, Manifest, load_manifest
from idv.face.detector import YuNetDetector
from idv.face.embedder import ArcFaceEmbedder, SFaceEmbedder
from idv.models.registry import (
    DetectorChoice,
    RecognizerChoice,
    custom_arcface_entry,
    custom_scrfd_entry,
    load_pack,
    warm_detector,
    warm_embedder,
)
from idv.models.runtime import LoadedModel, ModelLoadError, RuntimeOptions, open_session
from idv.models.settings import ModelSettings
from liveness.facemesh import FaceMesh


@dataclass(frozen=True, eq=False)
class ModelSet:
    detector: FaceDetector
    embedder: Embedder
    threshold: float  # the recognizer's calibrated threshold at the configured security level
    # Present when the manifest has them and they were asked for (liveness, active challenges).
    minifasnet_v2: Any | None
    minifasnet_v1se: Any | None
    facemesh: FaceMesh | None
    fingerprints: dict[str, str]  # role -> name:sha256 prefix, for logs, metrics and the audit


def manifest_for(settings: ModelSettings) -> Manifest:
    return load_manifest(settings.manifest or DEFAULT_MANIFEST)


def _warm_minifasnet(model: LoadedModel) -> None:
    """A random patch must give a finite probability distribution over the three classes."""
    patch = np.random.default_rng(0).uniform(0, 255, (1, 3, 80, 80)).astype(np.float32)
    (scores,) = model.session.run(None, {model.session.get_inputs()[0].name: patch})
    if scores.shape != (1, 3) or not np.all(np.isfinite(scores)) or abs(float(scores.sum()) - 1.0) > 1e-3:
        raise ModelLoadError(f"{model.entry.name}: warm-up output is not a softmax over 3 classes")


def _warm_facemesh(facemesh: FaceMesh) -> None:
    canvas = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    first = None
    for _ in range(facemesh.instances):  # calls take the interpreters in turn: each is warmed and checked
        # With a scratch list each interpreter's input is overwritten after the call, so an interpreter
        # no request has used yet holds zeros, not the warm-up canvas.
        landmarks = facemesh.landmarks(canvas, (220.0, 140.0, 200.0, 200.0), [])
        if landmarks.points.shape != (468, 3) or not np.all(np.isfinite(landmarks.points)):
            raise ModelLoadError("facemesh: warm-up landmarks are malformed")
        if not (0.0 <= landmarks.presence <= 1.0):
            raise ModelLoadError("facemesh: warm-up presence is not a probability")
        if first is None:
            first = landmarks.points
        elif not np.array_equal(first, landmarks.points):
            # Frames go to whichever interpreter is free: they must all answer alike.
            raise ModelLoadError("facemesh: its interpreters disagree on the same input")


def load_models(manifest: Manifest, settings: ModelSettings, *, liveness: bool = True,
                actions: bool = True, min_face_px: float = QualityLimits.min_face_size,
                parallel_calls: int | None = None) -> ModelSet:
    """Detector and recognizer always; both MiniFASNets when `liveness`; FaceMesh when `actions`
    and the manifest has it, with `parallel_calls` interpreters (default: one per usable core;
    the server passes its frame pool's size). The recognizer is the fastest of its pulled builds whose embeddings
    agree with the reference build (idv/models/variants.py); `min_face_px` (the quality gate's
    smallest face) sizes the detector's downscaled copy."""
    options = RuntimeOptions(intra_op_threads=settings.intra_op_threads)
    custom_recognizer = None
    if settings.recognizer_file is not None:
        path = Path(settings.recognizer_file)
        custom_recognizer = RecognizerChoice(custom_arcface_entry(path, settings.recognizer_sha256), path.parent,
                                             settings.recognizer_sha256, settings.recognizer_threshold)
    custom_detector = None
    if settings.detector_file is not None:
        path = Path(settings.detector_file)
        custom_detector = DetectorChoice(custom_scrfd_entry(path, settings.detector_sha256), path.parent,
                                         settings.detector_sha256)
    pack = load_pack(manifest, settings.pack, settings.dir, options, settings.security_level,
                     settings.detector_score_threshold, custom_recognizer, custom_detector,
                     DetectionScale(min_face_px=float(min_face_px), target_face_px=settings.detection_face_px))
    fingerprints = {"detector": pack.detector.fingerprint, "recognizer": pack.embedder.fingerprint}
    v2 = v1se = None
    if liveness:
        v2_model = open_session(manifest.entry("minifasnet_v2"), settings.dir, options)
        v1se_model = open_session(manifest.entry("minifasnet_v1se"), settings.dir, options)
        for model in (v2_model, v1se_model):
            _warm_minifasnet(model)
            fingerprints[model.entry.name] = model.fingerprint
        v2, v1se = v2_model.session, v1se_model.session
    facemesh = None
    if actions and "facemesh" in manifest.models:
        facemesh = load_facemesh(manifest.entry("facemesh"), settings.dir, settings.intra_op_threads,
                                 parallel_calls or usable_cores())
        _warm_facemesh(facemesh)
        fingerprints["facemesh"] = facemesh.fingerprint
    return ModelSet(pack.detector, pack.embedder, pack.threshold, v2, v1se, facemesh, fingerprints)


# ---------------------------------------------------------------- named builds (tools)
def _options(threads: int) -> RuntimeOptions:
    return RuntimeOptions(intra_op_threads=threads)


def open_detector(manifest: Manifest, name: str, model_dir: Path, *, intra_op_threads: int = 1,
                  score_threshold: float = 0.6, scale: DetectionScale = DetectionScale()) -> FaceDetector:
    """The YuNet build `name` of the manifest, checked and warmed like the served one."""
    detector = YuNetDetector(open_session(manifest.entry(name), model_dir, _options(intra_op_threads)),
                             score_threshold=score_threshold, scale=scale)
    warm_detector(detector)
    return detector


def open_embedder(manifest: Manifest, name: str, model_dir: Path, *, intra_op_threads: int = 1) -> Embedder:
    """The recognizer build `name` of the manifest (SFace or ArcFace format), checked and warmed."""
    entry = manifest.entry(name)
    model = open_session(entry, model_dir, _options(intra_op_threads))
    embedder: Embedder = SFaceEmbedder(model) if entry.kind == "sface" else ArcFaceEmbedder(model)
    warm_embedder(embedder)
    return embedder


def open_minifasnets(manifest: Manifest, model_dir: Path, *, intra_op_threads: int = 1) -> tuple[Any, Any]:
    """Both MiniFASNet sessions (V2, V1SE), checked and warmed."""
    options = _options(intra_op_threads)
    models = [open_session(manifest.entry(name), model_dir, options) for name in ("minifasnet_v2", "minifasnet_v1se")]
    for model in models:
        _warm_minifasnet(model)
    return models[0].session, models[1].session


def open_facemesh(manifest: Manifest, model_dir: Path, *, num_threads: int = 1) -> FaceMesh:
    """FaceMesh on LiteRT, checked and warmed."""
    facemesh = load_facemesh(manifest.entry("facemesh"), model_dir, num_threads)
    _warm_facemesh(facemesh)
    return facemesh
