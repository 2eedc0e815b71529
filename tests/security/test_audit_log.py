"""The audit log never loses or merges records: short writes undone, torn tails recovered, bad tails named."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from idv.audit import AuditLog, AuditLogCorrupt, verify_audit_log
from idv.errors import StoreUnavailable
from tests.conftest import REPO

KEY = b"k" * 32


def test_a_short_write_on_a_full_disk_is_undone_and_the_request_fails_closed(tmp_path: Path) -> None:
    """A real short write: the file size limit (RLIMIT_FSIZE) lets the kernel write only part of the record."""
    path = tmp_path / "audit.log"
    script = textwrap.dedent(f"""
        import resource, signal, os, sys
        from pathlib import Path
        from idv.audit import AuditLog
        from idv.errors import StoreUnavailable
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG / a short count instead of a kill
        log = AuditLog(Path({str(path)!r}), {KEY!r})
        log.append({{"event": "verify", "n": 1}})
        size = os.path.getsize({str(path)!r})
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 40, resource.RLIM_INFINITY))  # part of a record fits
        outcomes = []
        for n in (2, 3):
            try:
                log.append({{"event": "verify", "n": n, "padding": "x" * 100}})
                outcomes.append("written")
            except StoreUnavailable as exc:
                outcomes.append(exc.reason)
            outcomes.append(os.path.getsize({str(path)!r}) == size)
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))  # space again
        log.append({{"event": "verify", "n": 4}})
        print(outcomes)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    # Both refused, and after each the file is exactly as before: no partial record left behind.
    assert done.stdout.strip() == "['AUDIT_LOG_UNAVAILABLE', True, 'AUDIT_LOG_UNAVAILABLE', True]"
    check = verify_audit_log(path, KEY)
    assert check.ok and check.records == 2, check
    assert [json.loads(line)["n"] for line in path.read_text().splitlines()] == [1, 4]


def test_a_torn_tail_from_a_crash_is_moved_aside_with_file_and_line_named(tmp_path: Path, caplog) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path, KEY)
    for n in range(3):
        log.append({"event": "verify", "n": n})
    log.close()
    with path.open("ab") as fh:
        fh.write(b'{"event":"verify","n":3,"ts":17')  # the crash hit mid-write
    with caplog.at_level(logging.WARNING, logger="idv.audit"):
        reopened = AuditLog(path, KEY)
    assert f"audit log {path} line 4" in caplog.text
    torn = list(tmp_path.glob("audit.log.torn-*"))
    assert len(torn) == 1 and torn[0].read_bytes() == b'{"event":"verify","n":3,"ts":17'
    reopened.append({"event": "verify", "n": 4})
    reopened.close()
    check = verify_audit_log(path, KEY)
    assert check.ok and check.records == 4


def test_a_complete_but_invalid_last_line_stops_the_start_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path, KEY)
    log.append({"event": "verify"})
    log.close()
    with path.open("ab") as fh:
        fh.write(b"not a record\n")
    with pytest.raises(AuditLogCorrupt, match=rf"audit log {path} line 2 is not a valid audit record"):
        AuditLog(path, KEY)


def test_an_audit_log_removed_or_replaced_under_the_node_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path, KEY)
    log.append({"event": "verify"})
    log.probe()
    path.rename(tmp_path / "moved.log")
    path.write_bytes(b"")
    for call in (log.probe, lambda: log.append({"event": "verify"})):
        with pytest.raises(StoreUnavailable) as refused:
            call()
        assert refused.value.reason == "AUDIT_LOG_UNAVAILABLE" and "removed or replaced" in refused.value.message
    log.close()
    os.unlink(path)
