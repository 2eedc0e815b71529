"""Reference store on PostgreSQL, shared by several replicas (psycopg 3 and a connection pool).

Fails closed: every database or pool error becomes StoreUnavailable (UNAVAILABLE),
so a request never reaches a verdict without its reference. Every call is bounded
below the request budget: at most `pool_timeout_seconds` waiting for a connection
(a stopped server leaves the pool empty) plus `statement_timeout_ms` per statement,
enforced by the server (a locked or overloaded database). A server process that is
frozen without closing its sockets (SIGSTOP) is not detected until TCP keepalives
give up; see docs/scaling.md.

Schema changes are numbered SQL files in idv/store/migrations, applied in order,
each once, under an advisory lock (replicas starting together do not race).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources

import psycopg
import psycopg_pool

from idv.errors import StoreUnavailable
from idv.store.base import IdentityRecord, TemplateRecord

log = logging.getLogger(__name__)

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_PAGE = 1000


@dataclass(frozen=True)
class PostgresConfig:
    dsn: str
    schema: str = "public"
    pool_min: int = 1
    pool_max: int = 10
    pool_timeout_seconds: float = 1.0
    statement_timeout_ms: int = 1500
    connect_timeout_seconds: int = 2
    # Give up a broken connection's reconnection after this long and grow the pool again on
    # demand: the pool's own backoff would otherwise wait minutes after a long outage.
    reconnect_timeout_seconds: float = 5.0

    def __post_init__(self) -> None:
        if not _SCHEMA_NAME.match(self.schema):
            raise ValueError("postgres schema must be a lower-case SQL identifier")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The migrations shipped with this idv, in order."""
    found = []
    for entry in resources.files("idv.store").joinpath("migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


def _connect_kwargs(config: PostgresConfig) -> dict[str, object]:
    return {
        # Reads need no transaction; writes open one explicitly (conn.transaction()).
        "autocommit": True,
        "application_name": "idv",
        "connect_timeout": config.connect_timeout_seconds,
        # The schema is validated above; statement_timeout bounds every statement server-side.
        "options": f"-c search_path={config.schema} -c statement_timeout={config.statement_timeout_ms}",
        # A peer that vanishes (network partition, host down) is noticed within ~20 s.
        "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 2,
        "tcp_user_timeout": 10_000,
    }


def _problem(exc: BaseException) -> StoreUnavailable:
    # The class name only: server messages can quote statement parameters (keyed hashes, still).
    return StoreUnavailable(f"reference store error: {type(exc).__name__}")


@contextmanager
def _guard() -> Iterator[None]:
    try:
        yield
    except StoreUnavailable:
        raise
    except (psycopg.Error, psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed, OSError) as exc:
        raise _problem(exc) from exc


class PostgresReferenceStore:
    def __init__(self, config: PostgresConfig, migrate: bool = True, require_current: bool = True):
        self._config = config
        self._pool = psycopg_pool.ConnectionPool(
            config.dsn,
            min_size=config.pool_min,
            max_size=config.pool_max,
            timeout=config.pool_timeout_seconds,
            kwargs=_connect_kwargs(config),
            # A connection broken by a server restart is found and replaced at checkout,
            # so recovery does not cost each pooled connection one failed request.
            check=psycopg_pool.ConnectionPool.check_connection,
            reconnect_timeout=config.reconnect_timeout_seconds,
            name="idv-references",
            open=False,
        )
        try:
            with _guard():
                self._pool.open(wait=True, timeout=max(config.connect_timeout_seconds * 2, 5))
            if migrate:
                self.migrate()
            elif require_current:
                self._require_current_schema()
        except BaseException:
            self._pool.close(timeout=1)
            raise

    # ------------------------------------------------------------------ schema
    def _schema_version(self, conn: psycopg.Connection) -> int:
        exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()[0]
        if not exists:
            return 0
        return int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0])

    def migrate(self) -> list[str]:
        """Apply the pending migrations in one transaction; returns the names applied."""
        applied: list[str] = []
        with _guard(), self._pool.connection() as conn:
            with conn.transaction():
                # Long DDL on a big table must not hit the request statement timeout.
                conn.execute("SET LOCAL statement_timeout = 0")
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self._config.schema}")
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('idv.migrate.' || %s))", (self._config.schema,))
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version integer PRIMARY KEY, name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                current = self._schema_version(conn)
                for migration in migrations():
                    if migration.version <= current:
                        continue
                    conn.execute(migration.sql)
                    conn.execute("INSERT INTO schema_migrations(version, name) VALUES (%s, %s)",
                                 (migration.version, migration.name))
                    applied.append(migration.name)
        if applied:
            log.info("reference store migrated", extra={"applied": applied, "schema": self._config.schema})
        return applied

    def _require_current_schema(self) -> None:
        latest = max((m.version for m in migrations()), default=0)
        with _guard(), self._pool.connection() as conn:
            current = self._schema_version(conn)
        if current != latest:
            raise StoreUnavailable(
                f"reference store schema is at version {current}, this idv needs {latest}: run `idv db migrate`")

    def schema_version(self) -> int:
        with _guard(), self._pool.connection() as conn:
            return self._schema_version(conn)

    # ------------------------------------------------------------------ rows
    @staticmethod
    def _records(rows: list[tuple]) -> list[IdentityRecord]:
        """Rows of identities LEFT JOIN templates (ordered by identity, then position) -> records."""
        records: list[IdentityRecord] = []
        current: tuple | None = None
        templates: list[TemplateRecord] = []
        for id_key, name_key, enrolled_at, revision, fingerprint, key_id, blob in rows:
            if current is None or current[0] != id_key:
                if current is not None:
                    records.append(IdentityRecord(current[0], current[1], tuple(templates), current[2], current[3]))
                current, templates = (id_key, name_key, enrolled_at, revision), []
            if fingerprint is not None:
                templates.append(TemplateRecord(fingerprint, int(key_id), bytes(blob)))
        if current is not None:
            records.append(IdentityRecord(current[0], current[1], tuple(templates), current[2], current[3]))
        return records

    _SELECT = ("SELECT i.id_key, i.name_key, i.enrolled_at, i.revision, t.model_fingerprint, t.key_id, t.ciphertext "
               "FROM {source} i LEFT JOIN templates t ON t.id_key = i.id_key ")

    def get(self, id_key: str) -> IdentityRecord | None:
        with _guard(), self._pool.connection() as conn:
            rows = conn.execute(
                self._SELECT.format(source="identities") + "WHERE i.id_key = %s ORDER BY t.position", (id_key,)
            ).fetchall()
        records = self._records(rows)
        return records[0] if records else None

    def put(self, record: IdentityRecord, replace: bool) -> bool:
        with _guard(), self._pool.connection() as conn, conn.transaction():
            # Puts are serialised (per schema) until commit, so revisions become visible in
            # order and a gallery reading "after revision r" never skips a slower writer's row.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('idv.put.' || current_schema()))")
            exists = conn.execute("SELECT 1 FROM identities WHERE id_key = %s", (record.id_key,)).fetchone()
            if exists and not replace:
                return False
            conn.execute("DELETE FROM templates WHERE id_key = %s", (record.id_key,))
            conn.execute("DELETE FROM deletions WHERE id_key = %s", (record.id_key,))
            conn.execute(
                "INSERT INTO identities(id_key, name_key, enrolled_at, revision) "
                "VALUES (%s, %s, %s, nextval('identity_revision')) "
                "ON CONFLICT (id_key) DO UPDATE SET name_key = excluded.name_key, "
                "enrolled_at = excluded.enrolled_at, revision = excluded.revision",
                (record.id_key, record.name_key, record.enrolled_at),
            )
            self._insert_templates(conn, record.id_key, record.templates)
        return True

    @staticmethod
    def _insert_templates(conn: psycopg.Connection, id_key: str, templates: tuple[TemplateRecord, ...]) -> None:
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO templates(id_key, position, model_fingerprint, key_id, ciphertext) "
                "VALUES (%s, %s, %s, %s, %s)",
                [(id_key, i, t.model_fingerprint, t.key_id, t.ciphertext) for i, t in enumerate(templates)],
            )

    def replace_templates(self, id_key: str, templates: tuple[TemplateRecord, ...]) -> None:
        # Re-encryption only: the plaintext templates do not change, so neither does the revision.
        with _guard(), self._pool.connection() as conn, conn.transaction():
            conn.execute("DELETE FROM templates WHERE id_key = %s", (id_key,))
            self._insert_templates(conn, id_key, templates)

    def changes_since(self, revision: int, limit: int) -> list[IdentityRecord]:
        source = "(SELECT * FROM identities WHERE revision > %s ORDER BY revision LIMIT %s)"
        with _guard(), self._pool.connection() as conn:
            rows = conn.execute(self._SELECT.format(source=source) + "ORDER BY i.revision, t.position",
                                (revision, limit)).fetchall()
            removed = conn.execute("SELECT id_key, revision FROM deletions WHERE revision > %s "
                                   "ORDER BY revision LIMIT %s", (revision, limit)).fetchall()
        merged = self._records(rows) + [IdentityRecord(k, "", (), 0.0, int(r), deleted=True) for k, r in removed]
        return sorted(merged, key=lambda record: record.revision)[:limit]

    def delete(self, id_key: str) -> bool:
        with _guard(), self._pool.connection() as conn, conn.transaction():
            # The same lock as puts: the marker's revision becomes visible in order.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('idv.put.' || current_schema()))")
            existed = conn.execute("DELETE FROM identities WHERE id_key = %s", (id_key,)).rowcount > 0
            if existed:  # templates go with it (ON DELETE CASCADE)
                conn.execute("INSERT INTO deletions(id_key, revision) VALUES (%s, nextval('identity_revision')) "
                             "ON CONFLICT (id_key) DO UPDATE SET revision = excluded.revision", (id_key,))
        return existed

    def iter_all(self) -> Iterator[IdentityRecord]:
        after = ""
        source = "(SELECT * FROM identities WHERE id_key > %s ORDER BY id_key LIMIT %s)"
        while True:
            with _guard(), self._pool.connection() as conn:
                rows = conn.execute(self._SELECT.format(source=source) + "ORDER BY i.id_key, t.position",
                                    (after, _PAGE)).fetchall()
            records = self._records(rows)
            yield from records
            if len(records) < _PAGE:
                return
            after = records[-1].id_key

    def count(self) -> int:
        with _guard(), self._pool.connection() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM identities").fetchone()[0])

    def get_meta(self, name: str) -> str | None:
        with _guard(), self._pool.connection() as conn:
            row = conn.execute("SELECT value FROM store_meta WHERE name = %s", (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, name: str, value: str, expected: str | None) -> bool:
        with _guard(), self._pool.connection() as conn:
            if expected is None:
                cursor = conn.execute("INSERT INTO store_meta(name, value) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                                      (name, value))
            else:
                cursor = conn.execute("UPDATE store_meta SET value = %s WHERE name = %s AND value = %s",
                                      (value, name, expected))
        return cursor.rowcount == 1

    @contextmanager
    def enrolment_lock(self, timeout_seconds: float) -> Iterator[None]:
        # A session advisory lock on one pooled connection, held while the caller screens and puts
        # through others: every replica on this schema enrols one at a time.
        deadline = time.monotonic() + max(timeout_seconds, 0.0)
        with _guard(), self._pool.connection(timeout=max(timeout_seconds, 0.01)) as conn:
            while not conn.execute("SELECT pg_try_advisory_lock(hashtext('idv.enrol.' || current_schema()))"
                                   ).fetchone()[0]:
                if time.monotonic() >= deadline:
                    raise StoreUnavailable("another enrolment holds the enrolment lock; retry")
                time.sleep(0.01)
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(hashtext('idv.enrol.' || current_schema()))")

    def ping(self) -> None:
        """Readiness probes the write path: a row written and committed (read-only or full fails here)."""
        with _guard(), self._pool.connection() as conn:
            conn.execute("INSERT INTO store_meta(name, value) VALUES ('probe', now()::text) "
                         "ON CONFLICT (name) DO UPDATE SET value = excluded.value")

    def close(self) -> None:
        self._pool.close(timeout=2)
