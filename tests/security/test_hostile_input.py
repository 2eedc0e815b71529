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
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert node.state.metrics.registry.get_sample_value(
        "idv_refused_before_handler_total", {"cause": "UNDECODABLE_PROTOBUF"}) == 3.0
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
    # One byte over the limit that fits the largest legal request (24 frames x 512 KiB + 64 KiB).
    huge = pb.VerifyRequest(id_number=ID_SUBJECT_1, name="张三", purpose=pb.CHECK_IN,
                            frames=[b"\0" * (node.settings.serving.max_message_bytes + 1)])
    with pytest.raises(grpc.RpcError) as failure:
        stub.Verify(huge, timeout=10)
    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Refused by gRPC before any handler ran, and still counted by cause (issue 16).
    from tests.security.h2_attacks import wait_until

    assert wait_until(lambda: node.state.metrics.registry.get_sample_value(
        "idv_refused_before_handler_total", {"cause": "NO_WHOLE_MESSAGE"}) == 1.0, 5)
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
                                  "TOO_MANY_SCANS", "FRAME_TOO_LARGE"}
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] * image.shape[1] <= limits.max_pixels


@settings(max_examples=300, deadline=None)
@given(id_number=st.text(max_size=40), name=st.text(max_size=80), purpose=st.sampled_from([None, *list(
    __import__("idv.verdicts", fromlist=["Purpose"]).Purpose)]), count=st.integers(0, 30))
def test_fuzzed_requests_are_validated_without_surprises(id_number, name, purpose, count) -> None:
    from idv.challenges import ChallengePolicy
    from idv.face.burst import BurstPolicy
    from idv.face.quality import QualityLimits
    from idv.imaging import ImageLimits
    from idv.pipeline import PipelineLimits, VerificationPipeline
    from idv.service import VerificationService, VerifyCommand

    class _Vault:
        def id_key(self, value: str) -> str:
            return "k"

    # Validation needs no model, store or audit: none is given, so reaching one would fail loudly.
    pipeline = VerificationPipeline(None, None, 0.5, PipelineLimits(), ImageLimits(), QualityLimits(),  # type: ignore[arg-type]
                                    BurstPolicy())
    service = VerificationService(pipeline, _Vault(), None, None, ChallengePolicy())  # type: ignore[arg-type]
    frames = tuple(_seed_images()[0] for _ in range(count))
    try:
        validated = service.validate(VerifyCommand(id_number, name, purpose, frames))
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


def test_a_cancelled_call_stops_within_a_stage_and_frees_its_slot(node_settings, testdata) -> None:
    """RELIABILITY D6: gRPC never interrupts a handler; the pipeline must notice the caller left.

    One admission slot, and detection slowed to 0.3 s a frame (8 frames: about 1.2 s of work): a
    handler that ignored the cancellation would hold the slot (in-flight gauge 1) and the next call
    would be refused RESOURCE_EXHAUSTED."""
    import time

    from tests.conftest import nuaa_frames, start_node

    node = start_node(node_settings.updated(max_concurrent_rpcs=1, worker_threads=1))
    try:
        detector = node.assembled.models.detector
        detected: list[int] = []
        original = detector.detect

        def slow(image):
            detected.append(1)
            time.sleep(0.3)
            return original(image)

        detector.detect = slow
        gauge = lambda: node.state.metrics.registry.get_sample_value("idv_in_flight")  # noqa: E731
        stub = pb_grpc.IdentityVerificationStub(grpc.insecure_channel(f"127.0.0.1:{node.port}"))
        frames = [p.read_bytes() for p in nuaa_frames(testdata, "live", "0001")[:8]]
        request = pb.VerifyRequest(id_number=ID_SUBJECT_1, name="张三", purpose=pb.CHECK_IN, frames=frames)
        call = stub.Verify.future(request, timeout=30)
        deadline = time.monotonic() + 5
        while gauge() != 1:
            assert time.monotonic() < deadline, "the call was never admitted"
            time.sleep(0.01)
        call.cancel()
        cancelled_at = time.monotonic()
        while gauge() != 0:
            assert time.monotonic() - cancelled_at < 0.7, "the cancelled call still holds its slot"
            time.sleep(0.01)
        assert len(detected) < 8, "the pipeline ran every frame for a caller that had gone"
        detector.detect = original
        response = stub.Verify(request, timeout=30)  # with one slot: admitted only because it was freed
        assert response.verdict == pb.FAIL  # ID not enrolled: NOT_VERIFIED, but it ran
        cancelled = node.state.metrics.registry.get_sample_value(
            "idv_requests_total", {"rpc": "Verify", "code": "CANCELLED", "reason": "CANCELLED"})
        assert cancelled == 1.0
    finally:
        node.stop(0)


def test_the_server_enforces_its_own_budget_whatever_the_client_deadline(node_settings, testdata) -> None:
    """RELIABILITY D4/D7 from the server's side: the client allows 30 s, the node's budget is 0.5 s; with
    detection slowed to 0.3 s a frame the work would take about 1.2 s, so a node that ignored its own
    budget would answer a verdict late. It answers DEADLINE_EXCEEDED within about one stage of 0.5 s."""
    import time

    from idv.rpc.status import error_info
    from tests.conftest import nuaa_frames, start_node

    node = start_node(node_settings.updated(request_budget_seconds=0.5))
    try:
        detector = node.assembled.models.detector
        original = detector.detect

        def slow(image):
            time.sleep(0.3)
            return original(image)

        detector.detect = slow
        stub = pb_grpc.IdentityVerificationStub(grpc.insecure_channel(f"127.0.0.1:{node.port}"))
        frames = [p.read_bytes() for p in nuaa_frames(testdata, "live", "0001")[:8]]
        request = pb.VerifyRequest(id_number=ID_SUBJECT_1, name="张三", purpose=pb.CHECK_IN, frames=frames)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as failure:
            stub.Verify(request, timeout=30)
        took = time.monotonic() - started
        assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert error_info(failure.value).reason == "DEADLINE_EXCEEDED"  # the node's answer, not the client's
        assert took < 0.5 + 0.3 + 0.4, took  # budget + one stage + scheduling slack, far below 1.2 s of work
    finally:
        node.stop(0)


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
