"""Store fixtures: real PostgreSQL and Redis (see tests/servers.py)."""

from tests.servers import (  # noqa: F401  (fixtures)
    pg_schema,
    postgres_dsn,
    private_postgres,
    private_redis,
    redis_prefix,
    redis_url,
)
