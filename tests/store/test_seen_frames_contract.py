"""One contract for the seen-frame digests of capture integrity (issue 14): in process and Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from idv.capture_integrity import ReplayGuard, frame_digest_key
from idv.state.local import MemorySeenFrameStore
from idv.state.redis_state import RedisConfig, RedisSeenFrameStore, connect


@pytest.fixture(params=["local", "redis"])
def seen(request) -> Iterator[object]:
    if request.param == "local":
        yield MemorySeenFrameStore()
        return
    config = RedisConfig(request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix"))
    client = connect(config)
    yield RedisSeenFrameStore(client, config)
    client.close()


def test_a_digest_is_seen_once_remembered(seen) -> None:
    assert seen.remember(["a1", "a2"], 60) is False
    assert seen.remember(["b1", "a2"], 60) is True  # one frame of an earlier request
    assert seen.remember(["b2"], 60) is False
    assert seen.remember([], 60) is False


def test_digests_are_forgotten_after_their_lifetime(seen) -> None:
    assert seen.remember(["short"], 0.2) is False
    time.sleep(0.4)
    assert seen.remember(["short"], 60) is False


def test_of_concurrent_requests_with_one_frame_exactly_one_is_first(seen) -> None:
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda i: seen.remember([f"own-{i}", "shared"], 60), range(16)))
    assert answers.count(False) == 1


def test_the_guard_keys_its_digests_and_catches_repeats_within_a_burst(seen) -> None:
    guard = ReplayGuard(seen, frame_digest_key(b"k" * 32), 60)
    other = ReplayGuard(MemorySeenFrameStore(), frame_digest_key(b"j" * 32), 60)
    frame = b"\xff\xd8 a jpeg"
    assert guard.digest(frame) != other.digest(frame)  # keyed: not the frame's plain hash
    assert frame not in guard.digest(frame).encode()
    assert guard.replayed([b"one", b"two"]) is False
    assert guard.replayed([b"three", b"one"]) is True
    assert guard.replayed([b"four", b"four"]) is True  # the same frame twice in one burst


def test_redis_digest_keys_are_prefixed_and_expire(redis_url: str, redis_prefix: str) -> None:
    config = RedisConfig(redis_url, redis_prefix)
    client = connect(config)
    RedisSeenFrameStore(client, config).remember(["d" * 40], 90)
    raw = redis.Redis.from_url(redis_url)
    keys = list(raw.scan_iter(match=f"{redis_prefix}frame:*"))
    assert len(keys) == 1 and 80 < raw.ttl(keys[0]) <= 90
    raw.close()
    client.close()
