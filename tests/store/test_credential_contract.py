"""One contract for check-in credentials (issue 18): the in-process store and Redis, driven through
CheckInCredentials, which seals the identity, hands out the code, redeems it once and audits."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from idv.audit import AuditLog, verify_audit_log
from idv.credentials import CheckInCredentials, CredentialInvalid, CredentialSettings, code_digest
from idv.errors import PermissionDenied
from idv.keys import load_audit_key, load_keyring
from idv.state.local import MemoryCredentialStore
from idv.state.redis_state import RedisConfig, RedisCredentialStore, connect
from idv.verdicts import Purpose

ID = "11010519491231002X"
NAME = "阿依古丽·买买提"
ID_KEY = "k" * 64


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self, data: Path, store_for, clock: Clock, settings: CredentialSettings = CredentialSettings()):
        self.data, self.clock, self.store_for = data, clock, store_for
        self.audit = AuditLog(data / "audit.log", load_audit_key(data, create=True))
        self.credentials = self.build(settings)

    def build(self, settings: CredentialSettings) -> CheckInCredentials:
        return CheckInCredentials(self.store_for(self.clock), load_keyring(self.data, create=True), settings,
                                  self.audit, self.clock)

    def issue(self, purpose: Purpose = Purpose.CHECK_IN):
        return self.credentials.issue(ID, NAME, ID_KEY, purpose, "hotel-app", "fmr_1e-4+active", "req-verify-1")

    def records(self) -> list[dict]:
        return [json.loads(line) for line in (self.data / "audit.log").read_text().splitlines()]


@pytest.fixture(params=["local", "redis"])
def harness(request, tmp_path: Path) -> Iterator[Harness]:
    data = tmp_path / "data"
    if request.param == "local":
        made = Harness(data, lambda clock: MemoryCredentialStore(clock), Clock())
        yield made
        made.audit.close()
        return
    config = RedisConfig(request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix"))
    client = connect(config)
    made = Harness(data, lambda clock: RedisCredentialStore(client, config, clock), Clock())
    yield made
    made.audit.close()
    client.close()


def test_a_code_is_redeemed_once_of_many_racers_with_what_registration_needs(harness: Harness) -> None:
    issued = harness.issue()
    assert issued.code.startswith("IDVC1.") and len(issued.code) >= 38
    assert issued.code not in repr(issued)
    assert issued.expires_at == pytest.approx(harness.clock.now + 120)

    def attempt(_: int):
        try:
            return harness.credentials.redeem("desk-1", issued.code)
        except CredentialInvalid:
            return None

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(attempt, range(16)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    redeemed = winners[0]
    assert (redeemed.id_number, redeemed.name, redeemed.purpose) == (ID, NAME, Purpose.CHECK_IN)
    assert redeemed.level == "fmr_1e-4+active" and redeemed.verification_request_id == "req-verify-1"
    assert redeemed.verified_at == pytest.approx(harness.clock.now)
    assert ID not in repr(redeemed) and NAME not in repr(redeemed)
    records = harness.records()
    granted = [r for r in records if r["event"] == "credential_redeemed"]
    refused = [r for r in records if r["event"] == "credential_refused"]
    assert len(granted) == 1 and len(refused) == 15
    assert granted[0]["caller"] == "desk-1" and granted[0]["id_key"] == ID_KEY
    assert granted[0]["verification_request_id"] == "req-verify-1" and granted[0]["issuer"] == "hotel-app"
    assert all(ID not in json.dumps(r, ensure_ascii=False) and "买买提" not in json.dumps(r, ensure_ascii=False)
               for r in records)
    assert verify_audit_log(harness.data / "audit.log", load_audit_key(harness.data, create=False)).ok


def test_used_expired_unknown_and_malformed_codes_get_one_answer(harness: Harness) -> None:
    used, expiring = harness.issue(), harness.issue()
    harness.credentials.redeem("desk-1", used.code)
    harness.clock.now += 121
    answers = []
    for code in (used.code, expiring.code, "IDVC1." + "A" * 32, "", "not a code at all <script>", "x" * 5000):
        with pytest.raises(CredentialInvalid) as refused:
            harness.credentials.redeem("desk-1", code)
        answers.append((refused.value.code, refused.value.reason, refused.value.message))
    assert len(set(answers)) == 1 and answers[0][1] == "CREDENTIAL_INVALID"


def test_a_caller_the_operator_did_not_allow_cannot_burn_the_code(harness: Harness) -> None:
    harness.credentials = harness.build(CredentialSettings(redeemers=("desk-1",)))
    issued = harness.issue()
    with pytest.raises(PermissionDenied) as refused:
        harness.credentials.redeem("someone-else", issued.code)
    assert refused.value.reason == "REDEEMER_NOT_ALLOWED"
    assert harness.credentials.redeem("desk-1", issued.code).id_number == ID  # still usable by the desk


def test_a_purpose_the_operator_no_longer_allows_makes_its_codes_worthless(harness: Harness) -> None:
    issued = harness.issue()
    assert harness.credentials.issues_for(Purpose.CHECK_IN)
    assert not harness.credentials.issues_for(Purpose.REGISTRATION) and not harness.credentials.issues_for(None)
    harness.credentials = harness.build(CredentialSettings(purposes=("REGISTRATION",)))
    with pytest.raises(CredentialInvalid):
        harness.credentials.redeem("desk-1", issued.code)


def test_settings_are_checked() -> None:
    assert CredentialSettings().problems() == []
    assert CredentialSettings(purposes=("CHECKOUT",)).problems() == [
        "credentials.purposes names unknown purposes ['CHECKOUT']"]
    assert CredentialSettings(ttl_seconds=3600).problems()


def test_redis_holds_neither_id_number_nor_name_nor_code_and_the_key_expires(
        tmp_path: Path, redis_url: str, redis_prefix: str) -> None:
    config = RedisConfig(redis_url, redis_prefix)
    client = connect(config)
    made = Harness(tmp_path / "data", lambda clock: RedisCredentialStore(client, config, clock), Clock())
    try:
        issued = made.issue()
        raw = redis.Redis.from_url(redis_url)
        keys = list(raw.scan_iter(match=f"{redis_prefix}*"))
        assert keys == [f"{redis_prefix}credential:{code_digest(issued.code)}".encode()]
        dump = b"".join(k + (raw.get(k) or b"") for k in keys)
        for secret in (ID.encode(), NAME.encode(), "买买提".encode(), issued.code.encode()):
            assert secret not in dump
        assert 0 < raw.ttl(keys[0]) <= 120
        made.credentials.redeem("desk-1", issued.code)
        assert list(raw.scan_iter(match=f"{redis_prefix}*")) == []  # gone with the redemption
        raw.close()
    finally:
        made.audit.close()
        client.close()
