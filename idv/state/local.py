"""Embedded state for a single replica: counters in SQLite (durable), challenges in memory."""

from __future__ import annotations

import hmac
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from idv.errors import StoreUnavailable
from idv.store.sqlite_file import SqliteOptions, check_identity, connect

from idv.state.base import (AttemptState, AttemptTicket, LockoutPolicy, SessionResult, StoredChallenge, StoredCredential,
                            StoredSession)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS attempts (
    key          TEXT PRIMARY KEY,
    consecutive  INTEGER NOT NULL,
    locked_until REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS windows (
    bucket     TEXT NOT NULL,
    start      INTEGER NOT NULL,
    count      INTEGER NOT NULL,
    PRIMARY KEY (bucket, start)
);
CREATE TABLE IF NOT EXISTS window_members (
    bucket TEXT NOT NULL,
    start  INTEGER NOT NULL,
    member TEXT NOT NULL,
    PRIMARY KEY (bucket, start, member)
);
"""


REASON = "STATE_STORE_UNAVAILABLE"


class SqliteCounterStore:
    """Fails loudly: a locked file, a full disk or a file removed under the node is StoreUnavailable
    (UNAVAILABLE, STATE_STORE_UNAVAILABLE) within the busy timeout, never INTERNAL, never a hang."""

    def __init__(self, path: Path, options: SqliteOptions = SqliteOptions()):
        self._path = path
        self._timeout = options.busy_timeout_seconds
        self._lock = threading.Lock()
        try:
            self._db, self._identity = connect(path, options)
            with self._session():
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"counter store {path}: {type(exc).__name__}: {exc}", REASON) from exc

    @contextmanager
    def _session(self, transaction: bool = False) -> Iterator[None]:
        """The connection for one call: bounded wait, file checked, a transaction committed or rolled back."""
        if not self._lock.acquire(timeout=self._timeout):
            raise StoreUnavailable("counter store busy", REASON)
        try:
            check_identity(self._path, self._identity, REASON)
            if transaction:
                self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                if transaction:
                    self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"counter store error: {type(exc).__name__}", REASON) from exc
        finally:
            self._lock.release()

    def _state(self, key: str) -> AttemptState:
        row = self._db.execute("SELECT consecutive, locked_until FROM attempts WHERE key = ?", (key,)).fetchone()
        return AttemptState(row[0], row[1]) if row else AttemptState(0, 0.0)

    def _write(self, key: str, state: AttemptState) -> None:
        self._db.execute(
            "INSERT INTO attempts(key, consecutive, locked_until) VALUES (?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET consecutive = excluded.consecutive, locked_until = excluded.locked_until",
            (key, state.consecutive_failures, state.locked_until),
        )

    def begin_attempt(self, key: str, policy: LockoutPolicy, now: float) -> AttemptTicket:
        with self._session(transaction=True):
            previous = self._state(key)
            if previous.consecutive_failures >= policy.failure_cap or previous.locked_until > now:
                return AttemptTicket(key, previous, False, previous)
            consecutive = previous.consecutive_failures + 1
            lock = policy.lock_for(consecutive)
            state = AttemptState(consecutive, now + lock if lock else previous.locked_until)
            self._write(key, state)
            return AttemptTicket(key, previous, True, state)

    def succeed(self, key: str) -> None:
        with self._session():
            self._db.execute("DELETE FROM attempts WHERE key = ?", (key,))

    def refund(self, ticket: AttemptTicket) -> None:
        if not ticket.granted:
            return
        with self._session(transaction=True):
            current = self._state(ticket.key)
            # Only undo our own increment; other attempts may have counted since.
            restored = AttemptState(max(current.consecutive_failures - 1, 0),
                                    ticket.previous.locked_until if current == ticket.state else current.locked_until)
            self._write(ticket.key, restored)

    def reset(self, key: str) -> None:
        self.succeed(key)

    def peek(self, key: str) -> AttemptState:
        with self._session():
            return self._state(key)

    def hit(self, bucket: str, window_seconds: int, now: float) -> int:
        start = int(now // window_seconds) * window_seconds
        with self._session(transaction=True):
            self._db.execute(
                "INSERT INTO windows(bucket, start, count) VALUES (?, ?, 1) "
                "ON CONFLICT(bucket, start) DO UPDATE SET count = count + 1",
                (bucket, start),
            )
            count = self._db.execute("SELECT count FROM windows WHERE bucket = ? AND start = ?",
                                     (bucket, start)).fetchone()[0]
            self._db.execute("DELETE FROM windows WHERE start < ?", (start - window_seconds,))
        return int(count)

    def add_distinct(self, bucket: str, member: str, window_seconds: int, now: float) -> int:
        start = int(now // window_seconds) * window_seconds
        with self._session(transaction=True):
            self._db.execute("INSERT OR IGNORE INTO window_members(bucket, start, member) VALUES (?, ?, ?)",
                             (bucket, start, member))
            count = self._db.execute("SELECT COUNT(*) FROM window_members WHERE bucket = ? AND start = ?",
                                     (bucket, start)).fetchone()[0]
            self._db.execute("DELETE FROM window_members WHERE start < ?", (start - window_seconds,))
        return int(count)

    def ping(self) -> None:
        """Readiness probes the write path: a write transaction (a lock held elsewhere fails here)."""
        with self._session(transaction=True):
            self._db.execute("INSERT OR REPLACE INTO windows(bucket, start, count) VALUES ('probe', 0, ?)",
                             (int(time.time()),))

    def close(self) -> None:
        with self._lock:
            self._db.close()


class MemoryChallengeStore:
    """One replica's challenges; a restart forgets them (they then fail closed as CHALLENGE_INVALID)."""

    def __init__(self, clock=time.time):
        self._lock = threading.Lock()
        self._items: dict[str, StoredChallenge] = {}
        self._clock = clock

    def put(self, challenge: StoredChallenge) -> None:
        with self._lock:
            now = self._clock()
            for key in [k for k, v in self._items.items() if v.expires_at < now]:
                del self._items[key]
            self._items[challenge.challenge_id] = challenge

    def consume(self, challenge_id: str, caller: str, id_key: str) -> StoredChallenge | None:
        with self._lock:
            challenge = self._items.get(challenge_id)
            if challenge is None or not _bound(challenge, caller, id_key):
                return None
            return self._items.pop(challenge_id)


def _bound(challenge: StoredChallenge, caller: str, id_key: str) -> bool:
    # Both compared in full, in constant time: the time does not say which of the two differed.
    return bool(hmac.compare_digest(challenge.caller.encode(), caller.encode())
                & hmac.compare_digest(challenge.id_key.encode(), id_key.encode()))


class MemorySessionStore:
    """One replica's verification sessions (issue 13); a restart forgets them (they read as unknown)."""

    def __init__(self, clock=time.time):
        self._lock = threading.Lock()
        self._sessions: dict[str, StoredSession] = {}
        self._tokens: dict[str, str] = {}
        self._results: dict[str, SessionResult] = {}
        self._clock = clock

    def _expire(self, now: float) -> None:
        for session_id in [k for k, v in self._sessions.items() if v.expires_at < now]:
            session = self._sessions.pop(session_id)
            self._tokens.pop(session.token_digest, None)
            self._results.pop(session_id, None)

    def put(self, session: StoredSession) -> None:
        with self._lock:
            self._expire(self._clock())
            self._sessions[session.session_id] = session
            self._tokens[session.token_digest] = session.session_id

    def claim(self, token_digest: str) -> StoredSession | None:
        with self._lock:
            session_id = self._tokens.pop(token_digest, None)
            session = self._sessions.get(session_id) if session_id else None
            if session is None or session.capture_expires_at < self._clock():
                return None
            return session

    def finish(self, session_id: str, result: SessionResult) -> None:
        with self._lock:
            if session_id in self._sessions:
                self._results[session_id] = result

    def get(self, session_id: str) -> tuple[StoredSession, SessionResult | None] | None:
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None or session.expires_at < self._clock():
                return None
            return session, self._results.get(session_id)


class MemoryCredentialStore:
    """One replica's check-in credentials (issue 18); a restart forgets them (they read as unknown)."""

    def __init__(self, clock=time.time):
        self._lock = threading.Lock()
        self._items: dict[str, StoredCredential] = {}
        self._clock = clock

    def put(self, credential: StoredCredential) -> None:
        with self._lock:
            now = self._clock()
            for key in [k for k, v in self._items.items() if v.expires_at < now]:
                del self._items[key]
            self._items[credential.code_digest] = credential

    def take(self, code_digest: str) -> StoredCredential | None:
        with self._lock:
            credential = self._items.pop(code_digest, None)
            now = self._clock()
            for key in [k for k, v in self._items.items() if v.expires_at < now]:
                del self._items[key]  # the sealed identity is kept no longer than its code is worth
        if credential is None or credential.expires_at < self._clock():
            return None
        return credential


class MemorySeenFrameStore:
    """One replica's seen-frame digests (issue 14); a restart forgets them, as it forgets challenges
    (a frame can only be replayed usefully with a live challenge, and those die with the process too)."""

    def __init__(self, clock=time.time):
        self._lock = threading.Lock()
        self._expiry: dict[str, float] = {}
        self._clock = clock

    def remember(self, digests: Sequence[str], ttl_seconds: float) -> bool:
        with self._lock:
            now = self._clock()
            if len(self._expiry) > 4096:  # amortised sweep of expired digests
                for key in [k for k, until in self._expiry.items() if until < now]:
                    del self._expiry[key]
            seen = any(self._expiry.get(d, 0.0) >= now for d in digests)
            for digest in digests:
                self._expiry[digest] = now + ttl_seconds
            return seen
