"""A person's own verification history (issue 18; PIPL Art. 45, the right to consult).

After a PASS in a session, the person (on the capture page) or the backend that opened the
session may ask which verifications were made against that identity over a window (default
180 days): when, by which caller (its display name), for what purpose, with what verdict.
Nothing else: no true reason, no request id, no other identity. The identity is the one the
session just proved; there is no way to name another ID (the request carries none).

It reads the audit log, which already records every attempt by keyed ID hash, caller,
purpose and verdict; replicas sharing a data dir write `audit-<replica>.log` each, and all of
them are read. Each request scans the logs (fine for the log sizes one node keeps between
rotations; a large deployment would index them). An operator can turn it off.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from idv.audit import AuditLog
from idv.errors import Code, IdvError

log = logging.getLogger("idv.history")

# Audit events that are verification attempts against an identity (a throttled one is REFUSED).
_ATTEMPTS = frozenset({"verify", "verify_refused"})
_DAY = 86400.0


class HistoryDisabled(IdvError):
    code = Code.FAILED_PRECONDITION
    default_reason = "HISTORY_DISABLED"


@dataclass(frozen=True)
class HistorySettings:
    """The `[history]` settings section."""

    enabled: bool = True  # the person may see who verified as them (PIPL Art. 45)
    window_days: int = 180

    def problems(self) -> list[str]:
        if not (1 <= self.window_days <= 3660):
            return ["history.window_days must be between 1 and 3660"]
        return []


@dataclass(frozen=True)
class HistoryEntry:
    time: float  # unix seconds
    caller: str  # display name
    purpose: str
    verdict: str  # PASS | FAIL | REFUSED


@dataclass(frozen=True)
class History:
    entries: tuple[HistoryEntry, ...]  # newest first
    window_days: int


def audit_files(data_dir: Path) -> list[Path]:
    """This node's log and every replica's (`audit.log`, `audit-<replica>.log`), not torn-off tails."""
    files = [data_dir / "audit.log"] + sorted(data_dir.glob("audit-*.log"))
    return [f for f in files if f.is_file()]


def _records(path: Path) -> Iterator[dict]:
    with path.open("rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                continue  # another replica's append in progress: its record is not complete yet
            try:
                record = json.loads(raw)
            except ValueError:
                continue  # `idv audit verify` reports a damaged line; history shows what is readable
            if isinstance(record, dict):
                yield record


class VerificationHistory:
    def __init__(self, data_dir: Path, settings: HistorySettings, audit: AuditLog,
                 display_names: Callable[[], Mapping[str, str]], clock: Callable[[], float] = time.time):
        self._data_dir = data_dir
        self._settings = settings
        self._audit = audit
        self._display_names = display_names
        self._clock = clock

    @property
    def enabled(self) -> bool:
        return self._settings.enabled

    def for_identity(self, id_key: str, viewer: str, via: str) -> History:
        """The attempts against `id_key` (keyed hash of an identity just proven by a PASS), newest first.
        The viewing itself is audited (who asked, for whom, how), never shown in the history."""
        if not self._settings.enabled:
            raise HistoryDisabled("the operator has turned the verification history off")
        since = self._clock() - self._settings.window_days * _DAY
        names = self._display_names()
        entries = []
        for path in audit_files(self._data_dir):
            for record in _records(path):
                if record.get("event") not in _ATTEMPTS or record.get("id_key") != id_key:
                    continue
                when = record.get("ts")
                if not isinstance(when, (int, float)) or when < since:
                    continue
                caller = str(record.get("caller", ""))
                entries.append(HistoryEntry(float(when), names.get(caller, caller), str(record.get("purpose", "")),
                                            str(record.get("verdict", ""))))
        entries.sort(key=lambda e: e.time, reverse=True)
        self._audit.append({"event": "history_viewed", "request_id": str(uuid.uuid4()), "caller": viewer,
                            "id_key": id_key, "via": via, "entries": len(entries)})
        return History(tuple(entries), self._settings.window_days)
