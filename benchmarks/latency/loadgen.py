"""Load generators on grpc.aio: closed-loop (fixed concurrency) and open-loop (Poisson arrivals).

Open loop is the honest measure of latency under load: request i is *scheduled*
at t0 + (sum of exponential gaps), sent when the event loop gets there, and its
latency is counted from the scheduled time. A server that stalls therefore
shows the full wait of every request that should have been sent meanwhile
(no coordinated omission). The generator also reports how late it sent
(`send_lag`), so a client that could not keep up is visible, not hidden.

Closed loop (N users, each sending its next request when the last one
answered) is only used to find capacity: the throughput it reaches is what
the node can do at N requests in flight.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from google.rpc import error_details_pb2, status_pb2

from benchmarks.latency.data import with_serial
from benchmarks.latency.stats import summary_dict
from idv.v1 import verification_pb2 as pb
from idv.v1 import verification_pb2_grpc as pb_grpc

_CHANNEL_OPTIONS = [("grpc.max_send_message_length", 16 * 1024 * 1024)]


@dataclass(frozen=True)
class Outcome:
    scheduled: float  # monotonic seconds
    sent: float
    done: float
    status: str  # "OK" or a gRPC status code name, with its ErrorInfo reason: "RESOURCE_EXHAUSTED/OVERLOADED"
    verdict: str  # "PASS"/"FAIL" for OK calls

    @property
    def latency_ms(self) -> float:
        return (self.done - self.scheduled) * 1000.0


def _status_of(error: grpc.aio.AioRpcError) -> str:
    reason = ""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    reason = info.reason
    name = error.code().name
    return f"{name}/{reason}" if reason else name


class _Caller:
    """A few channels used round robin: terminals arrive on many connections, not one HTTP/2 stream set."""

    def __init__(self, target: str, channels: int, request: pb.VerifyRequest, timeout: float):
        self._channels = [grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS) for _ in range(channels)]
        self._stubs = [pb_grpc.IdentityVerificationStub(c) for c in self._channels]
        self._next = 0
        self._request = request
        self._timeout = timeout
        self._nonce = secrets.token_hex(8)  # unique across callers and runs against one node
        self._serials = itertools.count()

    def _fresh_request(self) -> pb.VerifyRequest:
        """This caller's request with byte-unique frames (the node refuses a frame it has seen)."""
        request = pb.VerifyRequest()
        request.CopyFrom(self._request)
        del request.frames[:]
        request.frames.extend(with_serial(list(self._request.frames), f"{self._nonce}-{next(self._serials)}"))
        return request

    async def ready(self) -> None:
        await asyncio.gather(*(c.channel_ready() for c in self._channels))

    async def call(self, scheduled: float) -> Outcome:
        stub = self._stubs[self._next % len(self._stubs)]
        self._next += 1
        sent = time.monotonic()
        try:
            response = await stub.Verify(self._fresh_request(), timeout=self._timeout)
            status, verdict = "OK", pb.Verdict.Name(response.verdict)
        except grpc.aio.AioRpcError as error:
            status, verdict = _status_of(error), ""
        return Outcome(scheduled, sent, time.monotonic(), status, verdict)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._channels))


@dataclass(frozen=True)
class LoadSpec:
    mode: str  # "closed" | "open"
    duration_s: float
    concurrency: int = 1  # closed loop
    rate_rps: float = 0.0  # open loop
    seed: int = 7
    timeout_s: float = 10.0
    channels: int = 4
    # Closed loop keeps going past duration_s until this many calls answered (p99 needs samples),
    # but never past max_duration_s.
    min_requests: int = 0
    max_duration_s: float = 60.0


async def _closed(caller: _Caller, spec: LoadSpec) -> list[Outcome]:
    start = time.monotonic()
    end, hard_end = start + spec.duration_s, start + max(spec.max_duration_s, spec.duration_s)
    outcomes: list[Outcome] = []

    def more() -> bool:
        now = time.monotonic()
        return now < hard_end and (now < end or len(outcomes) < spec.min_requests)

    async def user() -> None:
        while more():
            # Closed loop: the next request is "scheduled" the moment the previous one answered.
            outcomes.append(await caller.call(time.monotonic()))

    await asyncio.gather(*(user() for _ in range(spec.concurrency)))
    return outcomes


async def _open(caller: _Caller, spec: LoadSpec) -> list[Outcome]:
    rng = np.random.default_rng(spec.seed)  # seeded: every run offers the same arrival pattern
    offsets = np.cumsum(rng.exponential(1.0 / spec.rate_rps, size=int(spec.rate_rps * spec.duration_s * 2) + 16))
    offsets = offsets[offsets < spec.duration_s]
    t0 = time.monotonic() + 0.05
    tasks = []
    for offset in offsets:
        scheduled = t0 + float(offset)
        delay = scheduled - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(caller.call(scheduled)))
    return list(await asyncio.gather(*tasks))


async def run_load(target: str, request: pb.VerifyRequest, spec: LoadSpec) -> list[Outcome]:
    caller = _Caller(target, min(spec.channels, max(spec.concurrency, 1)) if spec.mode == "closed" else spec.channels,
                     request, spec.timeout_s)
    try:
        await caller.ready()
        return await (_closed(caller, spec) if spec.mode == "closed" else _open(caller, spec))
    finally:
        await caller.close()


def summarise(outcomes: list[Outcome], spec: LoadSpec) -> dict[str, Any]:
    """Latency of successful calls from scheduled time; goodput = successful calls / wall time."""
    if not outcomes:
        return {"requests": 0}
    start = min(o.scheduled for o in outcomes)
    end = max(o.done for o in outcomes)
    ok = [o for o in outcomes if o.status == "OK"]
    errors = Counter(o.status for o in outcomes if o.status != "OK")
    wall = max(end - start, 1e-9)
    return {
        "mode": spec.mode,
        "concurrency": spec.concurrency if spec.mode == "closed" else None,
        "offered_rps": round(spec.rate_rps, 3) if spec.mode == "open" else None,
        "duration_s": round(wall, 3),
        "requests": len(outcomes),
        "ok": len(ok),
        "errors": dict(sorted(errors.items())),
        "error_count": sum(errors.values()),
        "verdicts": dict(sorted(Counter(o.verdict for o in ok).items())),
        "throughput_rps": round(len(ok) / wall, 3),
        "latency_ms": summary_dict([o.latency_ms for o in ok]),
        "error_latency_ms": summary_dict([o.latency_ms for o in outcomes if o.status != "OK"]),
        "send_lag_ms": summary_dict([(o.sent - o.scheduled) * 1000.0 for o in outcomes]),
    }
