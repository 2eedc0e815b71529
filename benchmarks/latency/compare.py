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

from benchmarks.latency.challenge import ChallengedCaller, ChallengeProbe, challenge_probe, enroll_challenge_reference
from benchmarks.latency.data import Probe, with_serial
from benchmarks.latency.e2e import BENCH_NODE_ENV, Threads, _prepare, require_verified, verify_request
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


# --- issue 12: this tree against a baseline revision and the peer, in one run --------------------
CHALLENGE_FRAMES = 24
# A 24-frame burst is what a challenge sends; the benchmark node accepts it without a challenge id
# (IDV_MAX_FRAMES=24), so the "24f" row measures the burst's pipeline cost, not the action check.
# The "24f_challenge" row (this tree only: benchmarks/latency/challenge.py) is a real challenge:
# CreateChallenge, then the frames that perform it, with the action check.
BASELINE_NODE_ENV = {**BENCH_NODE_ENV, "IDV_MAX_FRAMES": str(CHALLENGE_FRAMES)}


@dataclass(frozen=True)
class BaselinePlan:
    rounds: int = 8
    per_round: int = 10
    frame_counts: tuple[int, ...] = (1, 5, CHALLENGE_FRAMES)
    peer_frame_counts: tuple[int, ...] = (1, 5)
    capacity_rounds: int = 4
    capacity_seconds: float = 4.0
    capacity_concurrency: int = 4
    capacity_frames: int = 5

    @classmethod
    def quick(cls) -> BaselinePlan:
        return cls(rounds=2, per_round=3, capacity_rounds=1, capacity_seconds=2.0)


def _warm(node: NodeProcess, p: Probe, frames: int) -> dict[int, str]:
    """A few verifies of `frames` frames (after _prepare enrolled the reference); what the node answers."""
    from benchmarks.latency.data import ID_NUMBER, NAME
    from idv.client import IdvClient

    with IdvClient(node.target, timeout=60.0, retries=0) as client:
        for attempt in range(2):
            result = client.verify(ID_NUMBER, NAME, with_serial(p.frames(frames), f"warm-{frames}-{attempt}"))
    verdicts = {frames: f"{result.verdict}/{result.reason}"}
    require_verified(verdicts)
    return verdicts


def _warm_challenge(node: NodeProcess, challenge: ChallengeProbe) -> str:
    """Two challenged verifies; the benchmark refuses to time a challenge burst the node does not pass."""

    async def warm() -> list[str]:
        caller = ChallengedCaller(node.target, challenge, 60.0, f"warm-{time.time_ns()}")
        try:
            await caller.ready()
            return [f"{o.status}/{o.verdict}" for o in [await caller.call() for _ in range(2)]]
        finally:
            await caller.close()

    answers = asyncio.run(warm())
    if answers[-1] != "OK/PASS":
        raise RuntimeError(f"the node does not pass the performed challenge ({answers}): nothing to time")
    return answers[-1]


def _request_for(frames: int, probes: dict[str, Probe]):
    return verify_request(probes["challenge"] if frames > len(probes["burst"].frame_paths) else probes["burst"], frames)


def _tally(answers: dict[str, int], outcome) -> None:
    key = f"{outcome.status}/{outcome.verdict}" if outcome.verdict else outcome.status
    answers[key] = answers.get(key, 0) + 1


