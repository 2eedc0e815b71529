"""Brute force across callers, lockouts that survive restarts, caller rate limits, and a tamper-evident audit log."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from idv.client import IdvClient
from idv.rpc.status import error_info
from idv.security.callers import add_caller
from tests.conftest import ID_SUBJECT_1, ID_UNKNOWN, nuaa_frames, nuaa_sequences, start_node


def _burst(testdata: Path, subject: str) -> list[bytes]:
    sequence = next(iter(nuaa_sequences(testdata, "live", subject).values()))
    return [p.read_bytes() for p in sequence[:9:3]]


def _retry_seconds(error: grpc.RpcError) -> int:
    status = rpc_status.from_call(error)
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.seconds
    return -1


@pytest.fixture()
def strict_settings(node_settings):
    return node_settings.updated(lockout_after_failures=3, lockout_base_seconds=60.0, failure_cap=6)


def test_brute_force_from_several_callers_locks_the_identity_and_survives_restart(strict_settings, testdata) -> None:
    keys = [add_caller(strict_settings.store.callers_path, f"terminal-{i}", ["verify:*", "enroll"]) for i in range(3)]
    node = start_node(strict_settings)
    target = f"127.0.0.1:{node.port}"
    impostor = _burst(testdata, "0002")
    try:
        with IdvClient(target, api_key=keys[0], retries=0) as admin:
            admin.enroll(ID_SUBJECT_1, "张三", [nuaa_frames(testdata, "print", "0001")[0].read_bytes()])
        for attempt in range(3):  # three failures, each from another terminal
            with IdvClient(target, api_key=keys[attempt], retries=0) as client:
                assert client.verify(ID_SUBJECT_1, "张三", impostor).reason == "NOT_VERIFIED"
        with IdvClient(target, api_key=keys[1], retries=0) as client:
            with pytest.raises(grpc.RpcError) as failure:
                client.verify(ID_SUBJECT_1, "张三", _burst(testdata, "0001"))  # even the genuine person now waits
        assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_info(failure.value).reason == "IDENTITY_LOCKED"
        assert 50 <= _retry_seconds(failure.value) <= 60
    finally:
        node.stop(0)
    restarted = start_node(strict_settings)  # same data dir: the lock must hold
    try:
        with IdvClient(f"127.0.0.1:{restarted.port}", api_key=keys[2], retries=0) as client:
            with pytest.raises(grpc.RpcError) as failure:
                client.verify(ID_SUBJECT_1, "张三", _burst(testdata, "0001"))
            assert error_info(failure.value).reason == "IDENTITY_LOCKED"
    finally:
        restarted.stop(0)


def test_lockouts_grow_and_the_cap_demands_another_method(strict_settings, testdata) -> None:
    from idv.state.local import SqliteCounterStore
    from idv.throttle import Throttle, ThrottlePolicy
    from idv.errors import Throttled

    clock = [1000.0]
    throttle = Throttle(SqliteCounterStore(strict_settings.store.counters_path),
                        ThrottlePolicy(lockout_after_failures=3, lockout_base_seconds=30, failure_cap=6),
                        clock=lambda: clock[0])
    delays = []
    for _ in range(6):
        while True:
            try:
                ticket = throttle.begin("id-key")
                break
            except Throttled as locked:
                assert locked.reason == "IDENTITY_LOCKED"
                delays.append(round(locked.retry_after_seconds))
                clock[0] += locked.retry_after_seconds + 0.001
        # A failure needs no call: it was counted when the attempt began.
    assert delays == [30, 60, 120]  # doubling with each failure from the third on
    with pytest.raises(Throttled) as capped:
        clock[0] += 10_000
        throttle.begin("id-key")
    assert capped.value.reason == "ALTERNATIVE_METHOD_REQUIRED"


def test_concurrent_attempts_cannot_run_past_the_limit(strict_settings) -> None:
    from idv.errors import Throttled
    from idv.state.local import SqliteCounterStore
    from idv.throttle import Throttle

    throttle = Throttle(SqliteCounterStore(strict_settings.store.counters_path), strict_settings.throttle)

    def attempt(_: int) -> bool:
        try:
            throttle.begin("contested")
            return True
        except Throttled:
            return False

    with ThreadPoolExecutor(max_workers=20) as pool:
        granted = sum(pool.map(attempt, range(20)))
    assert granted == 3


def test_capture_problems_do_not_count_against_the_person(strict_settings, testdata) -> None:
    import cv2
    import numpy as np

    node = start_node(strict_settings)
    try:
        with IdvClient(f"127.0.0.1:{node.port}", retries=0) as client:
            client.enroll(ID_SUBJECT_1, "张三", [nuaa_frames(testdata, "print", "0001")[0].read_bytes()])
            ok, blank = cv2.imencode(".jpg", np.full((480, 640, 3), 128, np.uint8))
            for _ in range(5):
                assert client.verify(ID_SUBJECT_1, "张三", [blank.tobytes()] * 2).reason == "NO_FACE"
            assert client.verify(ID_SUBJECT_1, "张三", _burst(testdata, "0001")).verdict == "PASS"
    finally:
        node.stop(0)


def test_caller_rate_and_identity_velocity_limits(node_settings, testdata) -> None:
    from idv.identity import make_id_number
    from datetime import date

    settings = node_settings.updated(caller_requests_per_minute=1000, caller_distinct_identities_per_hour=3)
    node = start_node(settings)
    try:
        with IdvClient(f"127.0.0.1:{node.port}", retries=0) as client:
            burst = _burst(testdata, "0002")
            for sequence in range(3):
                client.verify(make_id_number("110101", date(1990, 1, 1), sequence), "张三", burst)
            with pytest.raises(grpc.RpcError) as failure:
                client.verify(make_id_number("110101", date(1990, 1, 1), 99), "张三", burst)
            assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert error_info(failure.value).reason == "VELOCITY_LIMITED"
            assert _retry_seconds(failure.value) > 0
    finally:
        node.stop(0)
    settings = node_settings.updated(caller_requests_per_minute=2)
    node = start_node(settings)
    try:
        with IdvClient(f"127.0.0.1:{node.port}", retries=0) as client:
            outcomes = []
            for _ in range(3):
                try:
                    client.verify(ID_UNKNOWN, "张三", [b"\xff\xd8\xff"])
                    outcomes.append("verdict")
                except grpc.RpcError as error:
                    outcomes.append(error_info(error).reason)
            assert outcomes[-1] == "RATE_LIMITED"
    finally:
        node.stop(0)


def test_audit_log_has_one_pseudonymous_record_per_decision_and_detects_tampering(node_settings, testdata) -> None:
    node = start_node(node_settings)
    try:
        with IdvClient(f"127.0.0.1:{node.port}", retries=0) as client:
            client.enroll(ID_SUBJECT_1, "张三", [nuaa_frames(testdata, "print", "0001")[0].read_bytes()])
            first = client.verify(ID_SUBJECT_1, "张三", _burst(testdata, "0001"))
            second = client.verify(ID_UNKNOWN, "李四", _burst(testdata, "0001"))
    finally:
        node.stop(0)
    path = node_settings.store.audit_path
    records = [json.loads(line) for line in path.read_text().splitlines()]
    decisions = {r["request_id"]: r for r in records if r["event"] == "verify"}
    assert set(decisions) == {first.request_id, second.request_id}
    assert decisions[first.request_id]["true_reason"] == "VERIFIED"
    assert decisions[second.request_id]["true_reason"] == "NO_REFERENCE"  # the caller only saw NOT_VERIFIED
    text = path.read_text()
    for secret in (ID_SUBJECT_1, ID_UNKNOWN, "张三", "李四"):
        assert secret not in text
    assert all(set(r["models"]) == {"detector", "recognizer"} for r in decisions.values())

    cli = [sys.executable, "-m", "idv.cli", "audit", "verify", "--data-dir", str(node_settings.store.data_dir)]
    intact = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert intact.returncode == 0 and "chain intact" in intact.stdout
    lines = path.read_text().splitlines()
    doctored = json.loads(lines[1])
    doctored["true_reason"] = "VERIFIED" if doctored.get("true_reason") != "VERIFIED" else "FACE_MISMATCH"
    lines[1] = json.dumps(doctored, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    path.write_text("\n".join(lines) + "\n")
    tampered = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert tampered.returncode == 1 and "line 2" in tampered.stdout
    # Deleting a record is caught too.
    del lines[1]
    path.write_text("\n".join(lines) + "\n")
    assert subprocess.run(cli, capture_output=True, text=True, timeout=60).returncode == 1
