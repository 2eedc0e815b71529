"""The `[store]` settings section: where references, keys and the audit log live."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from idv.store.postgres import PostgresConfig


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("idv"))


@dataclass(frozen=True)
class StoreSettings:
    data_dir: Path = field(default_factory=default_data_dir)
    url: str = "sqlite"  # sqlite (file in data_dir) | postgresql://...
    # Replicas sharing a data_dir each need their own audit log (one hash chain per writer):
    # a non-empty replica_id writes <data_dir>/audit-<replica_id>.log and is named in the logs.
    replica_id: str = ""
    # PostgreSQL (url = postgresql://...): tables live in this schema, created if missing.
    # The defaults are PostgresConfig's own, so each lives once.
    postgres_schema: str = PostgresConfig.schema
    postgres_pool_min: int = PostgresConfig.pool_min
    postgres_pool_max: int = PostgresConfig.pool_max
    postgres_pool_timeout_seconds: float = PostgresConfig.pool_timeout_seconds
    postgres_statement_timeout_ms: int = PostgresConfig.statement_timeout_ms
    postgres_connect_timeout_seconds: int = PostgresConfig.connect_timeout_seconds
    # Apply pending schema migrations on start (else `idv db migrate` must have run).
    postgres_migrate_on_start: bool = True
    # A SQLite file (references, counters) locked by another process is waited for at most this
    # long, then the request answers UNAVAILABLE: kept below serving.request_budget_seconds.
    sqlite_busy_timeout_seconds: float = 1.0
    # Retention: references older than this many days answer REENROLMENT_REQUIRED to a face
    # that matches them (0: kept until deleted; DeleteIdentity erases at any time).
    reference_max_age_days: float = 0.0
    # Readiness: the stores are pinged this often; after this many failures in a row health
    # turns NOT_SERVING, and back to SERVING at the first answer.
    probe_interval_seconds: float = 1.0
    probe_failures: int = 3

    @property
    def kind(self) -> str:
        return "postgresql" if self.url.startswith(("postgresql://", "postgres://")) else self.url

    @property
    def reference_max_age_seconds(self) -> float:
        return self.reference_max_age_days * 86400.0

    @property
    def store_id_path(self) -> Path:
        return self.data_dir / "store.id"

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "references.sqlite3"

    @property
    def counters_path(self) -> Path:
        return self.data_dir / "counters.sqlite3"

    @property
    def audit_path(self) -> Path:
        return self.data_dir / (f"audit-{self.replica_id}.log" if self.replica_id else "audit.log")

    @property
    def callers_path(self) -> Path:
        return self.data_dir / "callers.toml"

    @property
    def terminals_path(self) -> Path:
        """Attested terminals' public keys (issue 14; `idv keys add-terminal`)."""
        return self.data_dir / "terminals.toml"

    def postgres(self) -> PostgresConfig:
        return PostgresConfig(
            dsn=self.url, schema=self.postgres_schema, pool_min=self.postgres_pool_min,
            pool_max=self.postgres_pool_max, pool_timeout_seconds=self.postgres_pool_timeout_seconds,
            statement_timeout_ms=self.postgres_statement_timeout_ms,
            connect_timeout_seconds=self.postgres_connect_timeout_seconds,
        )

    def problems(self) -> list[str]:
        problems: list[str] = []
        if self.kind not in ("sqlite", "postgresql"):
            problems.append("store.url must be 'sqlite' or a postgresql://... DSN")
        if self.replica_id and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.replica_id):
            problems.append("store.replica_id may hold only letters, digits, '_', '.' and '-' (at most 64)")
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", self.postgres_schema):
            problems.append("store.postgres_schema must be a lower-case SQL identifier")
        if not (1 <= self.postgres_pool_min <= self.postgres_pool_max):
            problems.append("postgres pool sizes must satisfy 1 <= postgres_pool_min <= postgres_pool_max")
        if self.postgres_statement_timeout_ms < 1 or self.postgres_pool_timeout_seconds <= 0:
            problems.append("postgres timeouts must be positive")
        if self.postgres_connect_timeout_seconds < 2:
            problems.append("store.postgres_connect_timeout_seconds must be at least 2")
        if self.reference_max_age_days < 0:
            problems.append("store.reference_max_age_days must be 0 (no limit) or positive")
        if self.probe_interval_seconds <= 0 or self.probe_failures < 1:
            problems.append("store.probe_interval_seconds must be positive and store.probe_failures at least 1")
        return problems
