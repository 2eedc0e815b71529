"""Embedded reference store: one SQLite file, created on first start."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from idv.errors import StoreUnavailable
from idv.store.base import IdentityRecord, TemplateRecord
from idv.store.sqlite_file import SqliteOptions, check_identity, connect

_SCHEMA = """
CREATE TABLE IF NOT EXISTS identities (
    id_key      TEXT PRIMARY KEY,
    name_key    TEXT NOT NULL,
    enrolled_at REAL NOT NULL,
    revision    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS templates (
    id_key            TEXT NOT NULL REFERENCES identities(id_key) ON DELETE CASCADE,
    position          INTEGER NOT NULL,
    model_fingerprint TEXT NOT NULL,
    key_id            INTEGER NOT NULL,
    ciphertext        BLOB NOT NULL,
    PRIMARY KEY (id_key, position)
);
-- Facts about the store itself: its id and the fingerprint of its keys (never the keys).
CREATE TABLE IF NOT EXISTS store_meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- Deletion markers: only the keyed hash and the revision, so other replicas' galleries drop it.
CREATE TABLE IF NOT EXISTS deletions (
    id_key   TEXT PRIMARY KEY,
    revision INTEGER NOT NULL
);
"""

# One writer at a time (BEGIN IMMEDIATE), so max + 1 over puts and deletions is a fresh revision.
_NEXT_REVISION = ("(SELECT COALESCE(MAX(r), 0) + 1 FROM (SELECT MAX(revision) AS r FROM identities "
                  "UNION ALL SELECT MAX(revision) FROM deletions))")


class SqliteReferenceStore:
    def __init__(self, path: Path, options: SqliteOptions = SqliteOptions()):
        self._path = path
        # One connection shared by the worker threads, serialised by a lock:
        # SQLite writes are serialised anyway and reads are sub-millisecond.
        self._lock = threading.Lock()
        self._enrol_mutex = threading.Lock()
        self._enrol_lock_path = path.with_name(path.name + ".enrol-lock")
        self._db, self._identity = connect(path, options)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA secure_delete=ON")  # erased templates are overwritten, not left in free pages
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(identities)")}
            if "revision" not in columns:  # a file from before revisions: every row counts as changed
                self._db.execute("ALTER TABLE identities ADD COLUMN revision INTEGER NOT NULL DEFAULT 0")
            self._db.execute("CREATE INDEX IF NOT EXISTS identities_revision ON identities(revision)")

    def _templates(self, id_key: str) -> tuple[TemplateRecord, ...]:
        rows = self._db.execute(
            "SELECT model_fingerprint, key_id, ciphertext FROM templates WHERE id_key = ? ORDER BY position",
            (id_key,),
        ).fetchall()
        return tuple(TemplateRecord(fp, key_id, bytes(blob)) for fp, key_id, blob in rows)

    def get(self, id_key: str) -> IdentityRecord | None:
        try:
            with self._lock:
                row = self._db.execute(
                    "SELECT name_key, enrolled_at, revision FROM identities WHERE id_key = ?", (id_key,)
                ).fetchone()
                if row is None:
                    return None
                return IdentityRecord(id_key, row[0], self._templates(id_key), row[1], row[2])
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"reference store error: {type(exc).__name__}") from exc

    def _check_file(self) -> None:
        check_identity(self._path, self._identity, "REFERENCE_STORE_UNAVAILABLE")

    def put(self, record: IdentityRecord, replace: bool) -> bool:
        try:
            with self._lock:
                self._check_file()
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    exists = self._db.execute("SELECT 1 FROM identities WHERE id_key = ?", (record.id_key,)).fetchone()
                    if exists and not replace:
                        self._db.execute("ROLLBACK")
                        return False
                    # Taken before the marker goes: a re-enrolment must come after its own deletion.
                    revision = self._db.execute(f"SELECT {_NEXT_REVISION}").fetchone()[0]
                    self._db.execute("DELETE FROM templates WHERE id_key = ?", (record.id_key,))
                    self._db.execute("DELETE FROM deletions WHERE id_key = ?", (record.id_key,))
                    self._db.execute(
                        "INSERT INTO identities(id_key, name_key, enrolled_at, revision) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT(id_key) DO UPDATE SET name_key = excluded.name_key, "
                        "enrolled_at = excluded.enrolled_at, revision = excluded.revision",
                        (record.id_key, record.name_key, record.enrolled_at or time.time(), revision),
                    )
                    self._insert_templates(record.id_key, record.templates)
                    self._db.execute("COMMIT")
                    return True
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"reference store error: {type(exc).__name__}") from exc

    def _insert_templates(self, id_key: str, templates: tuple[TemplateRecord, ...]) -> None:
        self._db.executemany(
            "INSERT INTO templates(id_key, position, model_fingerprint, key_id, ciphertext) VALUES (?, ?, ?, ?, ?)",
            [(id_key, i, t.model_fingerprint, t.key_id, t.ciphertext) for i, t in enumerate(templates)],
        )

    def replace_templates(self, id_key: str, templates: tuple[TemplateRecord, ...]) -> None:
        # Re-encryption only: the plaintext templates do not change, so neither does the revision.
        try:
            with self._lock:
                self._check_file()
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.execute("DELETE FROM templates WHERE id_key = ?", (id_key,))
                    self._insert_templates(id_key, templates)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"reference store error: {type(exc).__name__}") from exc

    def iter_all(self) -> Iterator[IdentityRecord]:
        try:
            with self._lock:
                rows = self._db.execute(
                    "SELECT id_key, name_key, enrolled_at, revision FROM identities ORDER BY id_key").fetchall()
            for id_key, name_key, enrolled_at, revision in rows:
                with self._lock:
                    templates = self._templates(id_key)
                yield IdentityRecord(id_key, name_key, templates, enrolled_at, revision)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"reference store error: {type(exc).__name__}") from exc

    def changes_since(self, revision: int, limit: int) -> list[IdentityRecord]:
        try:
            with self._lock:
                rows = self._db.execute(
                    "SELECT id_key, name_key, enrolled_at, revision, 0 FROM identities WHERE revision > ? "
                    "UNION ALL SELECT id_key, '', 0, revision, 1 FROM deletions WHERE revision > ? "
                    "ORDER BY revision LIMIT ?", (revision, revision, limit)).fetchall()
                return [IdentityRecord(id_key, "", (), 0.0, rev, deleted=True) if deleted else
                        IdentityRecord(id_key, name_key, self._templates(id_key), enrolled_at, rev)
                        for id_key, name_key, enrolled_at, rev, deleted in rows]
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"reference store error: {type(exc).__name__}") from exc

    def delete(self, id_key: str) -> bool:
        try:
            with self._lock:
                self._check_file()
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    # Taken before the row goes: the marker must come after the identity's own revision.
                    revision = self._db.execute(f"SELECT {_NEXT_REVISION}").fetchone()[0]
                    existed = self._db.execute("DELETE FROM identities WHERE id_key = ?", (id_key,)).rowcount > 0
                    if existed:  # templates go with it (ON DELETE CASCADE)
                        self._db.execute("INSERT OR REPLACE INTO deletions(id_key, revision) VALUES (?, ?)",
                                         (id_key, revision))
                    self._db.execute("COMMIT")
                    return existed
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"reference store error: {type(exc).__name__}") from exc

    def count(self) -> int:
        try:
            with self._lock:
                return int(self._db.execute("SELECT COUNT(*) FROM identities").fetchone()[0])
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"reference store error: {type(exc).__name__}") from exc

    def get_meta(self, name: str) -> str | None:
        try:
            with self._lock:
                row = self._db.execute("SELECT value FROM store_meta WHERE name = ?", (name,)).fetchone()
            return None if row is None else str(row[0])
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"reference store error: {type(exc).__name__}") from exc

    def set_meta(self, name: str, value: str, expected: str | None) -> bool:
        try:
            with self._lock:
                if expected is None:
                    cursor = self._db.execute("INSERT OR IGNORE INTO store_meta(name, value) VALUES (?, ?)",
                                              (name, value))
                else:
                    cursor = self._db.execute("UPDATE store_meta SET value = ? WHERE name = ? AND value = ?",
                                              (value, name, expected))
                return cursor.rowcount == 1
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"reference store error: {type(exc).__name__}") from exc

    @contextmanager
    def enrolment_lock(self, timeout_seconds: float) -> Iterator[None]:
        # A lock file beside the database, not a SQLite write transaction: the put inside the
        # section takes SQLite's write lock itself, and a transaction held open on another
        # connection would block it. flock serialises processes, the mutex this process's threads.
        deadline = time.monotonic() + max(timeout_seconds, 0.0)
        if not self._enrol_mutex.acquire(timeout=max(timeout_seconds, 0.0)):
            raise StoreUnavailable("another enrolment holds the enrolment lock; retry")
        try:
            fd = os.open(self._enrol_lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            raise StoreUnavailable("another enrolment holds the enrolment lock; retry") from None
                        time.sleep(0.01)
                try:
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        finally:
            self._enrol_mutex.release()

    def ping(self) -> None:
        """Readiness: the file is still ours, and a write commits (a locked or full disk fails here)."""
        try:
            with self._lock:
                self._check_file()
                self._db.execute("INSERT INTO store_meta(name, value) VALUES ('probe', ?) "
                                 "ON CONFLICT(name) DO UPDATE SET value = excluded.value", (repr(time.time()),))
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"reference store does not answer: {type(exc).__name__}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()
