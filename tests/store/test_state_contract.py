"""One contract for shared state (throttling counters, lockouts, one-time challenges): the embedded
single-replica implementation and Redis."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from idv.errors import StoreUnavailable
from idv.state.base import LockoutPolicy, StoredChallenge
from idv.state.local import MemoryChallengeStore, SqliteCounterStore
from idv.state.redis_state import RedisChallengeStore, RedisConfig, RedisCounterStore, connect

POLICY = LockoutPolicy(max_consecutive_failures=3, base_lockout_seconds=30, failure_cap=6)


@pytest.fixture(params=["local", "redis"])
def state(request, tmp_path: Path) -> Iterator[tuple[object, object]]:
    if request.param == "local":
        counters = SqliteCounterStore(tmp_path / "counters.sqlite3")
        yield counters, MemoryChallengeStore()
        counters.close()
        return
    config = RedisConfig(request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix"))
    client = connect(config)
    yield RedisCounterStore(client, config), RedisChallengeStore(client, config)
    client.close()


def test_failures_lock_then_cap(state) -> None:
    counters, _ = state
    now = 1_000_000.0
    for expected in (1, 2):
        ticket = counters.begin_attempt("id:x", POLICY, now)
        assert ticket.granted and ticket.state.consecutive_failures == expected and ticket.state.locked_until == 0
    third = counters.begin_attempt("id:x", POLICY, now)
    assert third.granted and third.state.locked_until == pytest.approx(now + 30)
    refused = counters.begin_attempt("id:x", POLICY, now + 29)
    assert not refused.granted and refused.state.locked_until == pytest.approx(now + 30)
    fourth = counters.begin_attempt("id:x", POLICY, now + 31)
    assert fourth.granted and fourth.state.locked_until == pytest.approx(now + 31 + 60)  # doubled
    counters.succeed("id:x")
    assert counters.begin_attempt("id:x", POLICY, now + 32).state.consecutive_failures == 1


def test_refund_gives_back_exactly_its_own_attempt(state) -> None:
    counters, _ = state
    now = 2_000_000.0
    counters.begin_attempt("id:y", POLICY, now)
    counters.begin_attempt("id:y", POLICY, now)
    third = counters.begin_attempt("id:y", POLICY, now)  # this one set the lock
    counters.refund(third)  # ...and was neutral (no face): the lock goes with it
    again = counters.begin_attempt("id:y", POLICY, now + 1)
    assert again.granted and again.state.consecutive_failures == 3
    counters.reset("id:y")
    assert counters.begin_attempt("id:y", POLICY, now + 2).previous.consecutive_failures == 0


def test_parallel_attempts_cannot_run_past_the_limit(state) -> None:
    counters, _ = state
    with ThreadPoolExecutor(8) as pool:
        tickets = list(pool.map(lambda _: counters.begin_attempt("id:z", POLICY, 3_000_000.0), range(20)))
    assert sum(t.granted for t in tickets) == POLICY.max_consecutive_failures


def test_windows_count_and_distinct_members(state) -> None:
    counters, _ = state
    assert [counters.hit("rate:c", 60, 120.0 + i) for i in range(3)] == [1, 2, 3]
    assert counters.hit("rate:c", 60, 180.0) == 1  # next window
    assert counters.add_distinct("ids:c", "a", 3600, 10.0) == 1
    assert counters.add_distinct("ids:c", "a", 3600, 11.0) == 1
    assert counters.add_distinct("ids:c", "b", 3600, 12.0) == 2


def test_a_challenge_is_consumed_once_of_many_racers(state) -> None:
    _, challenges = state
    import time

    challenges.put(StoredChallenge("ch-1", "terminal", "k" * 64, ("BLINK", "NOD"), time.time() + 60))
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: challenges.consume("ch-1", "terminal", "k" * 64), range(16)))
    winners = [g for g in got if g is not None]
    assert len(winners) == 1
    assert winners[0] == StoredChallenge("ch-1", "terminal", "k" * 64, ("BLINK", "NOD"), winners[0].expires_at)
    assert challenges.consume("ch-1", "terminal", "k" * 64) is None
    assert challenges.consume("never-issued", "terminal", "k" * 64) is None


def test_a_wrong_caller_or_identity_cannot_burn_a_challenge(state) -> None:
    _, challenges = state
    import time

    challenges.put(StoredChallenge("ch-2", "terminal", "k" * 64, ("NOD",), time.time() + 60))
    assert challenges.consume("ch-2", "eavesdropper", "k" * 64) is None
    assert challenges.consume("ch-2", "terminal", "j" * 64) is None
    assert challenges.consume("ch-2", "terminal", "k" * 64).actions == ("NOD",)  # still there for its owner


# ------------------------------------------------------------------ Redis only
def test_every_redis_key_is_prefixed_and_expires(redis_url: str, redis_prefix: str) -> None:
    import time

    config = RedisConfig(redis_url, redis_prefix, attempt_ttl_seconds=7200)
    client = connect(config)
    counters, challenges = RedisCounterStore(client, config), RedisChallengeStore(client, config)
    now = time.time()
    counters.begin_attempt("id:x", POLICY, now)
    counters.hit("rate:c", 60, now)
    counters.add_distinct("ids:c", "a", 3600, now)
    challenges.put(StoredChallenge("ch-2", "terminal", "k" * 64, ("BLINK",), now + 60))
    raw = redis.Redis.from_url(redis_url)
    keys = list(raw.scan_iter(match=f"{redis_prefix}*"))
    assert len(keys) == 4
    ttls = {k.decode()[len(redis_prefix):].split(":")[0]: raw.ttl(k) for k in keys}
    assert 7000 < ttls["attempt"] <= 7200
    assert 0 < ttls["win"] <= 120 and 0 < ttls["set"] <= 7200 and 0 < ttls["challenge"] <= 66
    raw.close()
    client.close()


def test_redis_down_fails_closed_and_recovers(private_redis) -> None:
    config = RedisConfig(private_redis.url, "idv:", timeout_seconds=0.3)
    client = connect(config)
    counters, challenges = RedisCounterStore(client, config), RedisChallengeStore(client, config)
    counters.ping()
    private_redis.stop()
    for call in (counters.ping, lambda: counters.begin_attempt("id:x", POLICY, 1.0),
                 lambda: counters.hit("rate:c", 60, 1.0), lambda: challenges.consume("ch", "c", "k")):
        with pytest.raises(StoreUnavailable) as failure:
            call()
        assert failure.value.reason == "STATE_STORE_UNAVAILABLE"
    private_redis.start()
    counters.ping()  # the dead pooled connection is replaced on the first call
    assert counters.begin_attempt("id:x", POLICY, 1.0).granted
    client.close()
