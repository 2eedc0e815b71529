"""Load the configured model pack: verified files, explicit session options, checked warm-up."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from idv.face.detector import DetectionScale, FaceDetector, YuNetDetector
from idv.face.scrfd import ScrfdDetector
from idv.face.embedder import ArcFaceEmbedder, Embedder, SFaceEmbedder
from idv.models.manifest import Manifest, ModelEntry
from idv.models.runtime import LoadedModel, ModelLoadError, RuntimeOptions, open_session
from idv.models.variants import VariantChoice, VariantPolicy, choose

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecognizerChoice:
    """The recognizer to serve: the pack's, or an operator-supplied ArcFace-format file."""

    entry: ModelEntry
    model_dir: Path
    expected_sha256: str
    threshold: float


@dataclass(frozen=True)
class DetectorChoice:
    """An operator-supplied insightface SCRFD detector instead of the pack's."""

    entry: ModelEntry
    model_dir: Path
    expected_sha256: str


@dataclass(frozen=True)
class LoadedPack:
    detector: FaceDetector
    embedder: Embedder
    threshold: float
    models: tuple[LoadedModel, ...]
    recognizer_variant: VariantChoice | None = None  # which build of the recognizer serves (issue 12)

    @property
    def fingerprints(self) -> dict[str, str]:
        # The recognizer's is the embedder's: a variant serves under its reference's fingerprint.
        return {m.entry.role: (self.embedder.fingerprint if m.entry.role == "recognizer" else m.fingerprint)
                for m in self.models}


def pack_model_names(manifest: Manifest, pack: str) -> list[str]:
    return list(manifest.pack(pack).values())


def custom_scrfd_entry(path: Path, sha256: str) -> ModelEntry:
    return ModelEntry(name=f"scrfd:{path.name}", role="detector", file=path.name, sha256=sha256.lower(),
                      licence="operator-supplied", kind="scrfd", contract=None)


def custom_arcface_entry(path: Path, sha256: str) -> ModelEntry:
    """A manifest-like entry for an operator's ArcFace-format ONNX (NCHW 112x112 in, one embedding out)."""
    return ModelEntry(
        name=f"arcface:{path.name}",
        role="recognizer",
        file=path.name,
        sha256=sha256.lower(),
        licence="operator-supplied",
        kind="arcface",
        contract=None,  # names vary between exports; _check_arcface_contract checks the shapes
    )


def _check_arcface_contract(model: LoadedModel) -> None:
    inputs, outputs = model.session.get_inputs(), model.session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelLoadError(f"{model.entry.name}: an ArcFace-format model has one input and one output")
    shape = inputs[0].shape
    if len(shape) != 4 or shape[1] != 3 or shape[2] != 112 or shape[3] != 112:
        raise ModelLoadError(f"{model.entry.name}: input shape {shape} is not Nx3x112x112")
    if len(outputs[0].shape) != 2:
        raise ModelLoadError(f"{model.entry.name}: output shape {outputs[0].shape} is not NxD")


def _sface_variant(manifest: Manifest, reference: LoadedModel, model_dir: Path, options: RuntimeOptions,
                   policy: VariantPolicy) -> tuple[SFaceEmbedder, LoadedModel, VariantChoice]:
    """The fastest agreeing build of the pack's SFace (idv/models/variants.py), tagged with the
    reference's fingerprint: its templates and thresholds are the reference's."""
    loaded = {reference.entry.name: reference}
    flags: list[tuple[str, SFaceEmbedder, bool]] = []
    for entry in manifest.variants(reference.entry.name):
        if not (model_dir / entry.file).is_file():
            log.warning("model variant not pulled; skipped", extra={"model": entry.name})
            continue
        model = open_session(entry, model_dir, options)  # a present but altered file refuses to start
        loaded[entry.name] = model
        flags.append((entry.name, SFaceEmbedder(model, reference.fingerprint), bool(entry.evidence)))
    reference_embedder = SFaceEmbedder(reference)
    choice = choose((reference.entry.name, reference_embedder.embed),
                    [(name, embedder.embed, evidence) for name, embedder, evidence in flags], policy)
    chosen = loaded[choice.name]
    embedder = reference_embedder if chosen is reference else next(e for n, e, _ in flags if n == choice.name)
    return embedder, chosen, choice


