"""Verify and Enroll over real gRPC against a node started on a free port, with real models and photos."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from idv.rpc.status import error_info
from idv.v1 import verification_pb2 as pb
from idv.v1 import verification_pb2_grpc as pb_grpc
from tests.conftest import ID_SUBJECT_1, ID_SUBJECT_2, ID_UNKNOWN, nuaa_frames, nuaa_sequences, start_node

NAME_1 = "张三"
NAME_2 = "阿依古丽·买买提"


def live_burst(testdata: Path, subject: str, count: int = 5, step: int = 3) -> list[bytes]:
    sequence = next(iter(nuaa_sequences(testdata, "live", subject).values()))
    return [p.read_bytes() for p in sequence[: count * step : step]]


def print_reference(testdata: Path, subject: str) -> bytes:
    return nuaa_frames(testdata, "print", subject)[0].read_bytes()


@pytest.fixture()
def enrolled(client, testdata: Path):
    client.enroll(ID_SUBJECT_1, NAME_1, [print_reference(testdata, "0001")])
    client.enroll(ID_SUBJECT_2, NAME_2, [print_reference(testdata, "0004")])
    return client


def _stub(node) -> pb_grpc.IdentityVerificationStub:
    return pb_grpc.IdentityVerificationStub(grpc.insecure_channel(f"127.0.0.1:{node.port}"))


def test_genuine_burst_passes_and_impostor_fails(enrolled, testdata: Path) -> None:
    genuine = enrolled.verify(ID_SUBJECT_1, NAME_1, live_burst(testdata, "0001"))
    assert (genuine.verdict, genuine.reason) == ("PASS", "VERIFIED")
    assert len(genuine.request_id) == 36
    impostor = enrolled.verify(ID_SUBJECT_1, NAME_1, live_burst(testdata, "0002"))
    assert (impostor.verdict, impostor.reason) == ("FAIL", "NOT_VERIFIED")
    second = enrolled.verify(ID_SUBJECT_2, "阿依古丽•买买提", live_burst(testdata, "0004"))  # bullet for the dot
    assert (second.verdict, second.reason) == ("PASS", "VERIFIED")


def test_unknown_id_name_mismatch_and_face_mismatch_answer_identically(enrolled, node, testdata: Path) -> None:
    stub = _stub(node)
    burst_1, burst_2 = live_burst(testdata, "0001"), live_burst(testdata, "0002")
    requests = [
        pb.VerifyRequest(id_number=ID_UNKNOWN, name=NAME_1, purpose=pb.CHECK_IN, frames=burst_1),
        pb.VerifyRequest(id_number=ID_SUBJECT_1, name="李四", purpose=pb.CHECK_IN, frames=burst_1),
        pb.VerifyRequest(id_number=ID_SUBJECT_1, name=NAME_1, purpose=pb.CHECK_IN, frames=burst_2),
    ]
    answers = []
    for request in requests:
        response, call = stub.Verify.with_call(request, timeout=30)
        assert (response.verdict, response.reason) == (pb.FAIL, pb.NOT_VERIFIED)
        response.request_id = ""  # the only field that differs by design
        answers.append((response.SerializeToString(), tuple(call.trailing_metadata() or ())))
    assert answers[0] == answers[1] == answers[2]


def test_invalid_id_number_is_invalid_argument_with_reason(enrolled, node, testdata: Path) -> None:
    stub = _stub(node)
    with pytest.raises(grpc.RpcError) as failure:
        stub.Verify(pb.VerifyRequest(id_number="11010519491231003X", name=NAME_1, purpose=pb.CHECK_IN,
                                     frames=live_burst(testdata, "0001", 2)), timeout=10)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(failure.value)
    assert info is not None and info.reason == "INVALID_ID_FORMAT" and info.domain == "idv.v1"
    assert "11010519491231003X" not in failure.value.details()


def test_lower_case_x_is_the_same_identity(enrolled, testdata: Path) -> None:
    result = enrolled.verify(ID_SUBJECT_1.lower(), NAME_1, live_burst(testdata, "0001"))
    assert result.verdict == "PASS"


@pytest.mark.parametrize(
    "mutate, code, reason",
    [
        (lambda r: r.ClearField("frames"), grpc.StatusCode.INVALID_ARGUMENT, "FRAME_COUNT"),
        (lambda r: r.frames.pop(), grpc.StatusCode.INVALID_ARGUMENT, "FRAME_COUNT"),  # one frame cannot show liveness
        (lambda r: r.frames.extend([r.frames[0]] * 8), grpc.StatusCode.INVALID_ARGUMENT, "FRAME_COUNT"),
        (lambda r: r.ClearField("purpose"), grpc.StatusCode.INVALID_ARGUMENT, "MISSING_PURPOSE"),
        (lambda r: setattr(r, "name", ""), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_NAME"),
        (lambda r: setattr(r, "name", "张\u202e三"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_NAME"),
        (lambda r: setattr(r, "id_number", "1" * 10000), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ID_FORMAT"),
        (lambda r: r.frames.append(b"GIF89a" + b"\0" * 64), grpc.StatusCode.INVALID_ARGUMENT, "UNSUPPORTED_FORMAT"),
        (lambda r: r.frames.append(b"\xff\xd8\xff\xe0broken"), grpc.StatusCode.INVALID_ARGUMENT, "UNDECODABLE_IMAGE"),
    ],
)
def test_malformed_requests_get_a_clear_error_and_the_node_keeps_serving(
    enrolled, node, testdata: Path, mutate, code, reason
) -> None:
    stub = _stub(node)
    request = pb.VerifyRequest(id_number=ID_SUBJECT_1, name=NAME_1, purpose=pb.CHECK_IN,
                               frames=live_burst(testdata, "0001", 2))
    mutate(request)
    with pytest.raises(grpc.RpcError) as failure:
        stub.Verify(request, timeout=30)
    assert failure.value.code() == code
    assert error_info(failure.value).reason == reason
    # The node is unharmed.
    assert enrolled.verify(ID_SUBJECT_1, NAME_1, live_burst(testdata, "0001")).verdict == "PASS"


def test_face_count_and_quality_are_verdicts(enrolled, testdata: Path) -> None:
    group = (testdata / "images" / "group_six_faces.jpg").read_bytes()
    assert enrolled.verify(ID_SUBJECT_1, NAME_1, [group, group]).reason == "MULTIPLE_FACES"
    ok, blank = cv2.imencode(".jpg", np.full((480, 640, 3), 128, np.uint8))
    assert enrolled.verify(ID_SUBJECT_1, NAME_1, [blank.tobytes()] * 2).reason == "NO_FACE"
    frame = cv2.imdecode(np.frombuffer(live_burst(testdata, "0001", 1)[0], np.uint8), cv2.IMREAD_COLOR)
    ok, blurred = cv2.imencode(".jpg", cv2.GaussianBlur(frame, (0, 0), 8))
    result = enrolled.verify(ID_SUBJECT_1, NAME_1, [blurred.tobytes()] * 2)
    assert result.verdict == "FAIL" and result.reason in ("LOW_QUALITY", "NO_FACE")


def test_enroll_refuses_bad_references_and_duplicates(enrolled, node, testdata: Path) -> None:
    stub = _stub(node)
    group = (testdata / "images" / "group_six_faces.jpg").read_bytes()
    with pytest.raises(grpc.RpcError) as failure:
        stub.Enroll(pb.EnrollRequest(id_number=ID_UNKNOWN, name="王五", reference_images=[group]), timeout=30)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(failure.value).reason == "REFERENCE_MULTIPLE_FACES"
    with pytest.raises(grpc.RpcError) as failure:
        stub.Enroll(pb.EnrollRequest(id_number=ID_SUBJECT_1, name=NAME_1,
                                     reference_images=[print_reference(testdata, "0001")]), timeout=30)
    assert failure.value.code() == grpc.StatusCode.ALREADY_EXISTS
    # With replace, the identity takes the new reference (here: another person's).
    stub.Enroll(pb.EnrollRequest(id_number=ID_SUBJECT_1, name=NAME_1, replace=True,
                                 reference_images=[print_reference(testdata, "0005")]), timeout=30)
    assert enrolled.verify(ID_SUBJECT_1, NAME_1, live_burst(testdata, "0005")).verdict == "PASS"
    assert enrolled.verify(ID_SUBJECT_1, NAME_1, live_burst(testdata, "0001")).verdict == "FAIL"


def test_health_is_not_serving_until_models_are_warm(node_settings) -> None:
    from idv.node import build_node

    node = build_node(node_settings)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{node.port}")
        health = health_pb2_grpc.HealthStub(channel)
        service = "idv.v1.IdentityVerification"
        before = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert before.status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.RpcError) as failure:
            pb_grpc.IdentityVerificationStub(channel).Verify(
                pb.VerifyRequest(id_number=ID_SUBJECT_1, name=NAME_1, purpose=pb.CHECK_IN, frames=[b"x"]), timeout=5)
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
        node.load()
        after = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert after.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        node.stop(0)


def test_second_node_on_the_same_port_fails_to_start(node, node_settings) -> None:

    from idv.node import build_node

    with pytest.raises(OSError, match="cannot listen"):
        build_node(node_settings.updated(port=node.port))


def test_cli_enroll_and_verify_json(node, testdata: Path, tmp_path: Path) -> None:
    target = f"127.0.0.1:{node.port}"
    reference = nuaa_frames(testdata, "print", "0001")[0]
    cli = [sys.executable, "-m", "idv.cli"]
    enrolled = subprocess.run([*cli, "enroll", "--target", target, "--id", ID_SUBJECT_1, "--name", NAME_1,
                               str(reference)], capture_output=True, text=True, timeout=60)
    assert enrolled.returncode == 0, enrolled.stderr
    sequence = next(iter(nuaa_sequences(testdata, "live", "0001").values()))
    frames = [str(p) for p in sequence[:15:3]]
    verified = subprocess.run([*cli, "verify", "--target", target, "--id", ID_SUBJECT_1, "--name", NAME_1,
                               "--json", *frames], capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0, verified.stderr
    answer = json.loads(verified.stdout)
    # A PASS for CHECK_IN (the CLI's default purpose) carries the check-in credential (issue 18).
    assert set(answer) == {"verdict", "reason", "request_id", "credential"}
    assert answer["verdict"] == "PASS" and answer["reason"] == "VERIFIED"
    assert answer["credential"]["code"].startswith("IDVC1.") and answer["credential"]["expires_at_unix"] > 0
    failed = subprocess.run([*cli, "verify", "--target", target, "--id", ID_UNKNOWN, "--name", NAME_1,
                             "--json", *frames], capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1 and json.loads(failed.stdout)["reason"] == "NOT_VERIFIED"


def test_refuses_to_serve_with_an_altered_model(node_settings, tmp_path: Path) -> None:

    from idv.models.manifest import load_manifest
    from idv.models.runtime import ModelLoadError

    altered_dir = tmp_path / "models"
    altered_dir.mkdir()
    for path in node_settings.models.dir.iterdir():
        (altered_dir / path.name).write_bytes(path.read_bytes())
    target = altered_dir / load_manifest().entry("sface_fp32").file
    data = bytearray(target.read_bytes())
    data[1000] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="altered"):
        start_node(node_settings.updated(model_dir=altered_dir))
