"""Append-only, hash-chained audit log: one JSON line per decision.

Each record holds the time, caller, purpose, keyed hash of the ID, verdict, the
true reason (what the caller was not told), model fingerprints and timings:
never a name, an image, an embedding or a score. Each line carries
`chain = HMAC(audit_key, previous chain || canonical record)`, so editing,
deleting, reordering or inserting a line breaks every later link, and the
chain cannot be recomputed without the audit key (kept apart from the log).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

GENESIS = "0" * 64


def _canonical(record: dict[str, object]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _link(key: bytes, previous: str, record: dict[str, object]) -> str:
    return hmac.new(key, previous.encode() + b"\n" + _canonical(record), hashlib.sha256).hexdigest()


class AuditLog:
    def __init__(self, path: Path, key: bytes):
        self._path = path
        self._key = key
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._last = self._tail_chain()
        # O_APPEND: every write lands at the end even if another writer appended.
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _tail_chain(self) -> str:
        if not self._path.exists() or self._path.stat().st_size == 0:
            return GENESIS
        with self._path.open("rb") as fh:
            fh.seek(max(0, self._path.stat().st_size - 64 * 1024))
            last_line = fh.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]
        return str(json.loads(last_line)["chain"])

    def append(self, record: dict[str, object]) -> None:
        with self._lock:
            body = dict(record)
            body.setdefault("ts", round(time.time(), 3))
            chain = _link(self._key, self._last, body)
            line = _canonical({**body, "chain": chain}) + b"\n"
            os.write(self._fd, line)
            os.fsync(self._fd)
            self._last = chain

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)


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
