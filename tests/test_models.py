"""Model pull, pull-time conversion, and refusing missing or altered models."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from idv.models.convert import fold_weight_chains
from idv.models.manifest import load_manifest
from idv.models.pull import ModelPullError, pull_models
from idv.models.registry import load_pack
from idv.models.runtime import ModelLoadError, RuntimeOptions, open_session


def test_pull_from_mirror_verifies_and_derives(tmp_path: Path, shared_dir: Path) -> None:
    manifest = load_manifest()
    pulled = pull_models(manifest, ["yunet", "sface_fp32"], tmp_path, mirror=shared_dir / "models",
                         allow_network=False)
    sources = {p.name: p.source for p in pulled}
    assert sources == {"yunet_src": "mirror", "yunet": "derived", "sface_src": "mirror", "sface_fp32": "derived"}
    for p in pulled:
        assert hashlib.sha256(p.path.read_bytes()).hexdigest() == manifest.entry(p.name).sha256
    assert not list(tmp_path.glob("*.part")), "no temporary file may be left behind"
    # A second pull finds everything in the cache.
    again = pull_models(manifest, ["yunet", "sface_fp32"], tmp_path, mirror=None, allow_network=False)
    assert {p.source for p in again} == {"cache"}


def test_pull_refuses_an_altered_mirror_file(tmp_path: Path, shared_dir: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    original = (shared_dir / "models" / "face_detection_yunet_2023mar_int8bq.onnx").read_bytes()
    altered = bytearray(original)
    altered[len(altered) // 2] ^= 0x01  # one flipped bit
    (mirror / "face_detection_yunet_2023mar_int8bq.onnx").write_bytes(bytes(altered))
    cache = tmp_path / "cache"
    with pytest.raises(ModelPullError, match="does not match"):
        pull_models(load_manifest(), ["yunet"], cache, mirror=mirror, allow_network=False)
    assert not (cache / "face_detection_yunet_2023mar_int8bq.onnx").exists()
    assert not list(cache.glob("*")), "an altered file must never become visible in the cache"


def test_missing_model_error_names_the_file_and_both_remedies(tmp_path: Path) -> None:
    with pytest.raises(ModelPullError) as failure:
        pull_models(load_manifest(), ["sface_fp32"], tmp_path / "cache", mirror=tmp_path, allow_network=False)
    message = str(failure.value)
    assert "face_recognition_sface_2021dec_int8bq.onnx" in message
    assert "IDV_MODEL_MIRROR" in message and "idv models pull" in message


def test_sface_fold_is_exact_and_drops_dangling_inputs(tmp_path: Path, shared_dir: Path) -> None:
    source = shared_dir / "models" / "face_recognition_sface_2021dec_int8bq.onnx"
    target = tmp_path / "sface_fp32.onnx"
    fold_weight_chains(source, target)
    folded = onnx.load(str(target))
    assert [i.name for i in folded.graph.input] == ["data"]
    assert not any(n.op_type in ("DequantizeLinear", "PRelu") for n in folded.graph.node)

    # Reference: the shipped graph with only its dangling inputs removed (what onnxruntime needs to load it).
    original = onnx.load(str(source))
    used = {name for node in original.graph.node for name in node.input}
    kept = [i for i in original.graph.input if i.name in used]
    del original.graph.input[:]
    original.graph.input.extend(kept)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    quantized = ort.InferenceSession(original.SerializeToString(), options, providers=["CPUExecutionProvider"])
    fp32 = ort.InferenceSession(str(target), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 112, 112)).astype(np.float32)
    np.testing.assert_allclose(fp32.run(None, {"data": x})[0], quantized.run(None, {"data": x})[0], atol=1e-4)


def test_open_session_refuses_altered_and_missing_files(tmp_path: Path, model_dir: Path) -> None:
    entry = load_manifest().entry("yunet")
    data = bytearray((model_dir / entry.file).read_bytes())
    data[-10] ^= 0xFF
    (tmp_path / entry.file).write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="altered"):
        open_session(entry, tmp_path, RuntimeOptions())
    with pytest.raises(ModelLoadError, match="missing"):
        open_session(entry, tmp_path / "empty", RuntimeOptions())


def test_sessions_use_the_configured_thread_count(model_dir: Path) -> None:
    loaded = open_session(load_manifest().entry("sface_fp32"), model_dir, RuntimeOptions(intra_op_threads=2))
    assert loaded.session.get_session_options().intra_op_num_threads == 2


def test_contract_mismatch_is_refused(tmp_path: Path, model_dir: Path) -> None:
    # The detector's file presented as the recognizer: the digest is pinned separately, so
    # pin the detector's digest and check that the contract check still refuses it.
    manifest = load_manifest()
    recognizer = manifest.entry("sface_fp32")
    detector_file = model_dir / manifest.entry("yunet").file
    (tmp_path / recognizer.file).write_bytes(detector_file.read_bytes())
    digest = hashlib.sha256(detector_file.read_bytes()).hexdigest()
    with pytest.raises(ModelLoadError, match="inputs are"):
        open_session(recognizer, tmp_path, RuntimeOptions(), expected_sha256=digest)


def test_pack_loads_with_a_calibrated_threshold(model_dir: Path) -> None:
    pack = load_pack(load_manifest(), "permissive", model_dir, RuntimeOptions(), "fmr_1e-4", 0.6)
    assert 0.2 < pack.threshold < 0.9
    assert set(pack.fingerprints) == {"detector", "recognizer"}
