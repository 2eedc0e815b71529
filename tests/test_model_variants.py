"""Pull-time model builds (issue 12) and the start-time choice of the fastest agreeing one."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from idv.face.detector import YuNetDetector
from idv.face.embedder import SFaceEmbedder, align_face
from idv.models.convert import dynamic_batch, dynamic_image_size, sface_int8_qdq
from idv.models.manifest import load_manifest
from idv.models.registry import load_pack
from idv.models.runtime import RuntimeOptions, open_session
from idv.models.variants import VariantPolicy, choose
from tests.conftest import nuaa_frames


@pytest.mark.parametrize(("name", "convert"), [("sface_fp32_batch", dynamic_batch),
                                               ("yunet_dynamic", dynamic_image_size)])
def test_each_build_reproduces_its_pinned_digest(name, convert, model_dir: Path, tmp_path: Path) -> None:
    manifest = load_manifest()
    entry = manifest.entry(name)
    target = tmp_path / entry.file
    convert(model_dir / manifest.entry(entry.derived_from).file, target)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == entry.sha256


@pytest.fixture(scope="module")
def faces(model_dir: Path, shared_dir: Path) -> dict[str, list[np.ndarray]]:
    """Aligned crops: per subject the first session-01 print frame (the reference) and 4 live frames."""
    testdata = shared_dir / "testdata"
    detector = YuNetDetector(open_session(load_manifest().entry("yunet"), model_dir, RuntimeOptions()))
    out: dict[str, list[np.ndarray]] = {}
    for subject in ("0001", "0002", "0003", "0004", "0005"):
        paths = [nuaa_frames(testdata, "print", subject)[0], *nuaa_frames(testdata, "live", subject)[:40:10]]
        crops = []
        for path in paths:
            image = cv2.imread(str(path))
            face = max(detector.detect(image), key=lambda f: f.width * f.height)
            crops.append(align_face(image, face))
        out[subject] = crops
    return out


def _embedders(model_dir: Path) -> dict[str, SFaceEmbedder]:
    manifest = load_manifest()
    reference = open_session(manifest.entry("sface_fp32"), model_dir, RuntimeOptions())
    out = {"sface_fp32": SFaceEmbedder(reference)}
    for entry in manifest.variants("sface_fp32"):
        out[entry.name] = SFaceEmbedder(open_session(entry, model_dir, RuntimeOptions()), reference.fingerprint)
    return out


def test_every_variant_keeps_the_thresholds_valid_on_real_pairs(model_dir: Path, faces) -> None:
    """Genuine and impostor scores (print reference vs live frames) of every manifest variant
    agree with the reference's, and so do the decisions at every calibrated threshold."""
    manifest = load_manifest()
    thresholds = [float(v) for k, v in manifest.entry("sface_fp32").thresholds.items() if k.startswith("fmr_")]
    embedders = _embedders(model_dir)
    assert len(embedders) >= 2, "the manifest lists at least one variant of sface_fp32"

    def scores(embedder: SFaceEmbedder) -> np.ndarray:
        references = {s: embedder.embed([crops[0]])[0] for s, crops in faces.items()}
        probes = {s: embedder.embed(crops[1:]) for s, crops in faces.items()}  # one call per subject
        return np.array([float(references[r] @ p) for r in references for s in probes for p in probes[s]])

    expected = scores(embedders["sface_fp32"])
    genuine_count = len(faces) * (len(next(iter(faces.values()))) - 1)
    assert genuine_count > 0 and expected.size > genuine_count
    for name, embedder in embedders.items():
        got = scores(embedder)
        assert np.max(np.abs(got - expected)) < 1e-3, name
        for threshold in thresholds:
            assert np.array_equal(got >= threshold, expected >= threshold), (name, threshold)
        assert embedder.fingerprint == embedders["sface_fp32"].fingerprint


def test_the_batched_build_embeds_a_burst_in_one_call_like_the_reference_one_by_one(model_dir: Path, faces) -> None:
    embedders = _embedders(model_dir)
    batched = embedders["sface_fp32_batch"]
    assert batched.batched and not embedders["sface_fp32"].batched
    crops = faces["0002"]
    one_by_one = np.concatenate([embedders["sface_fp32"].embed([c]) for c in crops])
    together = batched.embed(crops)
    assert np.min(np.sum(one_by_one * together, axis=1)) > 0.99999


def test_choose_refuses_disagreeing_or_unproven_builds_and_takes_the_fastest(model_dir: Path) -> None:
    reference = _embedders(model_dir)["sface_fp32"]
    batched = _embedders(model_dir)["sface_fp32_batch"]
    rng = np.random.default_rng(1)

    def disagreeing(crops):  # a build whose arithmetic drifted: the reference plus noise
        vectors = reference.embed(crops) + rng.normal(0, 0.05, (len(crops), reference.dimension))
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    ticks = iter(np.arange(0, 10_000, 1.0))
    choice = choose(("sface_fp32", reference.embed),
                    [("drifted", disagreeing, True), ("unproven", batched.embed, False), ("batch", batched.embed, True)],
                    VariantPolicy(rounds=3), clock=lambda: next(ticks))
    reports = {r.name: r for r in choice.reports}
    assert not reports["drifted"].accepted and "tolerance" in reports["drifted"].reason
    assert not reports["unproven"].accepted and "evidence" in reports["unproven"].reason
    assert reports["batch"].accepted and reports["batch"].min_cosine > 0.99999
    assert choice.name in {"sface_fp32", "batch"}


def test_the_node_logs_which_build_serves(model_dir: Path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="idv.models.variants"):
        pack = load_pack(load_manifest(), "permissive", model_dir, RuntimeOptions(), "fmr_1e-4", 0.6)
    assert pack.recognizer_variant is not None
    assert pack.recognizer_variant.name in {"sface_fp32", *[e.name for e in load_manifest().variants("sface_fp32")]}
    record = next(r for r in caplog.records if r.getMessage() == "model variant chosen")
    assert record.chosen == pack.recognizer_variant.name and "sface_fp32" in record.variants
    assert pack.fingerprints["recognizer"].startswith("sface_fp32:")


def test_the_int8_build_is_reproducible_and_refused_at_start(model_dir: Path, tmp_path: Path) -> None:
    """The int8 QDQ build from the committed recipe (convert.sface_int8_qdq) is byte-identical
    on a rebuild and runs, and the start-time check refuses it as it stands: it agrees with fp32
    to a cosine near 0.99, not 0.999, and its LFW rates miss the 0.1-point rule
    (benchmarks/results/model_variants.json), so it is not in the manifest."""
    manifest = load_manifest()
    source = model_dir / manifest.entry("sface_fp32_batch").file
    first, second = tmp_path / "a.onnx", tmp_path / "b.onnx"
    sface_int8_qdq(source, first)
    sface_int8_qdq(source, second)
    assert first.read_bytes() == second.read_bytes()
    entry = dataclasses.replace(manifest.entry("sface_fp32_batch"), name="sface_int8", file=first.name,
                                sha256=hashlib.sha256(first.read_bytes()).hexdigest())
    reference = _embedders(model_dir)["sface_fp32"]
    int8 = SFaceEmbedder(open_session(entry, tmp_path, RuntimeOptions()), reference.fingerprint)
    choice = choose(("sface_fp32", reference.embed), [("sface_int8", int8.embed, True)], VariantPolicy(rounds=1))
    report = next(r for r in choice.reports if r.name == "sface_int8")
    assert not report.accepted and "tolerance" in report.reason
    assert 0.98 < report.min_cosine < VariantPolicy().min_cosine  # close, but not the reference's numbers
    assert choice.name == "sface_fp32"
