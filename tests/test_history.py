"""The person's verification history (issue 18) read from real, hash-chained audit logs: every
replica's log in the shared data dir, only attempts against the one identity, only inside the
window, only time / caller display name / purpose / verdict; turned off, it refuses."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from idv.audit import AuditLog
from idv.history import HistoryDisabled, HistorySettings, VerificationHistory, audit_files
from idv.keys import load_audit_key

MINE, OTHER = "a" * 64, "b" * 64
DAY = 86400.0


def _attempt(log: AuditLog, ts: float, caller: str, id_key: str, verdict: str, event: str = "verify") -> None:
    log.append({"event": event, "request_id": f"r-{ts}", "caller": caller, "purpose": "CHECK_IN", "id_key": id_key,
                "verdict": verdict, "true_reason": "FACE_MISMATCH" if verdict == "FAIL" else "VERIFIED",
                "models": {"recognizer": "abc"}, "timings_ms": {"total": 12.5}, "ts": ts})


@pytest.fixture()
def replicas(tmp_path: Path):
    """Two replicas' logs and this node's own, in one shared data dir."""
    key = load_audit_key(tmp_path, create=True)
    logs = {name: AuditLog(tmp_path / name, key) for name in ("audit.log", "audit-r1.log", "audit-r2.log")}
    yield tmp_path, logs
    for log in logs.values():
        log.close()


def test_every_replicas_attempts_against_the_identity_inside_the_window_newest_first(replicas) -> None:
    data, logs = replicas
    now = time.time()
    _attempt(logs["audit-r1.log"], now - 10 * DAY, "netcafe", MINE, "FAIL")
    _attempt(logs["audit-r2.log"], now - 3 * DAY, "hotel", MINE, "PASS")
    _attempt(logs["audit.log"], now - 1 * DAY, "bank", MINE, "REFUSED", event="verify_refused")
    _attempt(logs["audit-r2.log"], now - 2 * DAY, "hotel", OTHER, "FAIL")  # someone else's
    _attempt(logs["audit-r1.log"], now - 200 * DAY, "hotel", MINE, "PASS")  # outside 180 days
    logs["audit.log"].append({"event": "enroll", "request_id": "e", "caller": "hotel", "id_key": MINE, "ts": now})
    logs["audit.log"].append({"event": "credential_redeemed", "request_id": "c", "caller": "desk", "id_key": MINE,
                              "verdict": "REDEEMED", "ts": now})
    # Another replica's append in progress (no newline yet) is not read.
    (data / "audit-r3.log").write_bytes(json.dumps({"event": "verify", "id_key": MINE, "ts": now, "caller": "x",
                                                    "verdict": "PASS"}).encode())
    (data / "audit.log.torn-123").write_text(json.dumps({"event": "verify", "id_key": MINE, "ts": now}) + "\n")
    history = VerificationHistory(data, HistorySettings(), logs["audit.log"],
                                  lambda: {"netcafe": "星际网吧", "hotel": "如家酒店"})
    found = history.for_identity(MINE, "hotel", "backend")
    assert found.window_days == 180
    assert [(e.caller, e.purpose, e.verdict) for e in found.entries] == [
        ("bank", "CHECK_IN", "REFUSED"), ("如家酒店", "CHECK_IN", "PASS"), ("星际网吧", "CHECK_IN", "FAIL")]
    assert [round((now - e.time) / DAY) for e in found.entries] == [1, 3, 10]
    assert set(vars(found.entries[0])) == {"time", "caller", "purpose", "verdict"}  # nothing else
    assert {p.name for p in audit_files(data)} == {"audit.log", "audit-r1.log", "audit-r2.log", "audit-r3.log"}
    viewed = json.loads((data / "audit.log").read_text().splitlines()[-1])
    assert (viewed["event"], viewed["id_key"], viewed["caller"], viewed["via"], viewed["entries"]) == (
        "history_viewed", MINE, "hotel", "backend", 3)


def test_a_shorter_window_and_the_switch(replicas) -> None:
    data, logs = replicas
    now = time.time()
    _attempt(logs["audit-r1.log"], now - 10 * DAY, "netcafe", MINE, "FAIL")
    _attempt(logs["audit-r1.log"], now - 1 * DAY, "hotel", MINE, "PASS")
    week = VerificationHistory(data, HistorySettings(window_days=7), logs["audit.log"], dict)
    assert [e.caller for e in week.for_identity(MINE, "hotel", "device").entries] == ["hotel"]
    off = VerificationHistory(data, HistorySettings(enabled=False), logs["audit.log"], dict)
    with pytest.raises(HistoryDisabled) as refused:
        off.for_identity(MINE, "hotel", "device")
    assert refused.value.reason == "HISTORY_DISABLED"
    assert HistorySettings(window_days=0).problems() and not HistorySettings().problems()
