"""Append-only, hash-chained audit log: one JSON line per decision.

Each record holds the time, caller, purpose, keyed hash of the ID, verdict, the
true reason (what the caller was not told), model fingerprints and timings:
never a name, an image, an embedding or a score. Each line carries
`chain = HMAC(audit_key, previous chain || canonical record)`, so editing,
deleting, reordering or inserting a line breaks every later link, and the
chain cannot be recomputed without the audit key (kept apart from the log).
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from idv.errors import StoreUnavailable

GENESIS = "0" * 64
AUDIT_REASON = "AUDIT_LOG_UNAVAILABLE"

log = logging.getLogger("idv.audit")


def _canonical(record: dict[str, object]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _link(key: bytes, previous: str, record: dict[str, object]) -> str:
    return hmac.new(key, previous.encode() + b"\n" + _canonical(record), hashlib.sha256).hexdigest()


class AuditLogCorrupt(RuntimeError):
    """The audit log cannot be continued (a complete line that is not a record); names file and line."""


class AuditLog:
    """Appends are all-or-nothing: one write of the whole line, checked, undone if short, fsync'd.

    A request whose record cannot be written fails closed (UNAVAILABLE, AUDIT_LOG_UNAVAILABLE)
    rather than going unaudited. A torn last line left by a crash is moved aside at start
    (`<log>.torn-<unix time>`) with a warning naming the file and line; any other bad last
    line stops the start, named. A log file removed or replaced under the node is refused.
    """

    def __init__(self, path: Path, key: bytes):
        self._path = path
        self._key = key
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._last = self._recover_tail()
        # O_APPEND: every write lands at the end even if another writer appended.
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        info = os.fstat(self._fd)
        self._identity = (info.st_dev, info.st_ino)
        self._broken = False  # a short write could not be undone: refuse until restarted

    def _recover_tail(self) -> str:
        if not self._path.exists() or self._path.stat().st_size == 0:
            return GENESIS
        with self._path.open("r+b") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - 64 * 1024))
            tail = fh.read()
            if not tail.endswith(b"\n"):  # a crash mid-append: the record was never acknowledged
                keep = size - (len(tail) - (tail.rfind(b"\n") + 1))
                line = _count_lines(fh, keep) + 1
                fh.seek(keep)
                torn = fh.read()
                aside = self._path.with_name(f"{self._path.name}.torn-{int(time.time())}")
                aside.write_bytes(torn)
                fh.truncate(keep)
                fh.flush()
                os.fsync(fh.fileno())
                log.warning(f"audit log {self._path} line {line}: torn record from a crash ({len(torn)} bytes) "
                            f"moved to {aside}; the chain continues from line {line - 1}")
                if keep == 0:
                    return GENESIS
                fh.seek(max(0, keep - 64 * 1024))
                tail = fh.read(keep - fh.tell())
            last_line = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
            try:
                return str(json.loads(last_line)["chain"])
            except (ValueError, KeyError, TypeError):
                line = _count_lines(fh, fh.seek(0, os.SEEK_END))
                raise AuditLogCorrupt(f"audit log {self._path} line {line} is not a valid audit record; check it "
                                      f"with `idv audit verify` before appending to it") from None

    def _check_file(self) -> None:
        try:
            info = os.stat(self._path)
        except OSError:
            info = None
        if info is None or (info.st_dev, info.st_ino) != self._identity:
            raise StoreUnavailable(f"the audit log {self._path} was removed or replaced while serving; restart "
                                   "the node", AUDIT_REASON)

    def append(self, record: dict[str, object]) -> None:
        with self._lock:
            if self._broken:
                raise StoreUnavailable("the audit log could not be repaired after a failed write; restart the node",
                                       AUDIT_REASON)
            self._check_file()
            body = dict(record)
            body.setdefault("ts", round(time.time(), 3))
            chain = _link(self._key, self._last, body)
            line = _canonical({**body, "chain": chain}) + b"\n"
            size = os.fstat(self._fd).st_size
            try:
                written = os.write(self._fd, line)  # the whole record in one write, or it is undone
                if written != len(line):
                    raise OSError(errno.ENOSPC, f"short write ({written} of {len(line)} bytes)")
                os.fsync(self._fd)
            except OSError as exc:
                self._undo(size)
                log.error("audit record not written; the request fails closed",
                          extra={"error_reason": AUDIT_REASON, "problem": exc.strerror or str(exc)})
                raise StoreUnavailable("the audit log cannot be written (disk full?); the request was refused",
                                       AUDIT_REASON) from None
            self._last = chain

    def _undo(self, size: int) -> None:
        """Cut a partial record back off, so the next record does not land on its tail."""
        try:
            os.ftruncate(self._fd, size)
            os.fsync(self._fd)
        except OSError:
            self._broken = True
            log.error(f"audit log {self._path}: a partial record could not be removed; refusing further appends")

    def probe(self) -> None:
        """Readiness: the log is still the file this node opened, and writable."""
        with self._lock:
            self._check_file()
            if self._broken:
                raise StoreUnavailable("the audit log is broken; restart the node", AUDIT_REASON)

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)


def _count_lines(fh, end: int) -> int:
    """Newlines in the first `end` bytes of the file."""
    fh.seek(0)
    count, remaining = 0, end
    while remaining > 0:
        chunk = fh.read(min(remaining, 1 << 20))
        if not chunk:
            break
        count += chunk.count(b"\n")
        remaining -= len(chunk)
    return count


@dataclass(frozen=True)
class AuditCheck:
    records: int
    ok: bool
    first_bad_line: int = 0  # 1-based; 0 when ok
    problem: str = ""


def verify_audit_log(path: Path, key: bytes) -> AuditCheck:
    previous = GENESIS
    count = 0
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                entry = json.loads(raw)
                chain = entry.pop("chain")
            except (ValueError, KeyError, AttributeError):
                return AuditCheck(count, False, number, "not a valid audit record")
            if not hmac.compare_digest(str(chain), _link(key, previous, entry)):
                return AuditCheck(count, False, number, "chain broken: the record or one before it was altered")
            previous = str(chain)
            count += 1
    return AuditCheck(count, True)
