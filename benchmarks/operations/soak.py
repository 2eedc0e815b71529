"""Soak: open-loop load at 70% of capacity for 10-60 minutes with abuse mixed in (RELIABILITY.md E5, E6).

    .venv/bin/python -m benchmarks.operations.soak [--minutes 30] [--window 60] [--out FILE]

Mix (by default): 84% genuine Verify, 5% decompression-bomb headers, 5% bad API keys, 5%
replayed challenges, 1% calls cancelled 20 ms after sending. Every window the node's RSS,
open file descriptors and threads are sampled, and the genuine calls' p99 and error rate
computed. Reported: RSS growth after the warm-up window, fd and thread drift, p99 drift
(last window vs first after warm-up), and per abuse class the share answered with its
expected code. Pass criteria (E5/E6): RSS growth < 5% (or < 50 MiB), fds and threads flat,
p99 drift < 10%, every abuse class rejected as expected 100% of the time (a refusal by load
shedding, RESOURCE_EXHAUSTED/OVERLOADED, is counted apart).

Do not commit numbers measured on a shared development machine: the JSON goes to the
temp directory unless --out says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import tempfile
import time
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from benchmarks.latency.data import ID_NUMBER, NAME, probe
from benchmarks.latency.loadgen import _CHANNEL_OPTIONS, _status_of
from benchmarks.latency.stats import summary_dict
from benchmarks.operations.common import pin_process, process_gauges, split_cores, start_node
from idv.client import IdvClient
from idv.security.callers import add_caller
from idv.v1 import verification_pb2 as pb
from idv.v1 import verification_pb2_grpc as pb_grpc

MIX = {"genuine": 0.84, "bomb": 0.05, "bad_key": 0.05, "replay": 0.05, "cancel": 0.01}
EXPECTED = {"genuine": "OK/PASS", "bomb": "INVALID_ARGUMENT/IMAGE_TOO_LARGE", "bad_key": "UNAUTHENTICATED/UNAUTHENTICATED",
            "replay": "OK/CHALLENGE_INVALID", "cancel": "CANCELLED"}


def png_bomb_header(side: int = 60000) -> bytes:
    """A PNG that claims side x side pixels: refused at the header check, never decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@dataclass(frozen=True)
class Result:
    kind: str
    scheduled: float
    done: float
    answer: str  # "OK/<verdict or reason>", "<STATUS>/<reason>", "CANCELLED"


class MixedCaller:
    def __init__(self, target: str, key: str, frames: list[bytes], challenge_id: str, timeout: float):
        self._channels = [grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS) for _ in range(8)]
        self._stubs = [pb_grpc.IdentityVerificationStub(c) for c in self._channels]
        self._n = 0
        self._timeout = timeout
        self._metadata = {"good": (("x-api-key", key),), "bad": (("x-api-key", "idv_not-a-key"),)}
        self._requests = {
            "genuine": pb.VerifyRequest(id_number=ID_NUMBER, name=NAME, purpose=pb.CHECK_IN, frames=frames),
            "bomb": pb.VerifyRequest(id_number=ID_NUMBER, name=NAME, purpose=pb.CHECK_IN,
                                     frames=[png_bomb_header(), frames[0]]),
            "replay": pb.VerifyRequest(id_number=ID_NUMBER, name=NAME, purpose=pb.REGISTRATION, frames=frames,
                                       challenge_id=challenge_id),
        }

    async def call(self, kind: str, scheduled: float) -> Result:
        stub = self._stubs[self._n % len(self._stubs)]
        self._n += 1
        request = self._requests.get(kind, self._requests["genuine"])
        metadata = self._metadata["bad" if kind == "bad_key" else "good"]
        call = stub.Verify(request, timeout=self._timeout, metadata=metadata)
        try:
            if kind == "cancel":
                await asyncio.sleep(0.02)
                call.cancel()
            response = await call
            verdict, reason = pb.Verdict.Name(response.verdict), pb.Reason.Name(response.reason)
            answer = f"OK/{verdict if kind == 'genuine' else reason}"
        except asyncio.CancelledError:
            answer = "CANCELLED"
        except grpc.aio.AioRpcError as error:
            answer = _status_of(error)
        return Result(kind, scheduled, time.monotonic(), answer)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._channels))


async def _soak(caller: MixedCaller, pid: int, rate: float, seconds: float, window: float, seed: int):
    rng = np.random.default_rng(seed)
    kinds, weights = list(MIX), np.array(list(MIX.values()))
    samples: list[dict] = []

    async def sample() -> None:
        while True:
            samples.append({"t": time.monotonic(), **process_gauges(pid)})
            await asyncio.sleep(window)

    sampler = asyncio.create_task(sample())
    t0 = time.monotonic()
    tasks = []
    scheduled = t0
    while scheduled < t0 + seconds:
        scheduled += float(rng.exponential(1.0 / rate))
        delay = scheduled - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
        tasks.append(asyncio.create_task(caller.call(kind, scheduled)))
    results = await asyncio.gather(*tasks)
    samples.append({"t": time.monotonic(), **process_gauges(pid)})
    sampler.cancel()
    return t0, list(results), samples


