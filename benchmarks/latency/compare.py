"""idv against the PyPI peer on the same probe and reference, measured interleaved.

Both sides are measured unloaded (one request at a time): idv over gRPC against
a real server process with the chosen thread default (liveness on, as served),
the peer in process in its own venv (verifyface's normal use, no network hop).
Blocks alternate idv, peer, peer with its passive liveness, for several rounds:
a neighbour's burst of CPU on this shared machine then hits both sides alike
instead of skewing the ratio.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.latency.data import Probe
from benchmarks.latency.e2e import BENCH_NODE_ENV, Threads, _prepare, verify_request
from benchmarks.latency.loadgen import _Caller
from benchmarks.latency.machine import CpuMonitor
from benchmarks.latency.node_process import NodeConfig, NodeProcess
from benchmarks.latency.peer import PeerConfig, PeerSession
from benchmarks.latency.stats import summary_dict


@dataclass(frozen=True)
class ComparePlan:
    rounds: int = 10
    per_round: int = 20  # requests per block; the peer's liveness variant gets half
    frame_counts: tuple[int, ...] = (1, 5)
    peer_stage_iterations: int = 200

    @classmethod
    def quick(cls) -> ComparePlan:
        return cls(rounds=2, per_round=5, peer_stage_iterations=20)


async def _interleaved(node: NodeProcess, peer: PeerSession, p: Probe, plan: ComparePlan) -> dict[str, Any]:
    samples: dict[int, dict[str, list[float]]] = {f: {"idv": [], "peer": [], "peer_liveness_auto": []}
                                                   for f in plan.frame_counts}
    answers: dict[int, dict[str, int]] = {f: {} for f in plan.frame_counts}
    matched: dict[int, dict[str, int]] = {f: {"peer": 0, "peer_liveness_auto": 0} for f in plan.frame_counts}
    callers = {f: _Caller(node.target, 1, verify_request(p, f), timeout=30.0) for f in plan.frame_counts}
    try:
        for caller in callers.values():
            await caller.ready()
            await caller.call(time.monotonic())  # the connection's first call is not a sample
        for _ in range(plan.rounds):
            for frames in plan.frame_counts:
                for _ in range(plan.per_round):
                    outcome = await callers[frames].call(time.monotonic())
                    key = f"{outcome.status}/{outcome.verdict}" if outcome.verdict else outcome.status
                    answers[frames][key] = answers[frames].get(key, 0) + 1
                    if outcome.status == "OK":
                        samples[frames]["idv"].append(outcome.latency_ms)
                # The peer blocks the event loop meanwhile: nothing else is in flight, by design.
                for variant, liveness, n in (("peer", None, plan.per_round),
                                             ("peer_liveness_auto", "auto", max(plan.per_round // 2, 1))):
                    answer = peer.verify(frames, liveness, n)
                    samples[frames][variant] += answer["samples_ms"]
                    matched[frames][variant] += answer["matched_frames"]
    finally:
        for caller in callers.values():
            await caller.close()
    out: dict[str, Any] = {}
    for frames in plan.frame_counts:
        row: dict[str, Any] = {k: summary_dict(v) for k, v in samples[frames].items()}
        row["idv_answers"] = answers[frames]
        row["peer_matched_frames"] = matched[frames]
        for variant in ("peer", "peer_liveness_auto"):
            if row.get(variant) and row.get("idv"):
                row[f"ratio_p50_idv_over_{variant}"] = round(row["idv"]["p50"] / row[variant]["p50"], 3)
        out[f"{frames}f"] = row
    return out


def run_comparison(plan: ComparePlan, p: Probe, threads: Threads, manifest: Path | None,
                   peer_config: PeerConfig = PeerConfig()) -> dict[str, Any]:
    node_config = NodeConfig(threads.worker_threads, threads.intra_op_threads, model_dir=None, manifest=manifest,
                             extra_env=dict(BENCH_NODE_ENV))
    with NodeProcess(node_config) as node, PeerSession(p, peer_config) as peer:
        _prepare(node, p, plan.frame_counts)
        info = peer.info()
        with CpuMonitor([node.pid, peer.pid]) as cpu:
            by_frames = asyncio.run(_interleaved(node, peer, p, plan))
        stages = peer.stages(plan.peer_stage_iterations)
    return {
        "method": f"{plan.rounds} rounds of {plan.per_round} idv requests (gRPC, closed loop c=1), "
                  f"{plan.per_round} peer verifies and {max(plan.per_round // 2, 1)} peer verifies with "
                  "liveness='auto', alternating; per frame count",
        "idv_threads": threads.as_dict(),
        "peer": {**info, "in_process": True, "liveness_variants": {"peer": "off (default Verifier)",
                                                                   "peer_liveness_auto": "liveness='auto' (passive)"}},
        "frames": by_frames,
        "peer_per_frame_stages_ms": {k: summary_dict(v) for k, v in stages.items()},
        "cpu": cpu.result.as_dict() if cpu.result else None,
    }