def warm_detector(detector: FaceDetector) -> None:
    """Run the detector once on a fixed input and check its output is sane."""
    canvas = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    faces = detector.detect(canvas)
    if any(not np.isfinite(f.score) for f in faces):
        raise ModelLoadError("detector warm-up produced non-finite scores")


def warm_embedder(embedder: Embedder) -> None:
    """Run the recognizer once on two fixed inputs and check its embeddings are sane."""
    rng = np.random.default_rng(1)
    crops = [rng.integers(0, 255, (112, 112, 3), dtype=np.uint8) for _ in range(2)]
    vectors = embedder.embed(crops)
    if vectors.shape != (2, embedder.dimension) or not np.all(np.isfinite(vectors)):
        raise ModelLoadError("recognizer warm-up produced malformed embeddings")
    if not np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3):
        raise ModelLoadError("recognizer warm-up embeddings are not unit vectors")
    # Two different inputs must not give the same embedding (a constant model is broken).
    if float(vectors[0] @ vectors[1]) > 0.9999:
        raise ModelLoadError("recognizer warm-up gives identical embeddings for different inputs")


def _warm_up(detector: FaceDetector, embedder: Embedder) -> None:
    """Run every model once and check its outputs are sane, before health reports SERVING."""
    warm_detector(detector)
    warm_embedder(embedder)


def load_pack(
    manifest: Manifest,
    pack: str,
    model_dir: Path,
    options: RuntimeOptions,
    security_level: str,
    detector_score_threshold: float,
    custom_recognizer: RecognizerChoice | None = None,
    custom_detector: DetectorChoice | None = None,
    detection_scale: DetectionScale = DetectionScale(),
    variant_policy: VariantPolicy = VariantPolicy(),
) -> LoadedPack:
    names = manifest.pack(pack)
    detector: FaceDetector
    if custom_detector is not None:
        detector_model = open_session(custom_detector.entry, custom_detector.model_dir, options,
                                      custom_detector.expected_sha256)
        detector = ScrfdDetector(detector_model, score_threshold=detector_score_threshold)
    else:
        detector_model = open_session(manifest.entry(names["detector"]), model_dir, options)
        detector = YuNetDetector(detector_model, score_threshold=detector_score_threshold, scale=detection_scale)

    variant = None
    if custom_recognizer is not None:
        recognizer_model = open_session(
            custom_recognizer.entry, custom_recognizer.model_dir, options, custom_recognizer.expected_sha256
        )
        _check_arcface_contract(recognizer_model)
        embedder: Embedder = ArcFaceEmbedder(recognizer_model)
        threshold = custom_recognizer.threshold
    else:
        entry = manifest.entry(names["recognizer"])
        recognizer_model = open_session(entry, model_dir, options)
        if entry.kind == "sface":
            embedder, recognizer_model, variant = _sface_variant(manifest, recognizer_model, model_dir, options,
                                                                 variant_policy)
        elif entry.kind == "arcface":
            _check_arcface_contract(recognizer_model)
            embedder = ArcFaceEmbedder(recognizer_model)
        else:
            raise ModelLoadError(f"{entry.name}: unknown recognizer kind {entry.kind!r}")
        try:
            threshold = float(entry.thresholds[security_level])  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError):
            raise ModelLoadError(
                f"{entry.name} has no calibrated threshold for {security_level} in {manifest.path}"
            ) from None
    _warm_up(detector, embedder)
    return LoadedPack(detector, embedder, threshold, (detector_model, recognizer_model), variant)
