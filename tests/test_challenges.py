"""Active challenges end to end over gRPC, on real clips: issued, bound, used once, actions checked in order."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest

from idv.client import IdvClient
from idv.security.callers import add_caller
from idv.state.base import StoredChallenge
from idv.v1 import verification_pb2 as pb
from idv.v1 import verification_pb2_grpc as pb_grpc
from liveness.video_signals import iter_video_frames
from tests.conftest import ID_SUBJECT_1, ID_SUBJECT_2, start_node

NAME = "王芳"


def clip_frames(testdata: Path, clip: str, start: int, end: int, count: int = 24) -> list[bytes]:
    wanted = set(np.linspace(start, end, count).round().astype(int).tolist())
    frames = []
    for index, frame in iter_video_frames(testdata / "video" / clip):
        if index > end:
            break
        if index in wanted:
            frames.append(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    return frames


@pytest.fixture()
def challenge_node(node_settings, testdata):
    keys = {name: add_caller(node_settings.store.callers_path, name, ["verify:*", "enroll"]) for name in ("a", "b")}
    # Many deliberate failures below: no lockout gets in the way of what is measured.
    node = start_node(node_settings.updated(lockout_after_failures=100, failure_cap=100,
                                            caller_requests_per_minute=10_000))
    with IdvClient(f"127.0.0.1:{node.port}", api_key=keys["a"], retries=0) as client:
        client.enroll(ID_SUBJECT_1, NAME, clip_frames(testdata, "live_d12.mp4", 0, 0, 1))
        client.enroll(ID_SUBJECT_2, NAME, clip_frames(testdata, "live_d3.mp4", 0, 0, 1))
    yield node, keys
    node.stop(0)


def _plant(node, caller: str, id_number: str, actions: tuple[str, ...], ttl: float = 120.0) -> str:
    """A challenge with chosen actions (a real one is random), stored exactly as CreateChallenge stores it."""
    assembled = node.assembled
    challenge = StoredChallenge(f"test-{time.monotonic_ns()}", caller, assembled.service.id_key(id_number),
                                actions, time.time() + ttl)
    assembled.challenge_store.put(challenge)
    return challenge.challenge_id


def _verify(node, key: str, id_number: str, frames: list[bytes], challenge_id: str = "",
            purpose: str = "registration") -> str:
    with IdvClient(f"127.0.0.1:{node.port}", api_key=key, retries=0) as client:
        return client.verify(id_number, NAME, frames, purpose, challenge_id).reason


def test_create_challenge_returns_a_random_one_time_sequence(challenge_node) -> None:
    node, keys = challenge_node
    with IdvClient(f"127.0.0.1:{node.port}", api_key=keys["a"], retries=0) as client:
        issued = [client.create_challenge(ID_SUBJECT_1) for _ in range(20)]
    assert len({c.challenge_id for c in issued}) == 20
    for challenge in issued:
        assert len(challenge.actions) == 3  # always 3 by default (liveness/ACTIONS.md, "Timing")
        assert "BLINK" not in challenge.actions  # measured unreliable: kept out of draws (liveness/ACTIONS.md)
        assert all(a != b for a, b in zip(challenge.actions, challenge.actions[1:]))
        # No action twice: [A, B, A] would fail a genuine user who does A early (the timing rule).
        assert len(set(challenge.actions)) == len(challenge.actions)
        assert 100 < challenge.expires_at_unix - time.time() <= 120
    assert len({c.actions for c in issued}) > 3


def test_registration_requires_a_challenge(challenge_node, testdata) -> None:
    node, keys = challenge_node
    frames = clip_frames(testdata, "live_d12.mp4", 20, 58, 5)
    assert _verify(node, keys["a"], ID_SUBJECT_1, frames) == "CHALLENGE_REQUIRED"
    assert _verify(node, keys["a"], ID_SUBJECT_1, frames, purpose="check_in") == "VERIFIED"


def test_the_default_policy_requires_a_challenge_for_every_purpose(node_settings, testdata) -> None:
    """Issue 14: with the shipped defaults no purpose takes a passive-only burst."""
    from idv.challenges import ChallengePolicy
    from idv.verdicts import Purpose

    assert ChallengePolicy().required_purposes == set(Purpose) and ChallengePolicy().problems() == []
    node = start_node(node_settings.updated(challenge_passive_only_for=()))  # the conftest's exception undone
    try:
        frames = clip_frames(testdata, "live_d12.mp4", 20, 58, 5)
        with IdvClient(f"127.0.0.1:{node.port}", retries=0) as client:
            client.enroll(ID_SUBJECT_1, NAME, clip_frames(testdata, "live_d12.mp4", 0, 0, 1))
            for purpose in ("registration", "licence_renewal", "check_in"):
                assert client.verify(ID_SUBJECT_1, NAME, frames, purpose).reason == "CHALLENGE_REQUIRED", purpose
    finally:
        node.stop(0)


def test_passive_only_must_be_named_explicitly() -> None:
    from idv.challenges import ChallengePolicy
    from idv.config import ConfigError, load_settings

    # Leaving a purpose out of required_for is not enough: passive-only is weaker and must be named.
    assert any("passive_only_for" in p for p in ChallengePolicy(required_for=("REGISTRATION",)).problems())
    with pytest.raises(ConfigError, match="passive_only_for"):
        load_settings(environ={}, overrides={"challenge_required_for": "registration"})
    explicit = ChallengePolicy(passive_only_for=("check_in",))
    assert explicit.problems() == [] and {p.value for p in explicit.required_purposes} == {"REGISTRATION",
                                                                                           "LICENCE_RENEWAL"}
    assert ChallengePolicy(passive_only_for=("CHECKIN",)).problems() != []


@pytest.mark.parametrize(
    "clip, start, end, performed, other",
    [
        ("live_d12.mp4", 20, 105, ("TURN_LEFT", "TURN_RIGHT"), ("TURN_RIGHT", "TURN_LEFT")),
        ("live_d3.mp4", 225, 353, ("NOD", "OPEN_MOUTH"), ("OPEN_MOUTH", "NOD")),
        # The segment d12_turn_left_a: a left turn, no nod (benchmarks/accuracy/action_segments.toml).
        ("live_d12.mp4", 20, 58, ("TURN_LEFT",), ("TURN_LEFT", "NOD")),
    ],
)
def test_performed_actions_pass_and_a_different_challenge_fails(challenge_node, testdata, clip, start, end,
                                                                 performed, other) -> None:
    node, keys = challenge_node
    id_number = ID_SUBJECT_1 if clip == "live_d12.mp4" else ID_SUBJECT_2
    frames = clip_frames(testdata, clip, start, end)
    assert _verify(node, keys["a"], id_number, frames, _plant(node, "a", id_number, performed)) == "VERIFIED"
    assert _verify(node, keys["a"], id_number, frames, _plant(node, "a", id_number, other)) == "CHALLENGE_FAILED"


def test_replayed_expired_cross_identity_and_cross_caller_challenges_fail_alike(challenge_node, testdata) -> None:
    node, keys = challenge_node
    frames = clip_frames(testdata, "live_d12.mp4", 20, 105)
    actions = ("TURN_LEFT", "TURN_RIGHT")
    used = _plant(node, "a", ID_SUBJECT_1, actions)
    assert _verify(node, keys["a"], ID_SUBJECT_1, frames, used) == "VERIFIED"
    cases = {
        "replayed": (keys["a"], ID_SUBJECT_1, used),
        "expired": (keys["a"], ID_SUBJECT_1, _plant(node, "a", ID_SUBJECT_1, actions, ttl=-1)),
        "other identity": (keys["a"], ID_SUBJECT_2, _plant(node, "a", ID_SUBJECT_1, actions)),
        "other caller": (keys["b"], ID_SUBJECT_1, _plant(node, "a", ID_SUBJECT_1, actions)),
        "unknown": (keys["a"], ID_SUBJECT_1, "no-such-challenge"),
    }
    for label, (key, id_number, challenge_id) in cases.items():
        assert _verify(node, key, id_number, frames, challenge_id) == "CHALLENGE_INVALID", label


def test_a_wrong_caller_or_identity_does_not_burn_the_challenge(challenge_node, testdata) -> None:
    node, keys = challenge_node
    frames = clip_frames(testdata, "live_d12.mp4", 20, 105)
    challenge_id = _plant(node, "a", ID_SUBJECT_1, ("TURN_LEFT", "TURN_RIGHT"))
    assert _verify(node, keys["b"], ID_SUBJECT_1, frames, challenge_id) == "CHALLENGE_INVALID"  # saw the id
    assert _verify(node, keys["a"], ID_SUBJECT_2, frames, challenge_id) == "CHALLENGE_INVALID"
    assert _verify(node, keys["a"], ID_SUBJECT_1, frames, challenge_id) == "VERIFIED"  # its owner still can


def test_twenty_concurrent_uses_yield_exactly_one_evaluation(challenge_node, testdata, monkeypatch) -> None:
    node, keys = challenge_node
    pipeline = node.assembled.pipeline
    evaluations = []
    original = pipeline.evaluate

    def counting(frames, claimed, actions, budget, light=None):
        evaluations.append(actions)
        return original(frames, claimed, actions, budget, light=light)

    monkeypatch.setattr(pipeline, "evaluate", counting)
    frames = clip_frames(testdata, "live_d12.mp4", 20, 105, 8)
    challenge_id = _plant(node, "a", ID_SUBJECT_1, ("TURN_LEFT", "TURN_RIGHT"))
    stub = pb_grpc.IdentityVerificationStub(grpc.insecure_channel(f"127.0.0.1:{node.port}"))
    request = pb.VerifyRequest(id_number=ID_SUBJECT_1, name=NAME, purpose=pb.REGISTRATION, frames=frames,
                               challenge_id=challenge_id)

    def attempt(_: int) -> str:
        try:
            response = stub.Verify(request, metadata=(("x-api-key", keys["a"]),), timeout=60)
            return pb.Reason.Name(response.reason)
        except grpc.RpcError as error:
            return error.code().name

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(attempt, range(20)))
    assert len(evaluations) == 1
    invalid = [a for a in answers if a == "CHALLENGE_INVALID"]
    refused = [a for a in answers if a == "RESOURCE_EXHAUSTED"]  # shed by admission control before redeeming
    assert len(invalid) + len(refused) == 19, answers


def test_screen_replay_of_a_live_session_fails(node_settings, testdata) -> None:
    node = start_node(node_settings.updated(challenge_required_for="registration",
                                                 # passive-only named explicitly (weaker; issue 14)
                                                 challenge_passive_only_for="licence_renewal,check_in"))
    try:
        real = clip_frames(testdata, "replay_pair_real.webm", 0, 0, 1)
        with IdvClient(f"127.0.0.1:{node.port}", retries=0) as client:
            client.enroll(ID_SUBJECT_1, NAME, real)
            for start in (0, 150, 300):
                replayed = clip_frames(testdata, "replay_pair_screen.webm", start, start + 100)
                challenge_id = _plant(node, "anonymous", ID_SUBJECT_1, ("TURN_LEFT", "TURN_RIGHT"))
                result = client.verify(ID_SUBJECT_1, NAME, replayed, "registration", challenge_id)
                assert result.verdict == "FAIL", start
    finally:
        node.stop(0)


# What each enrolled person can be seen doing, from the labelled segments
# (benchmarks/accuracy/action_segments.toml): one segment per action, each starting neutral.
_PERFORMABLE = {
    # Forward through the clip: TURN_RIGHT, OPEN_MOUTH, TURN_LEFT (d12_turn_left_open_mouth) is the
    # one 3-action challenge the clip shows (left then right is never drawn: it reads as one movement).
    ID_SUBJECT_1: ("live_d12.mp4", {"TURN_RIGHT": (66, 105), "OPEN_MOUTH": (100, 130), "TURN_LEFT": (150, 182)}),
    # d3's right turn (d3_turn_right_grimace) starts mid-grimace: spliced after another segment it does not
    # read as a turn from a neutral pose (measured), so she is asked only for what she does cleanly.
    ID_SUBJECT_2: ("live_d3.mp4", {"NOD": (225, 295), "OPEN_MOUTH": (288, 353)}),
}


def _perform(testdata, clip: str, segments: dict[str, tuple[int, int]], actions: tuple[str, ...]) -> list[bytes]:
    """The person doing the challenge's actions in its order: each action's own segment, one after the other,
    each in its own prompt's share of the 24 frames (the capture page's schedule)."""
    per_action = 24 // len(actions)
    frames: list[bytes] = []
    for action in actions:
        start, end = segments[action]
        frames += clip_frames(testdata, clip, start, end, per_action)
    return frames


def _real_flow(node, key: str, testdata, id_number: str) -> None:
    clip, segments = _PERFORMABLE[id_number]
    with IdvClient(f"127.0.0.1:{node.port}", api_key=key, retries=0) as client:
        # The clip's segments are played in the challenge's order; liveness checks that the face's
        # track is continuous, so only an order that runs forward through the clip makes one capture.
        for _ in range(600):  # a forward order is about 1 draw in 24: 600 tries fail once in ~10^11 runs
            challenge = client.create_challenge(id_number)
            starts = [segments[a][0] for a in challenge.actions if a in segments]
            if set(challenge.actions) <= set(segments) and starts == sorted(starts):
                break
        else:
            pytest.fail("no performable challenge was drawn in 600 tries")
        frames = _perform(testdata, clip, segments, challenge.actions)
        result = client.verify(id_number, NAME, frames, "registration", challenge.challenge_id)
        assert (result.verdict, result.reason) == ("PASS", "VERIFIED"), challenge.actions
        replay = client.verify(id_number, NAME, frames, "registration", challenge.challenge_id)
        assert replay.reason == "CHALLENGE_INVALID"  # used once


def test_the_real_flow_create_challenge_perform_it_and_pass(challenge_node, testdata) -> None:
    """No planted challenge: CreateChallenge draws the actions (3, the default); the terminal asks again (as
    it would when its user cannot perform one) until the person on the clip has been filmed doing every one
    of them."""
    node, keys = challenge_node
    _real_flow(node, keys["a"], testdata, ID_SUBJECT_1)


def test_the_real_flow_with_two_actions_an_operator_may_choose(node_settings, testdata) -> None:
    """d3 is filmed doing two actions cleanly, not three: the real flow under challenges.min_actions = 2
    (an operator's weaker choice: liveness/ACTIONS.md, "Timing")."""
    node = start_node(node_settings.updated(challenges__min_actions=2, lockout_after_failures=100,
                                            failure_cap=100, caller_requests_per_minute=10_000))
    try:
        with IdvClient(f"127.0.0.1:{node.port}", retries=0) as client:
            client.enroll(ID_SUBJECT_2, NAME, clip_frames(testdata, "live_d3.mp4", 0, 0, 1))
            issued = [client.create_challenge(ID_SUBJECT_2).actions for _ in range(20)]
        assert {len(a) for a in issued} == {2, 3}
        _real_flow(node, "", testdata, ID_SUBJECT_2)
    finally:
        node.stop(0)


def test_passive_only_purposes_are_logged_at_start_a_warning_in_production(node_settings, model_set, caplog) -> None:
    """Issue 14: a purpose allowed without a challenge is weaker; every start says so, loudest in production."""
    import logging

    from idv.assemble import build_service

    with build_service(node_settings, model_set):  # development: creates the node's keys
        pass
    production = node_settings.updated(mode="production", integrity__replay_check=True)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="idv"), build_service(production, model_set):
        pass
    said = [r for r in caplog.records if "passive-only" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING and "CHECK_IN" in said[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="idv"), build_service(node_settings.updated(
            challenge_passive_only_for=()), model_set):
        pass
    assert not [r for r in caplog.records if "passive-only" in r.getMessage()]


def test_no_action_repeats_in_a_challenge_while_enough_actions_can_be_drawn() -> None:
    from idv.challenges import ChallengeIssuer, ChallengePolicy
    from idv.state.local import MemoryChallengeStore
    from liveness.actions import ActionConfig

    issuer = ChallengeIssuer(MemoryChallengeStore(), ChallengePolicy(), ActionConfig())
    drawn = [issuer.issue("caller", "id").actions for _ in range(300)]
    assert all(len(set(actions)) == len(actions) == 3 for actions in drawn)
    assert len(set(drawn)) > 8  # still random over the orders the rules allow
