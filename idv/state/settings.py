"""The `[state]` settings section: where replicas share challenges, counters and lockouts."""

from __future__ import annotations

from dataclasses import dataclass

from idv.state.redis_state import RedisConfig


@dataclass(frozen=True)
class StateSettings:
    # Empty: this process keeps them itself (counters in a SQLite file in data_dir, challenges in
    # memory); a redis:// URL shares them between replicas. Defaults are RedisConfig's own.
    redis_url: str = ""
    redis_prefix: str = RedisConfig.prefix
    redis_timeout_seconds: float = RedisConfig.timeout_seconds
    # Failure counts and the failure cap are forgotten this long after an identity's last attempt.
    redis_attempt_ttl_seconds: float = RedisConfig.attempt_ttl_seconds

    @property
    def shared(self) -> bool:
        return bool(self.redis_url)

    def redis(self) -> RedisConfig:
        return RedisConfig(self.redis_url, self.redis_prefix, self.redis_timeout_seconds,
                           self.redis_attempt_ttl_seconds)

    def problems(self) -> list[str]:
        problems: list[str] = []
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            problems.append("state.redis_url must be a redis://, rediss:// or unix:// URL")
        if self.redis_timeout_seconds <= 0 or self.redis_attempt_ttl_seconds < 3600:
            problems.append("state.redis_timeout_seconds must be positive and "
                            "state.redis_attempt_ttl_seconds at least 3600")
        return problems