def analyse(t0: float, results: list[Result], samples: list[dict], window: float) -> dict:
    windows: dict[int, list[Result]] = defaultdict(list)
    for r in results:
        windows[int((r.scheduled - t0) // window)].append(r)
    per_window = []
    for index in sorted(windows):
        genuine = [r for r in windows[index] if r.kind == "genuine"]
        ok = [(r.done - r.scheduled) * 1000 for r in genuine if r.answer.startswith("OK/")]
        per_window.append({"window": index, "requests": len(windows[index]), "genuine_p99_ms": summary_dict(ok).get("p99"),
                           "genuine_error_rate": round(1 - len(ok) / max(len(genuine), 1), 4)})
    by_kind = {}
    for kind in MIX:
        answers = Counter(r.answer for r in results if r.kind == kind)
        total = sum(answers.values())
        shed = answers.get("RESOURCE_EXHAUSTED/OVERLOADED", 0)
        by_kind[kind] = {"sent": total, "answers": dict(answers), "shed": shed,
                         "expected_share": round(answers.get(EXPECTED[kind], 0) / max(total - shed, 1), 4)}
    base = samples[1] if len(samples) > 2 else samples[0]  # after the warm-up window
    last = samples[-1]
    p99s = [w["genuine_p99_ms"] for w in per_window if w["genuine_p99_ms"] is not None]
    first_p99, last_p99 = (p99s[1] if len(p99s) > 2 else p99s[0]), p99s[-1]
    rss_growth = last["rss_mib"] - base["rss_mib"]
    return {
        "windows": per_window, "gauges": samples, "abuse": by_kind,
        "rss_growth_mib": round(rss_growth, 1), "rss_growth_fraction": round(rss_growth / base["rss_mib"], 4),
        "fd_drift": last["fds"] - base["fds"], "thread_drift": last["threads"] - base["threads"],
        "p99_drift_fraction": round((last_p99 - first_p99) / first_p99, 4) if first_p99 else None,
        "checks": {
            "rss_growth_small": rss_growth < 50 or rss_growth / base["rss_mib"] < 0.05,
            "fds_flat": abs(last["fds"] - base["fds"]) <= 2,
            "threads_flat": abs(last["threads"] - base["threads"]) <= 2,
            "p99_drift_below_10pct": first_p99 is not None and abs(last_p99 - first_p99) / first_p99 < 0.10,
            "abuse_rejected_as_expected": all(v["expected_share"] == 1.0 for k, v in by_kind.items() if k != "genuine"),
        },
    }


def run(minutes: float, window: float, load: float, frames: int, timeout: float) -> dict:
    node_cores, load_cores = split_cores()
    os.sched_setaffinity(0, load_cores)
    p = probe()
    data_dir = Path(tempfile.mkdtemp(prefix="idv-soak-"))
    key = add_caller(data_dir / "callers.toml", "soak-terminal", ["verify:*", "enroll"])
    with start_node(data_dir) as node:
        pin_process(node.pid, node_cores)
        with IdvClient(node.target, timeout=30, retries=0, api_key=key) as client:
            client.enroll(ID_NUMBER, NAME, [p.reference])
            challenge = client.create_challenge(ID_NUMBER).challenge_id
            client.verify(ID_NUMBER, NAME, p.frames(frames), "registration", challenge)  # now it is a replay
            capacity = capacity_rps_with_key(node, p, frames, key)
        rate = capacity * load

        async def go():
            caller = MixedCaller(node.target, key, p.frames(frames), challenge, timeout)
            await asyncio.gather(*(c.channel_ready() for c in caller._channels))
            try:
                return await _soak(caller, node.pid, rate, minutes * 60, window, seed=11)
            finally:
                await caller.close()

        t0, results, samples = asyncio.run(go())
        outcome = analyse(t0, results, samples, window)
    outcome.update({"capacity_rps": capacity, "offered_rps": round(rate, 3), "minutes": minutes, "mix": MIX,
                    "node_cores": sorted(node_cores), "load_generator_cores": sorted(load_cores),
                    "note": "measured on this machine; not comparable across machines and not committed"})
    return outcome


def capacity_rps_with_key(node, p, frames: int, key: str) -> float:
    """Capacity without a key configured is measured by the latency loop; with callers, one quick closed loop."""
    async def loop() -> float:
        channel = grpc.aio.insecure_channel(node.target, options=_CHANNEL_OPTIONS)
        stub = pb_grpc.IdentityVerificationStub(channel)
        request = pb.VerifyRequest(id_number=ID_NUMBER, name=NAME, purpose=pb.CHECK_IN, frames=p.frames(frames))
        done = 0
        end = time.monotonic() + 10

        async def user() -> None:
            nonlocal done
            while time.monotonic() < end:
                await stub.Verify(request, timeout=30, metadata=(("x-api-key", key),))
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(user() for _ in range(4)))
        await channel.close()
        return done / (time.monotonic() - started)

    return asyncio.run(loop())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--window", type=float, default=60.0, help="seconds per sample window")
    parser.add_argument("--load", type=float, default=0.7, help="fraction of capacity offered")
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "idv-soak.json")
    args = parser.parse_args(argv)
    result = run(args.minutes, args.window, args.load, args.frames, args.timeout)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"capacity {result['capacity_rps']:.2f} rps, offered {result['offered_rps']} rps for {args.minutes} min")
    print(f"RSS growth {result['rss_growth_mib']} MiB ({result['rss_growth_fraction']:.1%}), fd drift "
          f"{result['fd_drift']}, thread drift {result['thread_drift']}, p99 drift {result['p99_drift_fraction']}")
    for kind, summary in result["abuse"].items():
        print(f"  {kind:8s} sent {summary['sent']:6d}  expected {EXPECTED[kind]:35s} share {summary['expected_share']}"
              f"  shed {summary['shed']}  answers {summary['answers']}")
    print(f"checks {result['checks']}\nwritten to {args.out}")
    return 0 if all(result["checks"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
