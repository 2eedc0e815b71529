"""A real 24-frame challenge burst: CreateChallenge, then Verify with the frames that perform it.

The 24-frame row of the baseline comparison sends a passive 24-frame burst (the benchmark
nodes accept it without a challenge), so it leaves out what a challenge adds: the FaceMesh
landmarks on every frame and the action check. This row is the whole thing as a terminal
does it. Each call draws a fresh challenge from the node (REGISTRATION needs one), and when the
drawn actions are an order the recorded person performs (live_d12 turns right, opens the mouth,
turns left, each a labelled segment of benchmarks/accuracy/action_segments.toml), sends the
24 frames of that performance, spliced as the capture page samples them (8 per prompt, 300 ms
apart), with the page's timestamps. Draws the clip cannot perform are left to expire, as a
terminal that asks again leaves them. Only the Verify is timed: CreateChallenge is a separate
call before the capture starts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date

import grpc

from benchmarks.latency.data import shared_dir, with_serial
from benchmarks.latency.loadgen import _CHANNEL_OPTIONS, Outcome, _status_of
from idv.identity import make_id_number
from idv.v1 import verification_pb2 as pb
from idv.v1 import verification_pb2_grpc as pb_grpc

CLIP = "live_d12.mp4"
CHALLENGE_ID_NUMBER = make_id_number("110105", date(1985, 6, 1), 7)
CHALLENGE_NAME = "李四"
MAX_DRAWS = 2000


@dataclass(frozen=True)
class ChallengeProbe:
    """The clip's person: a reference frame and, per performable action order, the 24 frames."""

    reference: bytes
    frames_by_order: dict[tuple[str, ...], tuple[bytes, ...]]
    timestamps_ms: tuple[float, ...]


def challenge_probe() -> ChallengeProbe:
    """Frames spliced from the clip's labelled segments, each starting where its label does (jitter 0,
    the attempts benchmarks/results/attacks.json shows passing)."""
    from itertools import permutations

    from benchmarks.accuracy.attacks_eval import (
        CHALLENGE_FRAMES,
        jpeg,
        performable_segments,
        performance,
        read_video,
        stamps,
    )

    _, frames = read_video(shared_dir() / "testdata" / "video" / CLIP)
    spans = performable_segments()[CLIP]
    orders = {}
    for order in permutations(sorted(spans), 3):
        chosen: dict[str, tuple[int, int]] = {}
        previous_start = -1
        for action in order:  # the earliest labelled segment of each action starting after the previous one
            later = [span for span in spans[action] if span[0] > previous_start]
            if not later:
                break
            chosen[action] = later[0]
            previous_start = later[0][0]
        if len(chosen) == len(order):  # the clip shows them in this order
            orders[order] = tuple(jpeg(f) for f in performance(frames, chosen, order, 0))
    if not orders:
        raise RuntimeError(f"{CLIP}: no 3-action order is performable from its labelled segments")
    return ChallengeProbe(jpeg(frames[0]), orders, stamps(CHALLENGE_FRAMES))


class ChallengedCaller:
    """One channel; each call draws challenges until one the clip performs, then times its Verify."""

    def __init__(self, target: str, probe: ChallengeProbe, timeout: float, serial_prefix: str):
        self._channel = grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
        self._stub = pb_grpc.IdentityVerificationStub(self._channel)
        self._probe = probe
        self._timeout = timeout
        self._prefix = serial_prefix
        self._serial = 0
        self.draws = 0

    async def ready(self) -> None:
        await self._channel.channel_ready()

    async def _performable(self) -> tuple[str, tuple[bytes, ...]]:
        request = pb.CreateChallengeRequest(id_number=CHALLENGE_ID_NUMBER, purpose=pb.REGISTRATION)
        for _ in range(MAX_DRAWS):
            self.draws += 1
            response = await self._stub.CreateChallenge(request, timeout=self._timeout)
            order = tuple(pb.Action.Name(a) for a in response.actions)
            if order in self._probe.frames_by_order:
                return response.challenge_id, self._probe.frames_by_order[order]
        raise RuntimeError(f"no performable challenge in {MAX_DRAWS} draws (orders {list(self._probe.frames_by_order)})")

    async def call(self) -> Outcome:
        challenge_id, frames = await self._performable()
        self._serial += 1
        request = pb.VerifyRequest(
            id_number=CHALLENGE_ID_NUMBER, name=CHALLENGE_NAME, purpose=pb.REGISTRATION,
            frames=with_serial(list(frames), f"{self._prefix}-{self._serial}"), challenge_id=challenge_id,
            frame_timestamps_ms=list(self._probe.timestamps_ms))
        sent = time.monotonic()
        try:
            response = await self._stub.Verify(request, timeout=self._timeout)
            status, verdict = "OK", pb.Verdict.Name(response.verdict)
        except grpc.aio.AioRpcError as error:
            status, verdict = _status_of(error), ""
        return Outcome(sent, sent, time.monotonic(), status, verdict)

    async def close(self) -> None:
        await self._channel.close()


def enroll_challenge_reference(target: str, probe: ChallengeProbe) -> None:
    from idv.client import IdvClient

    with IdvClient(target, timeout=60.0, retries=0) as client:
        client.enroll(CHALLENGE_ID_NUMBER, CHALLENGE_NAME, [probe.reference], replace=True)
