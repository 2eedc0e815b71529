"""An operator-selected insightface pack (SCRFD detector, ArcFace-format recognizer), tested with
small models built here.

The real packs (e.g. buffalo_l's w600k_r50) carry non-commercial weights and are not
in the mirror; this model has the same contract (Nx3x112x112 in, NxD out, the
insightface preprocessing: (x - 127.5) / 127.5, RGB), so the path through
insightface's ArcFaceONNX, our session options, the contract check, the warm-up and
template fingerprints is exercised for real.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from idv.config import Settings
from idv.errors import TemplateMismatch
from idv.assemble import build_service
from idv.pipeline import Budget
from idv.service import EnrollCommand, VerifyCommand
from idv.verdicts import Purpose, TrueReason
from tests.conftest import ID_SUBJECT_1, nuaa_frames, nuaa_sequences, start_node


def build_tiny_arcface(path: Path, dimension: int = 64) -> str:
    """A deterministic random-projection 'recognizer': 4x4 average pooling then a linear map to D dims."""
    rng = np.random.default_rng(7)
    weights = rng.standard_normal((3 * 28 * 28, dimension)).astype(np.float32)
    nodes = [
        helper.make_node("AveragePool", ["input.1"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["683"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_arcface",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["N", dimension])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    data = model.SerializeToString(deterministic=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


@pytest.fixture()
def arcface_settings(node_settings: Settings, tmp_path: Path) -> Settings:
    model = tmp_path / "operator-models" / "tiny_arcface.onnx"
    model.parent.mkdir()
    digest = build_tiny_arcface(model)
    return node_settings.updated(recognizer_file=model, recognizer_sha256=digest, recognizer_threshold=0.95)


def _burst(testdata: Path, subject: str) -> tuple[bytes, ...]:
    sequence = next(iter(nuaa_sequences(testdata, "live", subject).values()))
    return tuple(p.read_bytes() for p in sequence[:15:3])


def test_arcface_format_recognizer_serves_through_insightface(arcface_settings: Settings, testdata: Path) -> None:
    with build_service(arcface_settings) as assembled:
        service = assembled.service
        assert service.fingerprints["recognizer"].startswith("arcface:tiny_arcface.onnx:")
        reference = nuaa_frames(testdata, "print", "0001")[0].read_bytes()
        service.enroll(EnrollCommand(ID_SUBJECT_1, "张三", (reference,)), Budget(30))
        outcome = service.verify(VerifyCommand(ID_SUBJECT_1, "张三", Purpose.CHECK_IN, _burst(testdata, "0001")),
                                 Budget(30))
        # A random projection is no face recognizer; what matters is that the path runs end to end
        # and produces a real decision.
        assert outcome.true_reason in (TrueReason.VERIFIED, TrueReason.FACE_MISMATCH)


def test_templates_of_another_model_are_an_error_not_a_low_score(
    node_settings: Settings, arcface_settings: Settings, testdata: Path
) -> None:
    with build_service(node_settings) as sface:
        reference = nuaa_frames(testdata, "print", "0001")[0].read_bytes()
        sface.service.enroll(EnrollCommand(ID_SUBJECT_1, "张三", (reference,)), Budget(30))
    with build_service(arcface_settings) as arcface:  # same data dir: same store and keys
        with pytest.raises(TemplateMismatch, match="different recognizer"):
            arcface.service.verify(
                VerifyCommand(ID_SUBJECT_1, "张三", Purpose.CHECK_IN, _burst(testdata, "0001")), Budget(30))


def test_operator_model_with_a_wrong_digest_is_refused(arcface_settings: Settings) -> None:
    from idv.models.runtime import ModelLoadError

    with pytest.raises(ModelLoadError, match="altered"):
        start_node(arcface_settings.updated(recognizer_sha256="0" * 64))


def test_operator_model_with_a_wrong_contract_is_refused(arcface_settings: Settings, tmp_path: Path) -> None:
    from idv.models.runtime import ModelLoadError

    bad = tmp_path / "bad.onnx"
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 64, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 64, 64])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data = model.SerializeToString()
    bad.write_bytes(data)
    with pytest.raises(ModelLoadError, match="not Nx3x112x112"):
        start_node(arcface_settings.updated(recognizer_file=bad, recognizer_sha256=hashlib.sha256(data).hexdigest()))


def build_tiny_scrfd(path: Path, face: "FaceDetection", image_size: int = 640) -> str:
    """An SCRFD-contract detector (9 outputs, strides 8/16/32, 2 anchors) that 'finds' one given face.

    The outputs are constants (plus 0 * mean(input), so the graph depends on its input)
    encoding `face` in SCRFD's distance form at one stride-32 anchor, so insightface's
    own decoding has to reconstruct the box and key points for the test to pass.
    """
    outputs, nodes, initializers = [], [], []
    nodes.append(helper.make_node("ReduceMean", ["input.1"], ["mean"], keepdims=0))
    nodes.append(helper.make_node("Mul", ["mean", "zero"], ["nothing"]))
    initializers.append(numpy_helper.from_array(np.zeros((), np.float32), "zero"))
    stride, anchors = 32, 2
    cells = image_size // stride
    cx, cy = face.x + face.width / 2, face.y + face.height / 2
    col, row = int(round(cx / stride)), int(round(cy / stride))
    index = (row * cells + col) * anchors
    anchor = np.array([col * stride, row * stride], np.float32)
    for kind, width in (("score", 1), ("bbox", 4), ("kps", 10)):
        for s in (8, 16, 32):
            rows = (image_size // s) ** 2 * anchors
            value = np.zeros((rows, width), np.float32)
            if s == stride:
                if kind == "score":
                    value[index, 0] = 0.95
                elif kind == "bbox":
                    value[index] = np.array([anchor[0] - face.x, anchor[1] - face.y,
                                             face.x + face.width - anchor[0], face.y + face.height - anchor[1]]) / s
                else:
                    value[index] = ((face.landmarks - anchor) / s).reshape(-1)
            name = f"{kind}_{s}"
            initializers.append(numpy_helper.from_array(value, f"{name}_const"))
            nodes.append(helper.make_node("Add", [f"{name}_const", "nothing"], [name]))
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [rows, width]))
    graph = helper.make_graph(
        nodes, "tiny_scrfd",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, image_size, image_size])],
        outputs, initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    data = model.SerializeToString(deterministic=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def test_scrfd_format_detector_serves_through_insightface(node_settings: Settings, testdata: Path,
                                                          tmp_path: Path) -> None:
    import cv2

    from idv.face.detector import YuNetDetector
    from idv.models.manifest import load_manifest
    from idv.models.runtime import RuntimeOptions, open_session

    reference = nuaa_frames(testdata, "print", "0001")[0]
    yunet = YuNetDetector(open_session(load_manifest().entry("yunet"), node_settings.models.dir, RuntimeOptions()))
    expected = yunet.detect(cv2.imread(str(reference)))[0]
    model = tmp_path / "operator-models" / "tiny_scrfd.onnx"
    model.parent.mkdir()
    digest = build_tiny_scrfd(model, expected)
    with build_service(node_settings.updated(detector_file=model, detector_sha256=digest, liveness=False)) as assembled:
        service = assembled.service
        assert service.fingerprints["detector"].startswith("scrfd:tiny_scrfd.onnx:")
        found = assembled.models.detector.detect(cv2.imread(str(reference)))
        assert len(found) == 1
        np.testing.assert_allclose(found[0].box_xywh, expected.box_xywh, atol=0.5)
        np.testing.assert_allclose(found[0].landmarks, expected.landmarks, atol=0.5)
        data = reference.read_bytes()
        service.enroll(EnrollCommand(ID_SUBJECT_1, "张三", (data,)), Budget(30))
        outcome = service.verify(VerifyCommand(ID_SUBJECT_1, "张三", Purpose.CHECK_IN, (data, data)), Budget(30))
        assert outcome.true_reason is TrueReason.VERIFIED


def test_scrfd_detector_without_key_points_is_refused(node_settings: Settings, tmp_path: Path) -> None:
    from idv.models.runtime import ModelLoadError

    bad = tmp_path / "bad_scrfd.onnx"
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], [f"y{i}"]) for i in range(6)], "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 640, 640])],
        [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [1, 3, 640, 640]) for i in range(6)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data = model.SerializeToString()
    bad.write_bytes(data)
    with pytest.raises(ModelLoadError, match="9 or 15 outputs"):
        start_node(node_settings.updated(detector_file=bad, detector_sha256=hashlib.sha256(data).hexdigest()))
