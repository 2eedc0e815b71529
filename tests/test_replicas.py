"""Two replicas behind one client, sharing one PostgreSQL reference store and one Redis.

Enrol through one replica and verify through the other; a challenge consumed on one
is refused on the other; a lockout earned on one holds on the other; the same face
under a second ID number is refused wherever it is enrolled; and with PostgreSQL
stopped mid-load no request passes, readiness turns NOT_SERVING, and both come back
by themselves when it returns.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from idv.client import IdvClient
from idv.rpc.status import error_info
from tests.conftest import ID_SUBJECT_1, ID_SUBJECT_2, nuaa_frames, nuaa_sequences, refused_start, start_node
from tests.servers import (  # noqa: F401  (fixtures)
    pg_schema,
    postgres_dsn,
    private_postgres,
    redis_prefix,
    redis_url,
)

NAME_1 = "张三"
NAME_2 = "李四"


def _burst(testdata, subject: str, count: int = 4) -> list[bytes]:
    sequence = next(iter(nuaa_sequences(testdata, "live", subject).values()))
    return [p.read_bytes() for p in sequence[: count * 3 : 3]]


def _reference(testdata, subject: str) -> bytes:
    return nuaa_frames(testdata, "print", subject)[0].read_bytes()


def _start_replicas(settings) -> list:
    nodes = []
    try:
        for replica in ("a", "b"):
            # Same data_dir: the replicas share keys (pseudonyms, data keys) and callers;
            # replica_id gives each its own audit log (one hash chain per writer).
            nodes.append(start_node(settings.updated(replica_id=replica).validate()))
    except BaseException:
        for node in nodes:
            node.stop(0)
        raise
    return nodes


@pytest.fixture()
def shared_settings(node_settings, postgres_dsn, pg_schema, redis_url, redis_prefix):
    return node_settings.updated(store=postgres_dsn, postgres_schema=pg_schema, redis_url=redis_url,
                   redis_prefix=redis_prefix, lockout_after_failures=2, lockout_base_seconds=60.0,
                   impersonation_check=True)


@pytest.fixture()
def replicas(shared_settings) -> Iterator[tuple[IdvClient, IdvClient]]:
    nodes = _start_replicas(shared_settings)
    clients = [IdvClient(f"127.0.0.1:{n.port}", timeout=30, retries=0) for n in nodes]
    yield clients[0], clients[1]
    for client in clients:
        client.close()
    for node in nodes:
        node.stop(0)


def test_enrol_on_one_verify_on_the_other_and_one_face_under_two_ids_is_refused(replicas, testdata) -> None:
    a, b = replicas
    a.enroll(ID_SUBJECT_1, NAME_1, [_reference(testdata, "0001")])
    result = b.verify(ID_SUBJECT_1, NAME_1, _burst(testdata, "0001"))
    assert (result.verdict, result.reason) == ("PASS", "VERIFIED")
    # 一人多号: the same person under a second ID number, through the other replica.
    with pytest.raises(grpc.RpcError) as refused:
        b.enroll(ID_SUBJECT_2, NAME_2, [_reference(testdata, "0001")])
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    info = error_info(refused.value)
    assert info.reason == "DUPLICATE_FACE" and dict(info.metadata) == {}
    assert ID_SUBJECT_1 not in refused.value.details()  # never says which identity has the face
    b.enroll(ID_SUBJECT_2, NAME_2, [_reference(testdata, "0004")])  # another person: fine
    assert a.verify(ID_SUBJECT_2, NAME_2, _burst(testdata, "0004")).verdict == "PASS"


def test_a_challenge_consumed_on_one_replica_is_refused_on_the_other(replicas, testdata) -> None:
    a, b = replicas
    a.enroll(ID_SUBJECT_1, NAME_1, [_reference(testdata, "0001")])
    challenge = a.create_challenge(ID_SUBJECT_1)
    first = b.verify(ID_SUBJECT_1, NAME_1, _burst(testdata, "0001", 8), challenge_id=challenge.challenge_id)
    assert first.reason != "CHALLENGE_INVALID"  # issued by a, known to b: it was shared
    replay = a.verify(ID_SUBJECT_1, NAME_1, _burst(testdata, "0001", 8), challenge_id=challenge.challenge_id)
    assert (replay.verdict, replay.reason) == ("FAIL", "CHALLENGE_INVALID")


def test_a_lockout_earned_on_one_replica_holds_on_the_other(replicas, testdata) -> None:
    a, b = replicas
    a.enroll(ID_SUBJECT_1, NAME_1, [_reference(testdata, "0001")])
    for _ in range(2):
        assert a.verify(ID_SUBJECT_1, NAME_1, _burst(testdata, "0002")).reason == "NOT_VERIFIED"
    with pytest.raises(grpc.RpcError) as locked:
        b.verify(ID_SUBJECT_1, NAME_1, _burst(testdata, "0001"))  # even the genuine person waits
    assert locked.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(locked.value).reason == "IDENTITY_LOCKED"


def test_a_deletion_on_one_replica_reaches_the_others_gallery_within_the_stated_bound(shared_settings,
                                                                                        testdata) -> None:
    nodes = _start_replicas(shared_settings)
    try:
        a, b = (IdvClient(f"127.0.0.1:{n.port}", timeout=30, retries=0) for n in nodes)
        a.enroll(ID_SUBJECT_1, NAME_1, [_reference(testdata, "0001")])
        galleries = [n.assembled.screening.gallery for n in nodes]
        _wait_for(lambda: all(g.identities == 1 for g in galleries), 5, "both galleries hold the identity")
        deleted, bound = a.delete_identity(ID_SUBJECT_1)
        assert deleted and bound == shared_settings.gallery.refresh_seconds
        assert galleries[0].identities == 0  # the replica that deleted forgot it before answering
        assert b.verify(ID_SUBJECT_1, NAME_1, _burst(testdata, "0001")).reason == "NOT_VERIFIED"  # store: at once
        took = _wait_for(lambda: galleries[1].identities == 0, bound + 1.0, "the other gallery forgot it")
        assert took <= bound + 0.5
        a.close()
        b.close()
    finally:
        for node in nodes:
            node.stop(0)


def _wait_for(predicate, seconds: float, what: str) -> float:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < seconds, f"{what} within {seconds} s"
        time.sleep(0.1)
    return time.monotonic() - started


def test_postgres_stopped_mid_load_fails_closed_and_both_replicas_recover(node_settings, private_postgres,
                                                                         testdata) -> None:
    settings = node_settings.updated(store=private_postgres.dsn, postgres_schema="idv",
                       store_probe_interval_seconds=0.2, store_probe_failures=2,
                       caller_requests_per_minute=100_000, request_budget_seconds=4.0)
    nodes = _start_replicas(settings)
    clients = [IdvClient(f"127.0.0.1:{n.port}", timeout=10, retries=0) for n in nodes]
    burst = _burst(testdata, "0001", 3)
    results: list[tuple[float, float, str]] = []  # (started, seconds taken, outcome)
    stop_load = threading.Event()

    def load(client: IdvClient) -> None:
        while not stop_load.is_set():
            started = time.monotonic()
            try:
                outcome = client.verify(ID_SUBJECT_1, NAME_1, burst).reason
            except grpc.RpcError as error:
                info = error_info(error)
                outcome = f"{error.code().name}/{info.reason if info else ''}"
            results.append((started, time.monotonic() - started, outcome))

    try:
        clients[0].enroll(ID_SUBJECT_1, NAME_1, [_reference(testdata, "0001")])
        threads = [threading.Thread(target=load, args=(c,)) for c in clients]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        private_postgres.stop("immediate")
        stopped_at = time.monotonic()
        _wait_for(lambda: all(c.health() == "NOT_SERVING" for c in clients), 5, "both replicas NOT_SERVING")
        time.sleep(1.0)
        private_postgres.start()
        restarted_at = time.monotonic()
        _wait_for(lambda: all(c.health() == "SERVING" for c in clients), 15, "both replicas SERVING again")
        _wait_for(lambda: any(s > restarted_at and o == "VERIFIED" for s, _, o in results[:]), 15,
                  "a PASS after recovery")
        stop_load.set()
        for thread in threads:
            thread.join(15)
    finally:
        stop_load.set()
        for client in clients:
            client.close()
        for node in nodes:
            node.stop(0)
    before = [o for s, _, o in results if s + 0.01 < stopped_at]
    during = [(took, o) for s, took, o in results if stopped_at < s and s + took < restarted_at]
    assert "VERIFIED" in before
    assert during, "requests were made while PostgreSQL was down"
    assert all(o == "UNAVAILABLE/REFERENCE_STORE_UNAVAILABLE" for _, o in during), during  # never a PASS
    assert max(took for took, _ in during) < settings.serving.request_budget_seconds  # within the deadline


def test_the_same_face_enrolled_on_two_replicas_at_once_is_stored_once(shared_settings, testdata) -> None:
    """The duplicate check and the put are serialised across replicas: with a slow enrolment on both
    (the window widened to 0.5 s so the race is certain, not lucky), exactly one of the two IDs gets the face."""
    nodes = _start_replicas(shared_settings.updated(gallery_refresh_seconds=30.0))
    try:
        for node in nodes:
            screening = node.assembled.screening
            checked = screening.before_enroll

            def slow_check(id_key, templates, checked=checked):
                answer = checked(id_key, templates)
                time.sleep(0.5)  # another replica's enrolment would land here without the lock
                return answer

            screening.before_enroll = slow_check
        clients = [IdvClient(f"127.0.0.1:{n.port}", timeout=30, retries=0) for n in nodes]
        outcomes: dict[str, str] = {}

        def enrol(client: IdvClient, id_number: str) -> None:
            try:
                client.enroll(id_number, NAME_1, [_reference(testdata, "0001")])
                outcomes[id_number] = "ENROLLED"
            except grpc.RpcError as error:
                outcomes[id_number] = error_info(error).reason

        threads = [threading.Thread(target=enrol, args=(clients[0], ID_SUBJECT_1)),
                   threading.Thread(target=enrol, args=(clients[1], ID_SUBJECT_2))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(outcomes.values()) == ["DUPLICATE_FACE", "ENROLLED"], outcomes
        for client in clients:
            client.close()
    finally:
        for node in nodes:
            node.stop(0)


def test_a_replica_with_other_keys_refuses_to_start_naming_the_key(shared_settings, tmp_path) -> None:
    first = start_node(shared_settings)
    first.stop(0)
    stranger = shared_settings.updated(data_dir=tmp_path / "stranger")  # keys of its own
    refused = refused_start(stranger)
    assert "pseudonymisation key does not match" in str(refused), refused
    # Same pseudonymisation key, another data key: it would answer everybody NOT_VERIFIED.
    (stranger.store.data_dir / "keys" / "pseudonym.key").write_bytes(
        (shared_settings.store.data_dir / "keys" / "pseudonym.key").read_bytes())
    assert "data key(s) [1] do not match" in str(refused_start(stranger))
    (stranger.store.data_dir / "keys" / "data-1.key").write_bytes(
        (shared_settings.store.data_dir / "keys" / "data-1.key").read_bytes())
    start_node(stranger).stop(0)  # the right keys: it starts


def test_a_session_opened_on_one_replica_is_captured_on_the_other_and_read_on_either(
        shared_settings, testdata) -> None:
    """Issue 13: sessions live in the shared state (Redis): any replica creates, receives or answers."""
    import httpx

    from tests.test_challenges import clip_frames

    settings = shared_settings.updated(device_port=0, session_fixed_challenges=True, request_budget_seconds=60.0)
    nodes = _start_replicas(settings)
    try:
        a, b = (IdvClient(f"127.0.0.1:{n.port}", timeout=60, retries=0) for n in nodes)
        a.enroll(ID_SUBJECT_1, NAME_1, clip_frames(testdata, "live_d12.mp4", 0, 0, 1))
        opened = a.create_session(ID_SUBJECT_1, NAME_1, "registration", fixed_actions=("TURN_LEFT", "TURN_RIGHT"))
        frames = clip_frames(testdata, "live_d12.mp4", 20, 105)
        # 40 ms apart: the capture must fit in the time since the session opened (issue 14).
        header = {"timestamps_ms": [40.0 * i for i in range(len(frames))], "sizes": [len(f) for f in frames]}
        body = (__import__("json").dumps(header) + "\n").encode() + b"".join(frames)

        def upload(node) -> httpx.Response:
            return httpx.post(f"http://127.0.0.1:{node.device.port}/v1/capture", content=body, timeout=120,
                              headers={"Authorization": f"Bearer {opened.capture_token}",
                                       "Content-Type": "application/vnd.idv.capture"})

        assert opened.capture_url.startswith(f"http://127.0.0.1:{nodes[0].device.port}/capture/#")
        assert b.session_result(opened.session_id).state == "PENDING"
        judged = upload(nodes[1])
        assert judged.status_code == 200
        # Issue 18: a PASS also carries the token for the person's history (no credential: registration).
        assert judged.json() == {"verdict": "PASS", "reason": "VERIFIED", "history_token": judged.json()["history_token"]}
        assert judged.json()["history_token"].startswith(opened.session_id + ".")
        assert upload(nodes[0]).status_code == 401  # spent, whichever replica sees it next
        for client in (a, b):
            result = client.session_result(opened.session_id)
            assert (result.state, result.verdict, result.reason) == ("COMPLETED", "PASS", "VERIFIED")
        a.close()
        b.close()
    finally:
        for node in nodes:
            node.stop(0)
