"""The operator's admin RPCs over real gRPC: erase, unlock and inspect an identity; retention."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import grpc
import pytest

from idv.client import IdvClient
from idv.rpc.status import error_info
from idv.security.callers import add_caller
from tests.conftest import ID_SUBJECT_1, ID_SUBJECT_2, ID_UNKNOWN, nuaa_frames, nuaa_sequences, refused_start, start_node

NAME = "张三"


def _burst(testdata, subject: str) -> list[bytes]:
    sequence = next(iter(nuaa_sequences(testdata, "live", subject).values()))
    return [p.read_bytes() for p in sequence[:12:3]]


def _reference(testdata, subject: str) -> bytes:
    return nuaa_frames(testdata, "print", subject)[0].read_bytes()


@pytest.fixture()
def admin_node(node_settings):
    settings = node_settings.updated(lockout_after_failures=2, lockout_base_seconds=60.0, failure_cap=3)
    keys = {"operator": add_caller(settings.store.callers_path, "operator", ["admin"]),
            "terminal": add_caller(settings.store.callers_path, "terminal", ["verify:*", "enroll"])}
    node = start_node(settings)
    yield node, keys, settings
    node.stop(0)


def _cli(node, key: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "idv.cli", "admin", *args, "--target", f"127.0.0.1:{node.port}"],
                          env={**os.environ, "IDV_API_KEY": key}, capture_output=True, text=True, timeout=60)


def test_status_and_delete_from_the_cli_erase_the_reference_and_are_audited(admin_node, testdata) -> None:
    node, keys, settings = admin_node
    target = f"127.0.0.1:{node.port}"
    with IdvClient(target, api_key=keys["terminal"], retries=0) as terminal:
        terminal.enroll(ID_SUBJECT_1, NAME, [_reference(testdata, "0001")])
        assert terminal.verify(ID_SUBJECT_1, NAME, _burst(testdata, "0001")).verdict == "PASS"
        with pytest.raises(grpc.RpcError) as denied:  # a terminal is no operator
            terminal.delete_identity(ID_SUBJECT_1)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

    shown = _cli(node, keys["operator"], "status", "--id", ID_SUBJECT_1)
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["enrolled"] is True and status["template_count"] == 1
    assert status["model_fingerprints"] == [node.assembled.service.fingerprints["recognizer"]]
    assert abs(status["enrolled_at_unix"] - time.time()) < 120
    assert status["consecutive_failures"] == 0 and status["locked_until_unix"] == 0
    assert _cli(node, keys["operator"], "status", "--id", ID_UNKNOWN).stdout.strip() == "not enrolled"

    deleted = _cli(node, keys["operator"], "delete", "--id", ID_SUBJECT_1)
    assert deleted.returncode == 0 and deleted.stdout.startswith("deleted"), deleted.stderr
    assert _cli(node, keys["operator"], "status", "--id", ID_SUBJECT_1).stdout.strip() == "not enrolled"
    assert "nothing to delete" in _cli(node, keys["operator"], "delete", "--id", ID_SUBJECT_1).stdout
    with IdvClient(target, api_key=keys["terminal"], retries=0) as terminal:
        assert terminal.verify(ID_SUBJECT_1, NAME, _burst(testdata, "0001")).reason == "NOT_VERIFIED"
        # The templates are gone from the 1:N gallery too: the same face enrols under another ID.
        terminal.enroll(ID_SUBJECT_2, NAME, [_reference(testdata, "0001")])

    records = [json.loads(line) for line in settings.store.audit_path.read_text().splitlines()]
    admin_records = [r for r in records if r["event"].startswith("admin_")]
    id_key = node.assembled.service.id_key(ID_SUBJECT_1)
    assert [r["event"] for r in admin_records] == ["admin_status", "admin_status", "admin_delete",
                                                   "admin_status", "admin_delete"]
    assert all(r["caller"] == "operator" for r in admin_records)
    assert admin_records[2]["id_key"] == id_key and admin_records[2]["deleted"] is True
    text = settings.store.audit_path.read_text()
    assert ID_SUBJECT_1 not in text and NAME not in text


def test_unlock_resets_the_lockout_and_failure_cap(admin_node, testdata) -> None:
    node, keys, _ = admin_node
    target = f"127.0.0.1:{node.port}"
    with IdvClient(target, api_key=keys["terminal"], retries=0) as terminal:
        terminal.enroll(ID_SUBJECT_1, NAME, [_reference(testdata, "0001")])
        for _ in range(2):
            assert terminal.verify(ID_SUBJECT_1, NAME, _burst(testdata, "0002")).reason == "NOT_VERIFIED"
        with pytest.raises(grpc.RpcError) as locked:
            terminal.verify(ID_SUBJECT_1, NAME, _burst(testdata, "0001"))
        assert error_info(locked.value).reason == "IDENTITY_LOCKED"
    with IdvClient(target, api_key=keys["operator"], retries=0) as operator:
        status = operator.identity_status(ID_SUBJECT_1)
        assert status.consecutive_failures == 2 and status.locked_until_unix > time.time()
        assert operator.unlock_identity(ID_SUBJECT_1) is True
        after = operator.identity_status(ID_SUBJECT_1)
        assert after.consecutive_failures == 0 and after.locked_until_unix == 0
        with pytest.raises(grpc.RpcError) as bad:
            operator.unlock_identity("123")
        assert error_info(bad.value).reason == "INVALID_ID_FORMAT"
    with IdvClient(target, api_key=keys["terminal"], retries=0) as terminal:
        assert terminal.verify(ID_SUBJECT_1, NAME, _burst(testdata, "0001")).verdict == "PASS"
    # The failure cap (ALTERNATIVE_METHOD_REQUIRED) is lifted the same way: three failures counted
    # through the store's own contract, each after the previous lock ran out.
    counters, lockout = node.assembled.counters, node.settings.throttle.lockout
    key = f"id:{node.assembled.service.id_key(ID_SUBJECT_1)}"
    for step in range(1, 4):
        assert counters.begin_attempt(key, lockout, time.time() + step * 10**6).granted
    with IdvClient(target, api_key=keys["operator"], retries=0) as operator:
        assert operator.identity_status(ID_SUBJECT_1).failure_cap_reached is True
        assert operator.unlock_identity(ID_SUBJECT_1) is True
        assert operator.identity_status(ID_SUBJECT_1).failure_cap_reached is False


def test_a_reference_past_its_retention_asks_the_matching_face_only_to_re_enrol(node_settings, testdata) -> None:
    node = start_node(node_settings.updated(reference_max_age_days=1.0 / 86400))  # one second
    try:
        with IdvClient(f"127.0.0.1:{node.port}", retries=0) as client:
            client.enroll(ID_SUBJECT_1, NAME, [_reference(testdata, "0001")])
            assert client.verify(ID_SUBJECT_1, NAME, _burst(testdata, "0001")).reason == "VERIFIED"
            time.sleep(1.2)
            assert client.verify(ID_SUBJECT_1, NAME, _burst(testdata, "0001")).reason == "REENROLMENT_REQUIRED"
            # A stranger learns nothing about the reference's age or existence.
            assert client.verify(ID_SUBJECT_1, NAME, _burst(testdata, "0002")).reason == "NOT_VERIFIED"
            assert client.identity_status(ID_SUBJECT_1).reenrolment_required is True
            client.enroll(ID_SUBJECT_1, NAME, [_reference(testdata, "0001")], replace=True)
            assert client.verify(ID_SUBJECT_1, NAME, _burst(testdata, "0001")).reason == "VERIFIED"
    finally:
        node.stop(0)


def _remove_sqlite(path) -> None:
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def test_a_deleted_or_replaced_store_file_is_refused_at_start_not_silently_recreated(node_settings, testdata) -> None:
    from idv.store_guard import StoreMismatch

    node = start_node(node_settings)
    with IdvClient(f"127.0.0.1:{node.port}", retries=0) as client:
        client.enroll(ID_SUBJECT_1, NAME, [_reference(testdata, "0001")])
    node.stop(0)
    store = node_settings.store.sqlite_path
    kept = store.with_name("kept.sqlite3")
    store.rename(kept)
    _remove_sqlite(store)
    refused = refused_start(node_settings)
    assert isinstance(refused, StoreMismatch) and "empty and unclaimed" in str(refused)
    assert str(store) in str(refused) and "store.id" in str(refused)
    # Another node's store file in its place: refused as replaced.
    other = node_settings.updated(data_dir=node_settings.store.data_dir.parent / "other")
    start_node(other).stop(0)
    _remove_sqlite(store)
    other.store.sqlite_path.rename(store)
    refused = refused_start(node_settings)
    assert isinstance(refused, StoreMismatch) and "the store was replaced" in str(refused)
    _remove_sqlite(store)
    kept.rename(store)  # the real one back: it serves what it had
    counters = node_settings.store.counters_path
    counters.rename(counters.with_name("kept-counters.sqlite3"))  # the lockouts' file gone
    refused = refused_start(node_settings)
    assert isinstance(refused, StoreMismatch) and f"counters store {counters} is missing" in str(refused)
    counters.with_name("kept-counters.sqlite3").rename(counters)
    node = start_node(node_settings)
    try:
        with IdvClient(f"127.0.0.1:{node.port}", retries=0) as client:
            assert client.identity_status(ID_SUBJECT_1).enrolled
    finally:
        node.stop(0)
