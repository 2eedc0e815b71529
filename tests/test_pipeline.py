"""The core and the service without gRPC: deadlines between stages, subject selection, quality over a burst."""

from __future__ import annotations

import time

import cv2
import grpc
import numpy as np
import pytest

from idv.errors import DeadlineExceeded
from idv.face.types import FaceDetection
from idv.pipeline import Budget, select_subject
from idv.service import EnrollCommand, VerifyCommand
from idv.verdicts import Purpose, TrueReason
from tests.conftest import ID_SUBJECT_1, nuaa_frames, nuaa_sequences


def _face(size: float) -> FaceDetection:
    return FaceDetection(0, 0, size, size, 0.9, np.zeros((5, 2), np.float32))


@pytest.fixture()
def service(node_settings, assemble):
    return assemble(node_settings.updated(liveness=False)).service


def test_the_subject_is_the_largest_face_and_small_bystanders_are_ignored() -> None:
    subject, others = select_subject([_face(60), _face(160), _face(70)], bystander_ratio=0.5)
    assert subject.width == 160 and others == []
    subject, others = select_subject([_face(90), _face(160)], bystander_ratio=0.5)
    assert subject.width == 160 and [o.width for o in others] == [90]
    assert select_subject([], bystander_ratio=0.5) == (None, [])


def test_an_exhausted_budget_stops_before_the_next_stage(service, model_set, testdata, monkeypatch) -> None:
    frames = tuple(p.read_bytes() for p in nuaa_frames(testdata, "live", "0001")[:3])
    with pytest.raises(DeadlineExceeded, match="before the reference lookup"):
        service.verify(VerifyCommand(ID_SUBJECT_1, "张三", Purpose.CHECK_IN, frames), Budget(0.0))

    clock = [0.0]
    budget = Budget(1.0, clock=lambda: clock[0])
    calls = []
    original = model_set.detector.detect

    def slow_detect(image):
        calls.append(1)
        clock[0] += 0.6  # each detection "takes" 0.6 s of the 1 s budget
        return original(image)

    monkeypatch.setattr(model_set.detector, "detect", slow_detect)
    with pytest.raises(DeadlineExceeded):
        service.verify(VerifyCommand(ID_SUBJECT_1, "张三", Purpose.CHECK_IN, frames), budget)
    assert len(calls) == 2  # the third frame was never decoded or detected


def test_a_client_deadline_shorter_than_the_pipeline_is_deadline_exceeded(node, testdata) -> None:
    from idv.v1 import verification_pb2 as pb
    from idv.v1 import verification_pb2_grpc as pb_grpc

    stub = pb_grpc.IdentityVerificationStub(grpc.insecure_channel(f"127.0.0.1:{node.port}"))
    frames = [p.read_bytes() for p in nuaa_frames(testdata, "live", "0001")[:8]]
    request = pb.VerifyRequest(id_number=ID_SUBJECT_1, name="张三", purpose=pb.CHECK_IN, frames=frames)
    with pytest.raises(grpc.RpcError) as failure:
        stub.Verify(request, timeout=0.05)
    assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(0.3)
    response = stub.Verify(request, timeout=30)  # the node is unharmed
    assert response.verdict == pb.FAIL


def test_one_blurred_frame_does_not_fail_a_burst_but_a_mostly_blurred_one_does(service, testdata) -> None:
    reference = nuaa_frames(testdata, "print", "0001")[0].read_bytes()
    service.enroll(EnrollCommand(ID_SUBJECT_1, "张三", (reference,)), Budget(30))
    sequence = next(iter(nuaa_sequences(testdata, "live", "0001").values()))
    sharp = [p.read_bytes() for p in sequence[:15:3]]

    def blurred(data: bytes) -> bytes:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        return cv2.imencode(".jpg", cv2.GaussianBlur(image, (0, 0), 6))[1].tobytes()

    one_blurred = tuple([blurred(sharp[0]), *sharp[1:]])
    outcome = service.verify(VerifyCommand(ID_SUBJECT_1, "张三", Purpose.CHECK_IN, one_blurred), Budget(30))
    assert outcome.true_reason is TrueReason.VERIFIED
    mostly_blurred = tuple([*(blurred(f) for f in sharp[:3]), *sharp[3:]])
    outcome = service.verify(VerifyCommand(ID_SUBJECT_1, "张三", Purpose.CHECK_IN, mostly_blurred), Budget(30))
    assert outcome.true_reason in (TrueReason.LOW_QUALITY, TrueReason.NO_FACE)
