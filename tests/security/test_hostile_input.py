"""Hostile transport-level input and a bounded fuzz of parse-validate-decode."""

from __future__ import annotations

import struct

import cv2
import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from idv.errors import InvalidRequest
from idv.imaging import ImageLimits, decode_frame
from idv.v1 import verification_pb2 as pb
from idv.v1 import verification_pb2_grpc as pb_grpc
from tests.conftest import ID_SUBJECT_1


def _raw_verify(channel: grpc.Channel):
    return channel.unary_unary("/idv.v1.IdentityVerification/Verify",
                               request_serializer=lambda b: b, response_deserializer=lambda b: b)


def test_garbage_protobuf_is_refused_and_the_node_keeps_serving(node) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{node.port}")
    for garbage in (b"\xff\xff\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f", bytes(range(256))):
        with pytest.raises(grpc.RpcError) as failure:
            _raw_verify(channel)(garbage, timeout=5)
        assert failure.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT)
    # An empty message is well-formed protobuf: refused with a reason, never a verdict.
    with pytest.raises(grpc.RpcError) as failure:
        pb_grpc.IdentityVerificationStub(channel).Verify(pb.VerifyRequest(), timeout=5)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert status.status == health_pb2.HealthCheckResponse.SERVING


def test_oversize_message_and_metadata_are_refused_by_grpc(node) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{node.port}", options=[("grpc.max_send_message_length", -1)])
    stub = pb_grpc.IdentityVerificationStub(channel)
    huge = pb.VerifyRequest(id_number=ID_SUBJECT_1, name="张三", purpose=pb.CHECK_IN, frames=[b"\0" * (6 << 20)])
    with pytest.raises(grpc.RpcError) as failure:
        stub.Verify(huge, timeout=10)
    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as failure:
        stub.Verify(pb.VerifyRequest(), metadata=(("x-filler", "a" * 20000),), timeout=10)
    assert failure.value.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL,
                                    grpc.StatusCode.UNAVAILABLE)


def test_unknown_method_is_unimplemented_and_reflection_is_off(node) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{node.port}")
    for method in ("/idv.v1.IdentityVerification/Delete",
                   "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"):
        call = channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as failure:
            call(b"", timeout=5)
        assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED


def _seed_images() -> list[bytes]:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    return [cv2.imencode(".jpg", image)[1].tobytes(), cv2.imencode(".png", image)[1].tobytes()]


@st.composite
def mutated_images(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(_seed_images())))
    for _ in range(draw(st.integers(0, 8))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    if draw(st.booleans()):  # corrupt the declared size
        data[16:24] = struct.pack(">II", draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1)))
    return bytes(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(mutated_images(), st.binary(max_size=4096)))
def test_fuzzed_frames_only_ever_raise_invalid_request(data: bytes) -> None:
    limits = ImageLimits()
    try:
        image = decode_frame(data, limits)
    except InvalidRequest as refused:
        assert refused.reason in {"UNDECODABLE_IMAGE", "UNSUPPORTED_FORMAT", "IMAGE_TOO_LARGE", "IMAGE_TOO_SMALL",
                                  "FRAME_TOO_LARGE"}
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] * image.shape[1] <= limits.max_pixels


@settings(max_examples=300, deadline=None)
@given(id_number=st.text(max_size=40), name=st.text(max_size=80), purpose=st.sampled_from([None, *list(
    __import__("idv.verdicts", fromlist=["Purpose"]).Purpose)]), count=st.integers(0, 30))
def test_fuzzed_requests_are_validated_without_surprises(id_number, name, purpose, count) -> None:
    from idv.pipeline import PipelineLimits, VerificationPipeline, VerifyCommand

    class _Vault:
        def id_key(self, value: str) -> str:
            return "k"

    pipeline = VerificationPipeline(None, None, _Vault(), 0.5, PipelineLimits())  # type: ignore[arg-type]
    frames = tuple(_seed_images()[0] for _ in range(count))
    try:
        validated = pipeline.validate(VerifyCommand(id_number, name, purpose, frames))
    except InvalidRequest as refused:
        # Never an echo of the input: identity errors are fixed sentences, and the other
        # refusals (purpose, frame count) are raised before the ID or the name is read.
        from idv.identity import ID_ERROR_MESSAGES, name_error_messages

        if refused.reason == "INVALID_ID_FORMAT":
            assert refused.message in ID_ERROR_MESSAGES
        elif refused.reason == "INVALID_NAME":
            assert refused.message in name_error_messages()
        else:
            assert refused.reason in ("MISSING_PURPOSE", "FRAME_COUNT"), refused.reason
        return
    assert len(validated.canonical_id) == 18 and 1 <= count <= 8


def test_a_cancelled_call_stops_within_a_stage_and_frees_its_slot(node, testdata, monkeypatch) -> None:
    """RELIABILITY D6: gRPC never interrupts a handler; the pipeline must notice the caller left."""
    import time

    from tests.conftest import nuaa_frames

    pipeline = node.state.service.pipeline
    # Counted per frame at detection: since issue 12 the recognizer runs once per burst.
    detected: list[int] = []
    original = pipeline._detector.detect

    def counting(image):
        detected.append(1)
        return original(image)

    monkeypatch.setattr(pipeline._detector, "detect", counting)
    stub = pb_grpc.IdentityVerificationStub(grpc.insecure_channel(f"127.0.0.1:{node.port}"))
    frames = [p.read_bytes() for p in nuaa_frames(testdata, "live", "0001")[:8]]
    request = pb.VerifyRequest(id_number=ID_SUBJECT_1, name="张三", purpose=pb.CHECK_IN, frames=frames)
    call = stub.Verify.future(request, timeout=30)
    time.sleep(0.02)
    call.cancel()
    time.sleep(0.5)
    assert len(detected) < 8, "the pipeline ran every frame for a caller that had gone"
    admission = node.state.service  # the slot is freed: a fresh call is admitted and answered
    assert admission is not None
    response = stub.Verify(request, timeout=30)
    assert response.verdict == pb.FAIL  # ID not enrolled: NOT_VERIFIED, but it ran
    body = node.state.metrics.registry.get_sample_value(
        "idv_requests_total", {"rpc": "Verify", "code": "CANCELLED", "reason": "CANCELLED"})
    assert body == 1.0


def test_keepalive_ping_abuse_gets_the_connection_closed(node) -> None:
    """RELIABILITY D12: a client pinging with no calls more often than the node permits (30 s) is
    sent GOAWAY after max_ping_strikes (2). grpc clients will not ping more often than every 10 s,
    so this takes about 35 s of real time."""
    import time

    channel = grpc.insecure_channel(f"127.0.0.1:{node.port}", options=[
        ("grpc.keepalive_time_ms", 10_000), ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.max_pings_without_data", 0)])
    seen: list[grpc.ChannelConnectivity] = []
    channel.subscribe(seen.append, try_to_connect=True)
    grpc.channel_ready_future(channel).result(timeout=5)
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline and seen[-1] == grpc.ChannelConnectivity.READY:
        time.sleep(0.5)
    channel.close()
    ready = seen.index(grpc.ChannelConnectivity.READY)
    assert any(state != grpc.ChannelConnectivity.READY for state in seen[ready:]), (
        f"the ping-flooding connection was never closed: {seen}")