async def _three_way(nodes: dict[str, NodeProcess], peer: PeerSession, probes: dict[str, Probe],
                     plan: BaselinePlan, challenge: ChallengeProbe) -> dict[str, Any]:
    systems = list(nodes)
    samples = {f: {s: [] for s in [*systems, "peer"]} for f in plan.frame_counts}
    answers = {f: {s: {} for s in systems} for f in plan.frame_counts}
    callers = {(s, f): _Caller(nodes[s].target, 1, _request_for(f, probes), timeout=60.0)
               for s in systems for f in plan.frame_counts}
    challenged = ChallengedCaller(nodes["idv"].target, challenge, 60.0, f"bench-{time.time_ns()}")
    challenge_samples: list[float] = []
    challenge_answers: dict[str, int] = {}
    try:
        await challenged.ready()
        await challenged.call()  # the connection's first call is not a sample
        for caller in callers.values():
            await caller.ready()
            await caller.call(time.monotonic())  # the connection's first call is not a sample
        for r in range(plan.rounds):
            order = systems if r % 2 == 0 else systems[::-1]  # alternate who goes first
            for frames in plan.frame_counts:
                for system in order:
                    for _ in range(plan.per_round):
                        outcome = await callers[(system, frames)].call(time.monotonic())
                        _tally(answers[frames][system], outcome)
                        if outcome.status == "OK":
                            samples[frames][system].append(outcome.latency_ms)
                if frames in plan.peer_frame_counts:
                    samples[frames]["peer"] += peer.verify(frames, None, plan.per_round)["samples_ms"]
            for _ in range(plan.per_round):
                outcome = await challenged.call()
                _tally(challenge_answers, outcome)
                if outcome.status == "OK" and outcome.verdict == "PASS":
                    challenge_samples.append(outcome.latency_ms)
    finally:
        await challenged.close()
        for caller in callers.values():
            await caller.close()
    out: dict[str, Any] = {}
    for frames in plan.frame_counts:
        row: dict[str, Any] = {k: summary_dict(v) for k, v in samples[frames].items() if v}
        row["answers"] = answers[frames]
        for system in systems:
            if row.get(system) and row.get("peer"):
                row[f"ratio_p50_{system}_over_peer"] = round(row[system]["p50"] / row["peer"]["p50"], 3)
        if row.get("idv") and row.get("baseline"):
            row["ratio_p50_idv_over_baseline"] = round(row["idv"]["p50"] / row["baseline"]["p50"], 3)
        out[f"{frames}f"] = row
    row = {"idv": summary_dict(challenge_samples)} if challenge_samples else {}
    row["answers"] = {"idv": challenge_answers}
    row["what"] = ("this tree only: CreateChallenge (not timed; draws the clip cannot perform left to expire), "
                   f"then Verify of the {CHALLENGE_FRAMES} frames performing it, action check included; "
                   "PASS answers only are samples")
    row["challenge_draws"] = challenged.draws
    if challenge_samples and out.get("5f", {}).get("idv"):
        row["ratio_p50_over_5f"] = round(row["idv"]["p50"] / out["5f"]["idv"]["p50"], 3)
    out[f"{CHALLENGE_FRAMES}f_challenge"] = row
    return out


def _capacity(nodes: dict[str, NodeProcess], probes: dict[str, Probe], plan: BaselinePlan) -> dict[str, Any]:
    from benchmarks.latency.loadgen import LoadSpec, run_load, summarise

    request = _request_for(plan.capacity_frames, probes)
    spec = LoadSpec("closed", plan.capacity_seconds, concurrency=plan.capacity_concurrency)
    rounds: dict[str, list[float]] = {s: [] for s in nodes}
    for r in range(plan.capacity_rounds):
        for system in (list(nodes) if r % 2 == 0 else list(nodes)[::-1]):
            outcomes = asyncio.run(run_load(nodes[system].target, request, spec))
            rounds[system].append(summarise(outcomes, spec)["throughput_rps"])
    best = {s: max(v) for s, v in rounds.items()}
    return {"frames": plan.capacity_frames, "concurrency": plan.capacity_concurrency, "rounds_rps": rounds,
            "capacity_rps": best, "basis": "closed loop, best of alternating rounds (a neighbour only lowers it)",
            "capacity_vs_baseline": round(best["idv"] / best["baseline"], 3) if best.get("baseline") else None}


def run_baseline_comparison(plan: BaselinePlan, probes: dict[str, Probe], threads: Threads, baseline_repo: Path,
                            peer_config: PeerConfig = PeerConfig()) -> dict[str, Any]:
    """This tree's node, the baseline tree's node and the peer on the same frames, interleaved."""
    configs = {
        "idv": NodeConfig(threads.worker_threads, threads.intra_op_threads, extra_env=dict(BASELINE_NODE_ENV)),
        "baseline": NodeConfig(threads.worker_threads, threads.intra_op_threads, extra_env=dict(BASELINE_NODE_ENV),
                               repo=baseline_repo),
    }
    with NodeProcess(configs["idv"]) as idv, NodeProcess(configs["baseline"]) as baseline, \
            PeerSession(probes["burst"], peer_config) as peer:
        nodes = {"idv": idv, "baseline": baseline}
        warm = {s: {**_prepare(n, probes["burst"], (1, 5)), **_warm(n, probes["challenge"], CHALLENGE_FRAMES)}
                for s, n in nodes.items()}
        challenge = challenge_probe()
        enroll_challenge_reference(idv.target, challenge)
        warm["idv"]["24_challenge"] = _warm_challenge(idv, challenge)
        with CpuMonitor([idv.pid, baseline.pid, peer.pid]) as cpu:
            latency = asyncio.run(_three_way(nodes, peer, probes, plan, challenge))
            capacity = _capacity(nodes, probes, plan)
    return {
        "method": f"{plan.rounds} rounds; per round and frame count {plan.per_round} requests to each node "
                  "(gRPC, closed loop c=1, order alternating) and the peer's verifies; then capacity rounds",
        "threads": threads.as_dict(),
        "warmup_answers": {s: {str(k): v for k, v in w.items()} for s, w in warm.items()},
        "frames": latency,
        "capacity": capacity,
        "cpu": cpu.result.as_dict() if cpu.result else None,
    }
