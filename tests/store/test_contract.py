"""One contract for every reference store backend: the embedded SQLite file and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from idv.errors import StoreUnavailable
from idv.store.base import IdentityRecord, TemplateRecord
from idv.store.postgres import PostgresConfig, PostgresReferenceStore, migrations
from idv.store.sqlite import SqliteReferenceStore

BACKENDS = ["sqlite", "postgresql"]


def _open(backend: str, tmp_path: Path, dsn: str, schema: str, **options):
    if backend == "sqlite":
        return SqliteReferenceStore(tmp_path / "references.sqlite3")
    return PostgresReferenceStore(PostgresConfig(dsn, schema=schema, **options))


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path: Path) -> Iterator[object]:
    if request.param == "postgresql":
        dsn, schema = request.getfixturevalue("postgres_dsn"), request.getfixturevalue("pg_schema")
    else:
        dsn = schema = ""
    opened = _open(request.param, tmp_path, dsn, schema)
    yield opened
    opened.close()


def _record(id_key: str, blobs: tuple[bytes, ...] = (b"\x01" * 40,), name_key: str = "n" * 64) -> IdentityRecord:
    return IdentityRecord(id_key, name_key, tuple(TemplateRecord("fp-1", 1, b) for b in blobs), time.time())


def test_put_get_and_no_silent_overwrite(store) -> None:
    assert store.get("a" * 64) is None
    assert store.put(_record("a" * 64, (b"one", b"two")), replace=False) is True
    got = store.get("a" * 64)
    assert [t.ciphertext for t in got.templates] == [b"one", b"two"]  # order kept
    assert got.name_key == "n" * 64 and got.revision > 0
    assert store.put(_record("a" * 64, (b"three",)), replace=False) is False
    assert [t.ciphertext for t in store.get("a" * 64).templates] == [b"one", b"two"]
    assert store.put(_record("a" * 64, (b"three",), name_key="m" * 64), replace=True) is True
    replaced = store.get("a" * 64)
    assert [t.ciphertext for t in replaced.templates] == [b"three"] and replaced.name_key == "m" * 64
    assert replaced.revision > got.revision
    assert store.count() == 1


def test_changes_since_pages_in_revision_order(store) -> None:
    for i in range(5):
        store.put(_record(f"{i:064d}"), replace=False)
    first = store.changes_since(-1, 3)
    assert [r.id_key for r in first] == [f"{i:064d}" for i in range(3)]
    rest = store.changes_since(first[-1].revision, 100)
    assert [r.id_key for r in rest] == [f"{i:064d}" for i in range(3, 5)]
    assert store.changes_since(rest[-1].revision, 100) == []
    store.put(_record(f"{1:064d}", (b"new",)), replace=True)  # a re-enrolment is a change again
    again = store.changes_since(rest[-1].revision, 100)
    assert [r.id_key for r in again] == [f"{1:064d}"] and again[0].templates[0].ciphertext == b"new"


def test_delete_erases_and_leaves_a_marker_for_the_galleries(store) -> None:
    for i in range(3):
        store.put(_record(f"{i:064d}"), replace=False)
    seen = store.changes_since(-1, 100)[-1].revision
    assert store.delete(f"{1:064d}") is True
    assert store.get(f"{1:064d}") is None and store.count() == 2
    assert store.delete(f"{1:064d}") is False and store.delete("z" * 64) is False
    marker = store.changes_since(seen, 100)
    assert [(r.id_key, r.deleted, r.templates, r.name_key) for r in marker] == [(f"{1:064d}", True, (), "")]
    assert marker[0].revision > seen
    assert [r.id_key for r in store.changes_since(-1, 100) if not r.deleted] == [f"{i:064d}" for i in (0, 2)]
    store.put(_record(f"{1:064d}", (b"again",)), replace=False)  # enrolling again clears the marker
    after = store.changes_since(marker[0].revision, 100)
    assert [(r.id_key, r.deleted) for r in after] == [(f"{1:064d}", False)]
    assert not any(r.deleted for r in store.changes_since(-1, 100))
    # The newest identity deleted: its marker still comes after everything a gallery has seen.
    newest = store.changes_since(-1, 100)[-1]
    assert store.delete(newest.id_key) is True
    assert [(r.id_key, r.deleted) for r in store.changes_since(newest.revision, 100)] == [(newest.id_key, True)]


def test_iter_all_and_replace_templates(store) -> None:
    for i in range(3):
        store.put(_record(f"{i:064d}"), replace=False)
    before = store.get(f"{0:064d}").revision
    store.replace_templates(f"{0:064d}", (TemplateRecord("fp-1", 2, b"re-encrypted"),))
    after = store.get(f"{0:064d}")
    assert after.templates == (TemplateRecord("fp-1", 2, b"re-encrypted"),)
    assert after.revision == before  # same plaintext: galleries need not re-read it
    assert sorted(r.id_key for r in store.iter_all()) == [f"{i:064d}" for i in range(3)]


def test_concurrent_puts_of_one_identity_store_exactly_one(store) -> None:
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: store.put(_record("c" * 64, (bytes([i]),)), replace=False), range(8)))
    assert results.count(True) == 1
    assert store.count() == 1


def test_ping_and_closed_store_fail_closed(store) -> None:
    store.ping()
    store.close()
    for call in (store.ping, lambda: store.get("a" * 64), lambda: store.put(_record("a" * 64), False),
                 lambda: store.changes_since(-1, 10), store.count):
        with pytest.raises(StoreUnavailable) as failure:
            call()
        assert failure.value.reason == "REFERENCE_STORE_UNAVAILABLE"


# ------------------------------------------------------------ PostgreSQL only
def test_migrations_apply_once_and_record_their_version(postgres_dsn: str, pg_schema: str) -> None:
    config = PostgresConfig(postgres_dsn, schema=pg_schema)
    with pytest.raises(StoreUnavailable, match="idv db migrate"):
        PostgresReferenceStore(config, migrate=False)  # nothing applied yet: refuse to run on it
    first = PostgresReferenceStore(config)
    second = PostgresReferenceStore(config)  # a second replica starting: nothing left to apply
    try:
        latest = max(m.version for m in migrations())
        assert first.schema_version() == second.schema_version() == latest
        assert second.migrate() == []
        PostgresReferenceStore(config, migrate=False).close()  # current schema: fine
    finally:
        first.close()
        second.close()


def test_a_locked_table_answers_unavailable_within_the_statement_timeout(postgres_dsn: str, pg_schema: str) -> None:
    store = PostgresReferenceStore(PostgresConfig(postgres_dsn, schema=pg_schema, statement_timeout_ms=300))
    store.put(_record("a" * 64), replace=False)
    locker = psycopg.connect(postgres_dsn, options=f"-c search_path={pg_schema}")
    try:
        locker.execute("LOCK TABLE identities IN ACCESS EXCLUSIVE MODE")  # held until rollback
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            store.get("a" * 64)
        assert time.monotonic() - started < 1.5
    finally:
        locker.rollback()
        locker.close()
    assert store.get("a" * 64) is not None
    store.close()


def test_exhausted_pool_answers_unavailable_within_the_pool_timeout(postgres_dsn: str, pg_schema: str) -> None:
    store = PostgresReferenceStore(PostgresConfig(postgres_dsn, schema=pg_schema, pool_min=1, pool_max=1,
                                                  pool_timeout_seconds=0.3))
    release = threading.Event()
    held = threading.Event()

    def hold() -> None:
        with store._pool.connection():  # a slow request keeps the only connection
            held.set()
            release.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(5)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            store.get("a" * 64)
        assert time.monotonic() - started < 1.0
    finally:
        release.set()
        thread.join()
    store.close()


def test_stopped_server_fails_closed_fast_and_recovers_without_restart(private_postgres) -> None:
    store = PostgresReferenceStore(PostgresConfig(private_postgres.dsn, schema="idv", pool_timeout_seconds=0.5))
    store.put(_record("a" * 64), replace=False)
    private_postgres.stop("immediate")
    for _ in range(3):
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            store.get("a" * 64)
        assert time.monotonic() - started < 2.0
    private_postgres.start()
    deadline = time.monotonic() + 15
    while True:
        try:
            assert store.get("a" * 64) is not None
            break
        except StoreUnavailable as exc:
            assert time.monotonic() < deadline, f"the store did not recover after the server came back: {exc}"
            time.sleep(0.2)
    store.close()


def test_a_deletion_after_a_gallery_caught_up_is_still_seen(store) -> None:
    """A reader that has seen the last enrolment's revision must still read its deletion after it."""
    from idv.store.base import IdentityRecord, TemplateRecord

    store.put(IdentityRecord("only", "n", (TemplateRecord("fp", 1, b"x" * 40),), 1.0), replace=False)
    seen = store.changes_since(-1, 10)[-1].revision
    assert store.delete("only")
    after = store.changes_since(seen, 10)
    assert [(r.id_key, r.deleted) for r in after] == [("only", True)]
