"""Sessions that passed (issue 18), in-process and on Redis: the check-in code kept sealed for the
creator until it expires, and the identity the session proved given only to its creator or to the
holder of the session's history token."""

from __future__ import annotations

import secrets

import redis

from idv.credentials import IssuedCredential
from idv.sessions import SessionState
from idv.state.base import SessionResult
from idv.state.redis_state import RedisSessionStore, connect
from tests.store.test_session_contract import ID, NAME, _open, keeper  # noqa: F401 (fixture)


def test_a_passed_session_keeps_its_code_sealed_and_names_its_identity_only_to_its_own(keeper) -> None:  # noqa: F811
    keeper, clock = keeper
    opened = _open(keeper, clock)
    keeper.claim(opened.capture_token)
    code = "IDVC1." + secrets.token_urlsafe(24)
    history_token = f"{opened.session_id}.{secrets.token_urlsafe(24)}"
    keeper.passed(opened.session_id, SessionResult("PASS", "VERIFIED", "req-1"),
                  IssuedCredential(code, clock.now + 120), history_token)
    view = keeper.view("backend", opened.session_id, 5)
    assert view.state is SessionState.COMPLETED and view.credential == IssuedCredential(code, clock.now + 120)
    assert keeper.proven_identity(opened.session_id, caller="backend") == "k" * 64
    assert keeper.proven_identity(opened.session_id, history_token=history_token) == "k" * 64
    assert keeper.proven_identity(opened.session_id, caller="other-backend") is None
    assert keeper.proven_identity(opened.session_id, history_token=history_token + "x") is None
    assert keeper.proven_identity(opened.session_id) is None
    assert keeper.proven_identity("no-such-session", caller="backend") is None
    clock.now += 121  # the code has expired: no longer handed out; the history still works
    assert keeper.view("backend", opened.session_id, 5).credential is None
    assert keeper.proven_identity(opened.session_id, history_token=history_token) == "k" * 64


def test_a_failed_session_proves_nothing(keeper) -> None:  # noqa: F811
    keeper, clock = keeper
    opened = _open(keeper, clock)
    keeper.claim(opened.capture_token)
    keeper.finish(opened.session_id, SessionResult("FAIL", "NOT_VERIFIED", "req-2"))
    assert keeper.proven_identity(opened.session_id, caller="backend") is None
    assert keeper.view("backend", opened.session_id, 5).credential is None


def test_redis_holds_no_code_and_no_history_token(tmp_path, redis_url: str, redis_prefix: str) -> None:
    from idv.keys import load_keyring
    from idv.sessions import SessionKeeper, SessionPolicy
    from idv.state.redis_state import RedisConfig
    from tests.store.test_session_contract import Clock

    config = RedisConfig(redis_url, redis_prefix)
    client = connect(config)
    clock = Clock()
    keeper = SessionKeeper(RedisSessionStore(client, config, clock), load_keyring(tmp_path / "data", create=True),
                           SessionPolicy(60, 24, "http://127.0.0.1:8080"), clock)
    opened = _open(keeper, clock)
    code, history_token = "IDVC1." + secrets.token_urlsafe(24), f"{opened.session_id}.{secrets.token_urlsafe(24)}"
    keeper.passed(opened.session_id, SessionResult("PASS", "VERIFIED", "req-3"),
                  IssuedCredential(code, clock.now + 120), history_token)
    raw = redis.Redis.from_url(redis_url)
    dump = b"".join(k + (raw.get(k) or b"") for k in raw.scan_iter(match=f"{redis_prefix}*"))
    for secret in (ID, NAME, code, history_token.partition(".")[2]):
        assert secret.encode() not in dump
    assert keeper.view("backend", opened.session_id, 5).credential.code == code
    raw.close()
    client.close()
