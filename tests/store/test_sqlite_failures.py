"""The embedded SQLite stores fail loudly: a lock held by another process, a full disk, a file removed
under the node: UNAVAILABLE with the store's reason within the request budget, readiness follows."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import grpc
import pytest

from idv.client import IdvClient
from idv.rpc.status import error_info
from tests.conftest import ID_SUBJECT_1, REPO, nuaa_frames, nuaa_sequences, start_node


class HeldLock:
    """Another process holding a SQLite write transaction on a file (as a stuck backup job would)."""

    def __init__(self, path: Path):
        script = textwrap.dedent(f"""
            import sqlite3, sys
            db = sqlite3.connect({str(path)!r}, isolation_level=None)
            db.execute("BEGIN EXCLUSIVE")
            print("locked", flush=True)
            sys.stdin.readline()
            db.execute("ROLLBACK")
        """)
        self.process = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
        assert self.process.stdout.readline().strip() == "locked"

    def release(self) -> None:
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        self.process.wait(10)


def _burst(testdata) -> list[bytes]:
    sequence = next(iter(nuaa_sequences(testdata, "live", "0001").values()))
    return [p.read_bytes() for p in sequence[:9:3]]


def _reference(testdata, subject: str = "0001") -> bytes:
    return nuaa_frames(testdata, "print", subject)[0].read_bytes()


def _failure(call) -> tuple[str, str, float]:
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as failure:
        call()
    info = error_info(failure.value)
    return failure.value.code().name, info.reason if info else "", time.monotonic() - started


def _wait_health(client: IdvClient, wanted: str, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while client.health() != wanted:
        assert time.monotonic() < deadline, f"health never became {wanted}"
        time.sleep(0.05)


@pytest.fixture()
def sqlite_node(node_settings):
    settings = node_settings.updated(request_budget_seconds=3.0, sqlite_busy_timeout_seconds=0.5,
                       store_probe_interval_seconds=0.2, store_probe_failures=2)
    node = start_node(settings)
    yield node, settings
    node.stop(0)


def test_a_store_locked_by_another_process_answers_unavailable_within_the_budget(sqlite_node, testdata) -> None:
    node, settings = sqlite_node
    with IdvClient(f"127.0.0.1:{node.port}", timeout=10, retries=0) as client:
        client.enroll(ID_SUBJECT_1, "张三", [_reference(testdata)])
        counters = HeldLock(settings.store.counters_path)
        try:
            code, reason, took = _failure(lambda: client.verify(ID_SUBJECT_1, "张三", _burst(testdata)))
            assert (code, reason) == ("UNAVAILABLE", "STATE_STORE_UNAVAILABLE")
            assert took < settings.serving.request_budget_seconds
            _wait_health(client, "NOT_SERVING")  # the probe writes, so it sees the lock too
        finally:
            counters.release()
        _wait_health(client, "SERVING")
        references = HeldLock(settings.store.sqlite_path)
        try:
            code, reason, took = _failure(lambda: client.enroll("440305198805171234", "李四", [_reference(testdata, "0004")]))
            assert (code, reason) == ("UNAVAILABLE", "REFERENCE_STORE_UNAVAILABLE")  # no hang, no INTERNAL
            assert took < settings.serving.request_budget_seconds
        finally:
            references.release()
        _wait_health(client, "SERVING")
        assert client.verify(ID_SUBJECT_1, "张三", _burst(testdata)).verdict == "PASS"


def test_store_files_removed_while_serving_are_noticed(sqlite_node, testdata) -> None:
    node, settings = sqlite_node
    with IdvClient(f"127.0.0.1:{node.port}", timeout=10, retries=0) as client:
        client.enroll(ID_SUBJECT_1, "张三", [_reference(testdata)])
        settings.store.counters_path.rename(settings.store.counters_path.with_name("moved-counters.sqlite3"))
        assert _failure(lambda: client.verify(ID_SUBJECT_1, "张三", _burst(testdata)))[:2] == (
            "UNAVAILABLE", "STATE_STORE_UNAVAILABLE")
        _wait_health(client, "NOT_SERVING")
        settings.store.sqlite_path.unlink()
        assert _failure(lambda: client.enroll("440305198805171234", "李四", [_reference(testdata, "0004")]))[:2] == (
            "UNAVAILABLE", "REFERENCE_STORE_UNAVAILABLE")


@pytest.mark.parametrize("store", ["counters", "references"])
def test_a_full_disk_is_store_unavailable_not_an_internal_error(tmp_path: Path, store: str) -> None:
    """A real ENOSPC-like failure: the file size limit (RLIMIT_FSIZE) stops SQLite's writes."""
    script = textwrap.dedent(f"""
        import resource, signal, time
        from pathlib import Path
        from idv.errors import StoreUnavailable
        from idv.state.base import LockoutPolicy
        from idv.state.local import SqliteCounterStore
        from idv.store.base import IdentityRecord, TemplateRecord
        from idv.store.sqlite import SqliteReferenceStore
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        directory = Path({str(tmp_path)!r})
        if {store!r} == "counters":
            opened = SqliteCounterStore(directory / "counters.sqlite3")
            write = lambda i: opened.begin_attempt(f"id:{{i:060d}}" + "x" * 400, LockoutPolicy(5, 30.0, 50), time.time())
        else:
            opened = SqliteReferenceStore(directory / "references.sqlite3")
            write = lambda i: opened.put(IdentityRecord(f"{{i:064d}}", "n" * 64,
                                         (TemplateRecord("fp", 1, b"t" * 2000),), time.time()), False)
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, resource.RLIM_INFINITY))
        for i in range(100_000):
            try:
                write(i)
            except StoreUnavailable as exc:
                print(exc.reason)
                break
        try:
            opened.ping()
            print("ping answered")
        except StoreUnavailable as exc:
            print("ping", exc.reason)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr  # no traceback: every failure was StoreUnavailable
    reason = "STATE_STORE_UNAVAILABLE" if store == "counters" else "REFERENCE_STORE_UNAVAILABLE"
    assert done.stdout.split("\n")[0] == reason
    assert done.stdout.split("\n")[1] == f"ping {reason}"  # readiness sees the full disk too
