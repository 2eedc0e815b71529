"""Shared state for several replicas on Redis: throttling counters, lockouts and one-time challenges.

Every read-modify-write is one Lua script (Redis runs a script atomically), so
replicas racing on one identity count every attempt exactly once, and a challenge
is consumed by a script that checks its caller and identity and deletes it: of any number of
replicas presenting it, one gets it, and only its own caller for its own ID can.

Keys start with the configured prefix, and each carries a TTL so that nothing
lives forever: rate windows expire after two windows, challenges shortly after
their expiry, an identity's failure record `attempt_ttl_seconds` after its last
attempt (or when its lockout ends, if later).

Any Redis error is StoreUnavailable (UNAVAILABLE, STATE_STORE_UNAVAILABLE): without
the counters there is no throttling, so the request is refused, never decided.
"""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from idv.errors import StoreUnavailable
from idv.state.base import (AttemptState, AttemptTicket, LockoutPolicy, SessionResult, StoredChallenge, StoredCredential,
                            StoredSession)

REASON = "STATE_STORE_UNAVAILABLE"

# KEYS[1] attempt hash {c: consecutive failures, l: locked until}
# ARGV now, max_consecutive_failures, base_lockout_seconds, growth, max_lockout_seconds, failure_cap, ttl
_BEGIN_ATTEMPT = """
local now = tonumber(ARGV[1])
local c = tonumber(redis.call('HGET', KEYS[1], 'c') or '0')
local l = tonumber(redis.call('HGET', KEYS[1], 'l') or '0')
if c >= tonumber(ARGV[6]) or l > now then
  return {0, tostring(c), string.format('%.6f', l), tostring(c), string.format('%.6f', l)}
end
local nc = c + 1
local maxf = tonumber(ARGV[2])
local lock = 0
if nc >= maxf then
  lock = math.min(tonumber(ARGV[3]) * tonumber(ARGV[4]) ^ (nc - maxf), tonumber(ARGV[5]))
end
local nl = l
if lock > 0 then nl = now + lock end
local nls = string.format('%.6f', nl)
redis.call('HSET', KEYS[1], 'c', nc, 'l', nls)
redis.call('EXPIRE', KEYS[1], math.ceil(math.max(tonumber(ARGV[7]), lock + 60)))
return {1, tostring(c), string.format('%.6f', l), tostring(nc), nls}
"""

# Undo one reserved attempt; the lock it set is undone only if nothing has counted since.
# KEYS[1] attempt hash; ARGV ticket consecutive, ticket locked-until, previous locked-until
_REFUND = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local c = tonumber(redis.call('HGET', KEYS[1], 'c') or '0')
local l = tonumber(redis.call('HGET', KEYS[1], 'l') or '0')
local nl = l
if c == tonumber(ARGV[1]) and l == tonumber(ARGV[2]) then nl = tonumber(ARGV[3]) end
redis.call('HSET', KEYS[1], 'c', math.max(c - 1, 0), 'l', string.format('%.6f', nl))
return 1
"""

# KEYS[1] window counter; ARGV ttl
_HIT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""

# KEYS[1] window set; ARGV member, ttl
_ADD_DISTINCT = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 and redis.call('TTL', KEYS[1]) < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return redis.call('SCARD', KEYS[1])
"""


# Consume a challenge only for the caller and identity it was issued to (one script: atomic
# across replicas); anyone else leaves it in place. KEYS[1] challenge; ARGV caller, id_key
_CONSUME = """
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local challenge = cjson.decode(raw)
if challenge['caller'] ~= ARGV[1] or challenge['id_key'] ~= ARGV[2] then return false end
redis.call('DEL', KEYS[1])
return raw
"""


@dataclass(frozen=True)
class RedisConfig:
    url: str
    prefix: str = "idv:"
    timeout_seconds: float = 0.5
    attempt_ttl_seconds: float = 30 * 86400.0


def connect(config: RedisConfig) -> redis.Redis:
    return redis.Redis.from_url(
        config.url,
        socket_timeout=config.timeout_seconds,
        socket_connect_timeout=config.timeout_seconds,
        health_check_interval=30,
        # One immediate retry on a broken connection (Redis restarted: the pooled socket is
        # dead). Never on a timeout: the script may have run, and must not count twice.
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        decode_responses=True,
    )


@contextmanager
def _guard() -> Iterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        raise StoreUnavailable(f"shared state store error: {type(exc).__name__}", REASON) from exc


