"""One contract for verification sessions (issue 13): the in-process store and Redis, driven through
the SessionKeeper that seals the identity, hands out tokens and keeps results."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from idv.keys import load_keyring
from idv.sessions import SessionKeeper, SessionPolicy, SessionState
from idv.state.base import SessionResult
from idv.state.local import MemorySessionStore
from idv.state.redis_state import RedisConfig, RedisSessionStore, connect

ID = "11010519491231002X"
NAME = "阿依古丽·买买提"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["local", "redis"])
def keeper(request, tmp_path: Path) -> Iterator[tuple[SessionKeeper, Clock]]:
    clock = Clock()
    keys = load_keyring(tmp_path / "data", create=True)
    policy = SessionPolicy(result_ttl_seconds=60, frame_count=24, capture_base_url="https://idv.example:8443")
    if request.param == "local":
        yield SessionKeeper(MemorySessionStore(clock), keys, policy, clock), clock
        return
    config = RedisConfig(request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix"))
    client = connect(config)
    yield SessionKeeper(RedisSessionStore(client, config, clock), keys, policy, clock), clock
    client.close()


def _open(keeper: SessionKeeper, clock: Clock, caller: str = "backend", ttl: float = 120.0):
    return keeper.open(caller, "REGISTRATION", ID, NAME, "k" * 64, "challenge-1", ("TURN_LEFT", "NOD"),
                       clock.now + ttl)


def test_a_token_is_claimed_once_of_many_racers_and_unseals_the_identity(keeper) -> None:
    keeper, clock = keeper
    opened = _open(keeper, clock)
    assert opened.capture_url.startswith("https://idv.example:8443/capture/#token=")
    assert ID not in opened.capture_url and "买买提" not in opened.capture_url
    with ThreadPoolExecutor(8) as pool:
        claims = list(pool.map(lambda _: keeper.claim(opened.capture_token), range(16)))
    winners = [c for c in claims if c is not None]
    assert len(winners) == 1
    claimed = winners[0]
    assert (claimed.canonical_id, claimed.name) == (ID, NAME)
    assert claimed.session.caller == "backend" and claimed.session.purpose == "REGISTRATION"
    assert claimed.session.challenge_id == "challenge-1" and claimed.session.actions == ("TURN_LEFT", "NOD")
    assert ID not in repr(claimed) and NAME not in repr(claimed)
    assert keeper.claim(opened.capture_token) is None


def test_unknown_oversized_and_expired_tokens_are_refused(keeper) -> None:
    keeper, clock = keeper
    assert keeper.claim("") is None and keeper.claim(secrets.token_urlsafe(32)) is None
    assert keeper.claim("x" * 4096) is None
    opened = _open(keeper, clock, ttl=5)
    clock.now += 6
    assert keeper.claim(opened.capture_token) is None


def test_states_pending_completed_expired_and_only_the_creator_reads(keeper) -> None:
    keeper, clock = keeper
    first, second = _open(keeper, clock), _open(keeper, clock)
    assert keeper.view("backend", first.session_id, 5).state is SessionState.PENDING
    assert keeper.view("other-backend", first.session_id, 5) is None  # same as unknown
    assert keeper.view("backend", "no-such-session", 5) is None
    keeper.claim(first.capture_token)
    keeper.finish(first.session_id, SessionResult("PASS", "VERIFIED", "req-1"))
    done = keeper.view("backend", first.session_id, 5)
    assert done.state is SessionState.COMPLETED and done.result == SessionResult("PASS", "VERIFIED", "req-1")
    assert keeper.view("backend", first.session_id, 5) == done  # re-readable until the session expires
    keeper.claim(second.capture_token)
    keeper.finish(second.session_id, SessionResult("", "", "", "IDENTITY_LOCKED"))
    assert keeper.view("backend", second.session_id, 5).state is SessionState.REFUSED
    third = _open(keeper, clock, ttl=10)
    clock.now += 16  # capture window and the in-flight grace are over, nobody uploaded
    assert keeper.view("backend", third.session_id, 5).state is SessionState.EXPIRED


def test_sessions_and_results_are_gone_after_the_result_ttl(keeper) -> None:
    keeper, clock = keeper
    opened = _open(keeper, clock, ttl=10)
    keeper.claim(opened.capture_token)
    keeper.finish(opened.session_id, SessionResult("FAIL", "NOT_VERIFIED", "req-2"))
    clock.now += 10 + 60 + 1
    assert keeper.view("backend", opened.session_id, 5) is None


def test_redis_holds_neither_id_number_nor_name_nor_token_and_every_key_expires(
        tmp_path: Path, redis_url: str, redis_prefix: str) -> None:
    config = RedisConfig(redis_url, redis_prefix)
    client = connect(config)
    clock = Clock()
    keeper = SessionKeeper(RedisSessionStore(client, config, clock), load_keyring(tmp_path / "data", create=True),
                           SessionPolicy(60, 24, "http://127.0.0.1:8080"), clock)
    opened = _open(keeper, clock)
    keeper.finish(opened.session_id, SessionResult("PASS", "VERIFIED", "req-3"))
    raw = redis.Redis.from_url(redis_url)
    keys = list(raw.scan_iter(match=f"{redis_prefix}*"))
    assert len(keys) == 3  # session, token index, result
    dump = b"".join(k + (raw.get(k) or b"") for k in keys)
    for secret in (ID.encode(), NAME.encode(), "买买提".encode(), opened.capture_token.encode()):
        assert secret not in dump
    assert all(0 < raw.ttl(k) <= 180 for k in keys)
    raw.close()
    client.close()
