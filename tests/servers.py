"""Real PostgreSQL and Redis servers for the tests.

The servers named by IDV_TEST_POSTGRES_DSN / IDV_TEST_REDIS_URL when set (CI passes
its own), otherwise private instances started here from the locally installed server
binaries on free ports in temp directories, and removed afterwards. Each test gets
its own PostgreSQL schema and Redis key prefix, dropped after it, so shared servers
stay clean and parallel runs do not collide.

Tests that must stop a server (fail-closed, recovery) always use a private instance:
stopping the machine's shared server is not a test's business.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

POSTGRES_ENV = "IDV_TEST_POSTGRES_DSN"
REDIS_ENV = "IDV_TEST_REDIS_URL"
_INSTALL_POSTGRES = (f"PostgreSQL is needed: set {POSTGRES_ENV}=postgresql://user@host:port/db, or install the "
                     "server binaries (initdb, pg_ctl; Debian/Ubuntu: apt-get install postgresql)")
_INSTALL_REDIS = (f"Redis is needed: set {REDIS_ENV}=redis://host:port/0, or install redis-server "
                  "(Debian/Ubuntu: apt-get install redis-server)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postgres_bin(name: str) -> str | None:
    candidates = [shutil.which(name)]
    pg_config = shutil.which("pg_config")
    if pg_config:
        bindir = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout.strip()
        candidates.append(os.path.join(bindir, name))
    candidates += sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


class PrivatePostgres:
    """A throwaway PostgreSQL cluster (trust auth, no fsync) that a test may stop and start."""

    def __init__(self) -> None:
        self._initdb, self._pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
        if not (self._initdb and self._pg_ctl):
            pytest.fail(_INSTALL_POSTGRES)
        # PostgreSQL refuses to run as root: run its binaries as the postgres user then.
        self._as: list[str] = []
        self._owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._owner = pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail("running as root, PostgreSQL needs a 'postgres' user to run as; " + _INSTALL_POSTGRES)
            self._as = ["runuser", "-u", "postgres", "--"]
        self.root = Path(tempfile.mkdtemp(prefix="idv-pg-"))
        if self._owner is not None:
            os.chown(self.root, self._owner.pw_uid, self._owner.pw_gid)
        self.data = self.root / "data"
        self.port = free_port()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._run([self._initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                   "--no-sync", "--no-instructions"])
        self.start()

    def _run(self, args: list[str], timeout: float = 60) -> None:
        done = subprocess.run(self._as + args, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed: {done.stderr.strip() or done.stdout.strip()}")

    def start(self) -> None:
        # fsync off is safe against a killed server (the OS keeps the writes); synchronous_commit
        # stays on, else an immediate stop would lose recent commits and fake a data-loss bug.
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c full_page_writes=off")
        self._run([self._pg_ctl, "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "30",
                   "-o", options, "start"])

    def stop(self, mode: str = "immediate") -> None:
        """immediate: like a crash (connections cut at once); fast: a clean shutdown."""
        self._run([self._pg_ctl, "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop"])

    def remove(self) -> None:
        try:
            self.stop("immediate")
        except Exception:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    """A throwaway redis-server (no persistence) that a test may stop and start."""

    def __init__(self) -> None:
        self._binary = shutil.which("redis-server")
        if self._binary is None:
            pytest.fail(_INSTALL_REDIS)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self._process = subprocess.Popen(
            [self._binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(10)
            self._process = None

    def remove(self) -> None:
        self.stop()


def _drop_schema(dsn: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _delete_prefix(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    configured = os.environ.get(POSTGRES_ENV)
    if configured:
        yield configured
        return
    server = PrivatePostgres()
    try:
        yield server.dsn
    finally:
        server.remove()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    configured = os.environ.get(REDIS_ENV)
    if configured:
        yield configured
        return
    server = PrivateRedis()
    try:
        yield server.url
    finally:
        server.remove()


@pytest.fixture()
def pg_schema(postgres_dsn: str) -> Iterator[str]:
    """A schema of its own for one test, dropped afterwards."""
    schema = f"idv_test_{os.getpid()}_{secrets.token_hex(4)}"
    yield schema
    _drop_schema(postgres_dsn, schema)


@pytest.fixture()
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of its own for one test; every key under it is deleted afterwards."""
    prefix = f"idvtest:{os.getpid()}:{secrets.token_hex(4)}:"
    yield prefix
    _delete_prefix(redis_url, prefix)


@pytest.fixture()
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture()
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    try:
        yield server
    finally:
        server.remove()