class RedisCounterStore:
    def __init__(self, client: redis.Redis, config: RedisConfig):
        self._redis = client
        self._prefix = config.prefix
        self._attempt_ttl = int(math.ceil(config.attempt_ttl_seconds))
        self._begin = client.register_script(_BEGIN_ATTEMPT)
        self._refund = client.register_script(_REFUND)
        self._hit = client.register_script(_HIT)
        self._add_distinct = client.register_script(_ADD_DISTINCT)

    def _attempt_key(self, key: str) -> str:
        return f"{self._prefix}attempt:{key}"

    def begin_attempt(self, key: str, policy: LockoutPolicy, now: float) -> AttemptTicket:
        with _guard():
            granted, pc, pl, nc, nl = self._begin(
                keys=[self._attempt_key(key)],
                args=[repr(now), policy.max_consecutive_failures, repr(policy.base_lockout_seconds),
                      repr(policy.growth), repr(policy.max_lockout_seconds), policy.failure_cap, self._attempt_ttl],
            )
        previous = AttemptState(int(pc), float(pl))
        return AttemptTicket(key, previous, bool(int(granted)), AttemptState(int(nc), float(nl)))

    def succeed(self, key: str) -> None:
        with _guard():
            self._redis.delete(self._attempt_key(key))

    def refund(self, ticket: AttemptTicket) -> None:
        if not ticket.granted:
            return
        with _guard():
            self._refund(keys=[self._attempt_key(ticket.key)],
                         args=[ticket.state.consecutive_failures, repr(ticket.state.locked_until),
                               repr(ticket.previous.locked_until)])

    def reset(self, key: str) -> None:
        self.succeed(key)

    def peek(self, key: str) -> AttemptState:
        with _guard():
            consecutive, locked = self._redis.hmget(self._attempt_key(key), "c", "l")
        return AttemptState(int(consecutive or 0), float(locked or 0))

    def hit(self, bucket: str, window_seconds: int, now: float) -> int:
        start = int(now // window_seconds) * window_seconds
        with _guard():
            return int(self._hit(keys=[f"{self._prefix}win:{bucket}:{start}"], args=[2 * window_seconds]))

    def add_distinct(self, bucket: str, member: str, window_seconds: int, now: float) -> int:
        start = int(now // window_seconds) * window_seconds
        with _guard():
            return int(self._add_distinct(keys=[f"{self._prefix}set:{bucket}:{start}"],
                                          args=[member, 2 * window_seconds]))

    def ping(self) -> None:
        """Readiness probes the write path (a replica in read-only mode, or out of memory, fails here)."""
        with _guard():
            self._redis.set(f"{self._prefix}probe", "1", px=60_000)

    def close(self) -> None:
        self._redis.close()


class RedisChallengeStore:
    """Challenges as JSON strings with a TTL; consumed by one script (bound check + delete), atomic across replicas."""

    # Kept a little past expiry so a late Verify is refused by the issuer's own expiry check
    # (the same CHALLENGE_INVALID either way), not by a clock race between replicas.
    _GRACE_SECONDS = 5.0

    def __init__(self, client: redis.Redis, config: RedisConfig, clock: Callable[[], float] = time.time):
        self._redis = client
        self._prefix = config.prefix
        self._clock = clock
        self._consume = client.register_script(_CONSUME)

    def _key(self, challenge_id: str) -> str:
        return f"{self._prefix}challenge:{challenge_id}"

    def put(self, challenge: StoredChallenge) -> None:
        ttl_ms = max(int((challenge.expires_at - self._clock() + self._GRACE_SECONDS) * 1000), 1)
        value = json.dumps({"caller": challenge.caller, "id_key": challenge.id_key,
                            "actions": list(challenge.actions), "expires_at": challenge.expires_at,
                            "light": [list(step) for step in challenge.light]})
        with _guard():
            self._redis.set(self._key(challenge.challenge_id), value, px=ttl_ms)

    def consume(self, challenge_id: str, caller: str, id_key: str) -> StoredChallenge | None:
        with _guard():
            raw = self._consume(keys=[self._key(challenge_id)], args=[caller, id_key])
        if not raw:
            return None
        data = json.loads(raw)
        return StoredChallenge(challenge_id, data["caller"], data["id_key"], tuple(data["actions"]),
                               float(data["expires_at"]),
                               tuple((str(c), int(d)) for c, d in data.get("light", [])))


class RedisSessionStore:
    """Verification sessions (issue 13) shared by replicas.

    session:<id> holds the record (JSON, sealed identity base64) until the session expires;
    session-token:<sha256> -> id until the capture window closes, claimed with GETDEL (one
    replica wins); session-result:<id> holds the result with the record's remaining TTL.
    """

    def __init__(self, client: redis.Redis, config: RedisConfig, clock: Callable[[], float] = time.time):
        self._redis = client
        self._prefix = config.prefix
        self._clock = clock

    def _session_key(self, session_id: str) -> str:
        return f"{self._prefix}session:{session_id}"

    def _result_key(self, session_id: str) -> str:
        return f"{self._prefix}session-result:{session_id}"

    def _ttl_ms(self, until: float) -> int:
        return max(int((until - self._clock()) * 1000), 1)

    def put(self, session: StoredSession) -> None:
        value = json.dumps({
            "caller": session.caller, "purpose": session.purpose, "id_key": session.id_key,
            "sealed": base64.b64encode(session.sealed_identity).decode(), "key_id": session.key_id,
            "challenge_id": session.challenge_id, "actions": list(session.actions),
            "token_digest": session.token_digest, "capture_expires_at": session.capture_expires_at,
            "expires_at": session.expires_at,
        })
        with _guard():
            pipe = self._redis.pipeline(transaction=True)
            pipe.set(self._session_key(session.session_id), value, px=self._ttl_ms(session.expires_at))
            pipe.set(f"{self._prefix}session-token:{session.token_digest}", session.session_id,
                     px=self._ttl_ms(session.capture_expires_at))
            pipe.execute()

    def _load(self, session_id: str, raw: bytes | str | None) -> StoredSession | None:
        if raw is None:
            return None
        data = json.loads(raw)
        return StoredSession(session_id, data["caller"], data["purpose"], data["id_key"],
                             base64.b64decode(data["sealed"]), int(data["key_id"]), data["challenge_id"],
                             tuple(data["actions"]), data["token_digest"], float(data["capture_expires_at"]),
                             float(data["expires_at"]))

    def claim(self, token_digest: str) -> StoredSession | None:
        with _guard():
            session_id = self._redis.getdel(f"{self._prefix}session-token:{token_digest}")
            if session_id is None:
                return None
            session_id = session_id.decode() if isinstance(session_id, bytes) else session_id
            session = self._load(session_id, self._redis.get(self._session_key(session_id)))
        if session is None or session.capture_expires_at < self._clock():
            return None
        return session

    def finish(self, session_id: str, result: SessionResult) -> None:
        value = json.dumps({"verdict": result.verdict, "reason": result.reason, "request_id": result.request_id,
                            "refusal": result.refusal,
                            # issue 18
                            "credential": base64.b64encode(result.sealed_credential).decode(),
                            "credential_key_id": result.credential_key_id,
                            "credential_expires_at": result.credential_expires_at,
                            "history_digest": result.history_digest})
        with _guard():
            ttl = self._redis.pttl(self._session_key(session_id))
            if ttl is None or int(ttl) <= 0:
                return  # the session is gone: nobody may read a result any more
            self._redis.set(self._result_key(session_id), value, px=int(ttl))

    def get(self, session_id: str) -> tuple[StoredSession, SessionResult | None] | None:
        with _guard():
            raw_session, raw_result = self._redis.mget(self._session_key(session_id), self._result_key(session_id))
        session = self._load(session_id, raw_session)
        if session is None or session.expires_at < self._clock():
            return None
        result = None
        if raw_result is not None:
            data = json.loads(raw_result)
            result = SessionResult(data["verdict"], data["reason"], data["request_id"], data.get("refusal", ""),
                                   base64.b64decode(data.get("credential", "")), int(data.get("credential_key_id", 0)),
                                   float(data.get("credential_expires_at", 0.0)), data.get("history_digest", ""))
        return session, result


class RedisCredentialStore:
    """Check-in credentials (issue 18) shared by replicas: credential:<sha256 of the code> -> JSON
    (sealed identity base64) with the credential's TTL, taken with GETDEL (one replica wins)."""

    def __init__(self, client: redis.Redis, config: RedisConfig, clock: Callable[[], float] = time.time):
        self._redis = client
        self._prefix = config.prefix
        self._clock = clock

    def _key(self, code_digest: str) -> str:
        return f"{self._prefix}credential:{code_digest}"

    def put(self, credential: StoredCredential) -> None:
        value = json.dumps({
            "purpose": credential.purpose, "issuer": credential.issuer, "id_key": credential.id_key,
            "sealed": base64.b64encode(credential.sealed_identity).decode(), "key_id": credential.key_id,
            "verified_at": credential.verified_at, "level": credential.level, "request_id": credential.request_id,
            "expires_at": credential.expires_at,
        })
        ttl_ms = max(int((credential.expires_at - self._clock()) * 1000), 1)
        with _guard():
            self._redis.set(self._key(credential.code_digest), value, px=ttl_ms)

    def take(self, code_digest: str) -> StoredCredential | None:
        with _guard():
            raw = self._redis.getdel(self._key(code_digest))
        if raw is None:
            return None
        data = json.loads(raw)
        credential = StoredCredential(code_digest, data["purpose"], data["issuer"], data["id_key"],
                                      base64.b64decode(data["sealed"]), int(data["key_id"]),
                                      float(data["verified_at"]), data["level"], data["request_id"],
                                      float(data["expires_at"]))
        return None if credential.expires_at < self._clock() else credential


# Record frame digests; report whether any was already there (one script: atomic across replicas).
# KEYS: one per digest; ARGV[1] ttl in ms.
_REMEMBER = """
local seen = 0
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, '1', 'PX', ARGV[1], 'GET') then seen = 1 end
end
return seen
"""


class RedisSeenFrameStore:
    """Seen-frame digests (issue 14) as short keys with a TTL, shared by every replica."""

    def __init__(self, client: redis.Redis, config: RedisConfig):
        self._redis = client
        self._prefix = config.prefix
        self._remember = client.register_script(_REMEMBER)

    def remember(self, digests: Sequence[str], ttl_seconds: float) -> bool:
        if not digests:
            return False
        keys = [f"{self._prefix}frame:{d}" for d in digests]
        with _guard():
            return bool(self._remember(keys=keys, args=[max(int(ttl_seconds * 1000), 1)]))
