"""Hard floors for the issue-12 latency targets, computed from numbers measured in the same run.

    .venv/bin/python -m benchmarks.latency.floors [benchmarks/results/latency.json] [--out floors.json]

A target below what the hardware can do at the accuracy bar cannot be met by any
amount of engineering on the request path; one above it can. Which one a target is
should be checkable from the run's own numbers, not taken on trust. Three references:

1. **Capacity ceiling.** The model work a Verify of this tree cannot avoid, in single-thread
   CPU-ms, from the per-stage timings (`stages`: decode, detect, refine, align and quality per
   frame; k embeddings; the liveness check; reference lookup and compare), against the
   baseline node's CPU-ms per request at its measured closed-loop capacity (usable cores /
   capacity). Their ratio is the best `capacity_vs_baseline` a node doing this model work could
   reach with *zero* overhead (no gRPC, protobuf, Python, thread hand-offs or load generator).
2. **Latency floor for a lone request.** The same work spread over the usable cores: `ideal`
   (perfectly divisible work) and `dependent` (every frame detected before the k frames are
   chosen, then the k embeddings and the liveness check, then the compare; a model call on one
   thread is not split). Divided by the peer's p50 from the same run: the best peer ratio.
3. **Queueing reference at 0.7x capacity.** An ideal work-conserving FCFS queue fed with Poisson
   arrivals at the open-loop run's offered rate and service times drawn from the run's unloaded
   5-frame latencies: the p99/p50 an ideal scheduler that drops nothing reaches at this load.

Pure functions on the measured numbers; `floors_from_results` reads them from a latency.json dict.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.latency.stats import Summary

# The issue-12 targets these floors are compared with (issues show 12, "Targets").
TARGETS = {
    "capacity_vs_baseline": 2.5,  # at least
    "peer_latency_ratio": 0.5,  # 5-frame p50 / peer's, at most
    "peer_latency_ratio_1f": 0.8,  # at most
    "p99_over_p50_at_0.7x": 2.0,  # at most
}

# Stages per request, not per frame (per_burst_ms): serial, one each.
_PER_REQUEST = ("lookup", "compare")
# Per-frame stages the node runs on the k chosen frames only (idv/pipeline.py `_refine`), after choosing.
_PER_CHOSEN = ("refine",)


@dataclass(frozen=True)
class StageCosts:
    """Single-thread CPU-ms of each measured stage, one statistic (p50 by default) of the `stages` section."""

    per_frame_ms: Mapping[str, float]  # every per-frame stage but embed: decode, detect, refine, align, quality
    embed_one_ms: float  # one crop per model call
    embed_batched_ms: float | None  # k crops in one model call (None: not measured)
    k: int  # frames embedded per burst (settings' [burst] embed_frames)
    burst_frames: int  # the burst length the liveness timing is for
    liveness_burst_ms: float | None  # liveness check of a `burst_frames` burst, its cues one after another
    liveness_one_frame_ms: float | None  # the 1-frame (passive-only) check; None: not measured in this run
    per_request_ms: Mapping[str, float]  # lookup, compare
    statistic: str = "p50"

    @property
    def frame_chain_ms(self) -> float:
        """One frame's decode -> detect -> align -> quality, one after another (refine comes after choosing)."""
        return float(sum(ms for name, ms in self.per_frame_ms.items() if name not in _PER_CHOSEN))

    @property
    def refine_ms(self) -> float:
        return float(sum(ms for name, ms in self.per_frame_ms.items() if name in _PER_CHOSEN))

    @classmethod
    def from_stages(cls, stages: Mapping[str, Any], statistic: str = "p50", k: int | None = None) -> StageCosts:
        per_frame = dict(stages["per_frame_ms"])
        burst = stages["per_burst_ms"]
        if k is None:
            k = burst.get("embed_frames") or _k_from_keys(burst)
        batched = burst.get(f"embed_{k}_in_one_call")
        liveness = burst.get("liveness") or {}
        one = burst.get("liveness_1_frame") or {}
        return cls(
            per_frame_ms={name: float(s[statistic]) for name, s in per_frame.items() if name != "embed"},
            embed_one_ms=float(per_frame["embed"][statistic]),
            embed_batched_ms=float(batched[statistic]) if batched else None,
            k=int(k),
            burst_frames=int(burst["burst_frames"]),
            liveness_burst_ms=float(liveness[statistic]) if liveness.get("available", True) and statistic in liveness
            else None,
            liveness_one_frame_ms=float(one[statistic]) if statistic in one else None,
            per_request_ms={name: float(burst[name][statistic]) for name in _PER_REQUEST if burst.get(name)},
            statistic=statistic,
        )


def _k_from_keys(burst: Mapping[str, Any]) -> int:
    """Runs before `embed_frames` was recorded name the batched timing after k: `embed_3_in_one_call`."""
    found = [int(m.group(1)) for key in burst if (m := re.fullmatch(r"embed_(\d+)_in_one_call", key))]
    if len(found) != 1:
        raise ValueError(f"cannot tell k from the per-burst stages {sorted(burst)}")
    return found[0]


@dataclass(frozen=True)
class Part:
    per_unit_ms: float
    count: int
    ms: float


@dataclass(frozen=True)
class CpuFloor:
    """The model work of one Verify of `frames` frames, single-thread CPU-ms (no overhead of any kind)."""

    frames: int
    k: int
    parts: Mapping[str, Part]
    total_ms: float
    not_timed: tuple[str, ...]  # model work of this Verify the run's stages did not time (left out)

    def as_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "k": self.k, "total_ms": round(self.total_ms, 3),
                "parts": {name: {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(p).items()}
                          for name, p in self.parts.items()},
                "not_timed": list(self.not_timed)}


def embed_work_ms(costs: StageCosts, k: int) -> tuple[float, str]:
    """The cheaper measured way to embed k crops: k one-crop calls, or one k-crop call (measured for k only)."""
    per_call = k * costs.embed_one_ms
    if costs.embed_batched_ms is not None and k == costs.k and costs.embed_batched_ms < per_call:
        return costs.embed_batched_ms, "one call of k crops"
    return per_call, "one call per crop"


def _liveness_ms(costs: StageCosts, frames: int) -> float | None:
    if frames == 1:
        return costs.liveness_one_frame_ms
    if frames == costs.burst_frames:
        return costs.liveness_burst_ms
    raise ValueError(f"liveness was timed for 1 and {costs.burst_frames} frames only, not {frames}")


# Always outside the floor: each is real work of a Verify, so leaving it out only lowers the floor.
EXCLUDED = (
    "gRPC, protobuf and HTTP/2 (client and server)",
    "request validation, header parsing, throttle, replay (seen-frame) and audit bookkeeping",
    "near-duplicate frame check (timed by the node only, not by the stages)",
    "thread hand-offs and Python outside the timed calls",
    "the load generator's own CPU (it shares the cores)",
    "slow-down of concurrent calls on shared caches and memory bandwidth (stages run alone)",
)


def model_cpu(costs: StageCosts, frames: int) -> CpuFloor:
    """Every frame decoded, detected, aligned and quality-checked; the min(k, frames) chosen ones refined
    and embedded (the cheaper measured way); the liveness check the node runs for this burst length;
    lookup and compare once. Everything in EXCLUDED is left out."""
    k = min(costs.k, frames)
    parts = {name: Part(ms, k if name in _PER_CHOSEN else frames, ms * (k if name in _PER_CHOSEN else frames))
             for name, ms in costs.per_frame_ms.items()}
    embed_ms, how = embed_work_ms(costs, k)
    parts[f"embed ({how})"] = Part(embed_ms / k, k, embed_ms)
    not_timed = []
    liveness = _liveness_ms(costs, frames)
    if liveness is None:
        not_timed.append(f"the {frames}-frame liveness check")
    else:
        parts["liveness"] = Part(liveness, 1, liveness)
    for name, ms in costs.per_request_ms.items():
        parts[name] = Part(ms, 1, ms)
    return CpuFloor(frames, k, parts, sum(p.ms for p in parts.values()), tuple(not_timed))


@dataclass(frozen=True)
class PathFloor:
    """Lower bounds on the latency of one request alone on `cores` cores (model work only)."""

    cores: int
    ideal_ms: float  # all the work divided over the cores, as if perfectly divisible
    dependent_ms: float  # the pipeline's order kept, single-thread model calls not split
    phases_ms: Mapping[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {"cores": self.cores, "ideal_ms": round(self.ideal_ms, 3), "dependent_ms": round(self.dependent_ms, 3),
                "dependent_phases_ms": {k: round(v, 3) for k, v in self.phases_ms.items()}}


def critical_path(costs: StageCosts, frames: int, cores: int) -> PathFloor:
    """`ideal`: model_cpu / cores. `dependent`: the sum of the pipeline's phases, one after another,
    each bounded below by max(its work / cores, what its calls that cannot be split force):

    * frames: every frame's chain (decode -> detect -> align -> quality) before the k are chosen;
      bounded by work / cores, one chain, and ceil(frames / cores) x the longest per-frame call;
    * refine: the k chosen frames (one task each); liveness reads the refined faces;
    * embed + liveness side by side: k embeddings (one crop per call: ceil(k / cores) calls on the
      busiest core; or one k-crop call, which cannot be split) and the liveness check (its cues
      may spread over the cores: only its work counts);
    * lookup and compare, one after another (the service looks the reference up before the
      frames, compares after).
    Each is a lower bound for its phase, so their sum is one for the request."""
    if cores < 1:
        raise ValueError("cores must be at least 1")
    cpu = model_cpu(costs, frames)
    k = cpu.k
    chain = costs.frame_chain_ms
    longest_call = max((ms for name, ms in costs.per_frame_ms.items() if name not in _PER_CHOSEN), default=0.0)
    frame_phase = max(frames * chain / cores, chain, math.ceil(frames / cores) * longest_call)
    refine = costs.refine_ms
    refine_phase = max(k * refine / cores, refine)
    liveness = _liveness_ms(costs, frames) or 0.0
    ways = [max((k * costs.embed_one_ms + liveness) / cores, math.ceil(k / cores) * costs.embed_one_ms)]
    if costs.embed_batched_ms is not None and k == costs.k:
        ways.append(max((costs.embed_batched_ms + liveness) / cores, costs.embed_batched_ms))
    serial = sum(costs.per_request_ms.values())
    phases = {"frames": frame_phase, "refine": refine_phase, "embed_and_liveness": min(ways),
              "lookup_and_compare": serial}
    return PathFloor(cores, cpu.total_ms / cores, sum(phases.values()), phases)


def capacity_ceiling(floor_ms: float, cores: int, baseline_rps: float, this_rps: float | None = None) -> dict[str, Any]:
    """The baseline's CPU-ms per request at its measured capacity (cores x 1000 / capacity: every usable
    core counted as its, so an over-estimate and the ceiling generous) over this tree's model floor."""
    if floor_ms <= 0 or baseline_rps <= 0 or cores < 1:
        raise ValueError("floor, capacity and cores must be positive")
    baseline_cpu = cores * 1000.0 / baseline_rps
    out: dict[str, Any] = {
        "cores": cores,
        "baseline_capacity_rps": baseline_rps,
        "baseline_cpu_ms_per_request": round(baseline_cpu, 3),
        "model_cpu_floor_ms": round(floor_ms, 3),
        "capacity_at_floor_rps": round(cores * 1000.0 / floor_ms, 3),
        "capacity_vs_baseline_ceiling": round(baseline_cpu / floor_ms, 3),
    }
    if this_rps:
        this_cpu = cores * 1000.0 / this_rps
        out |= {"this_capacity_rps": this_rps, "this_cpu_ms_per_request": round(this_cpu, 3),
                "this_cpu_ms_above_floor": round(this_cpu - floor_ms, 3),
                "capacity_vs_baseline": round(this_rps / baseline_rps, 3)}
    return out


# --- queueing reference -------------------------------------------------------------------------

@dataclass(frozen=True)
class QueueStats:
    servers: int
    arrivals: int
    utilisation: float  # rate x mean service / servers
    mean_wait_ms: float  # in the queue, before service
    sojourn_ms: Summary  # wait + service: what a client sees

    def as_dict(self) -> dict[str, Any]:
        s = self.sojourn_ms
        return {"servers": self.servers, "utilisation": round(self.utilisation, 3),
                "mean_wait_ms": round(self.mean_wait_ms, 3), "p50_ms": round(s.p50, 3), "p99_ms": round(s.p99, 3),
                "p99_over_p50": round(s.p99 / s.p50, 3), "mean_ms": round(s.mean, 3)}


def simulate_fcfs(rate_rps: float, service_ms: Sequence[float], servers: int, arrivals: int = 200_000,
                  seed: int = 12) -> QueueStats:
    """An ideal FCFS queue with `servers` identical servers, never idle while work waits, dropping
    nothing: Poisson arrivals at `rate_rps`, each service time drawn (with replacement) from
    `service_ms`. Starts empty; every arrival counts (at 200k arrivals the start is negligible)."""
    if rate_rps <= 0 or servers < 1 or arrivals < 1 or len(service_ms) == 0:
        raise ValueError("rate, servers, arrivals and service samples must be positive")
    rng = np.random.default_rng(seed)
    arrive = np.cumsum(rng.exponential(1000.0 / rate_rps, size=arrivals))  # ms
    service = rng.choice(np.asarray(service_ms, dtype=np.float64), size=arrivals, replace=True)
    free = [0.0] * servers  # when each server is next free; FCFS: the head of the queue takes the earliest
    wait = np.empty(arrivals)
    for i in range(arrivals):
        start = max(arrive[i], free[0])
        heapq.heapreplace(free, start + service[i])
        wait[i] = start - arrive[i]
    sojourn = wait + service
    summary = Summary.of(sojourn.tolist())
    assert summary is not None
    utilisation = rate_rps * float(np.mean(service_ms)) / 1000.0 / servers
    return QueueStats(servers, arrivals, utilisation, float(wait.mean()), summary)


def samples_from_summary(summary: Mapping[str, float], n: int = 1000) -> np.ndarray:
    """A stand-in for raw samples a run did not keep: the quantile function drawn piecewise-linearly
    through (0, min), (0.5, p50), (0.9, p90), (0.99, p99), (1, max), at n evenly spaced levels."""
    levels = [0.0, 0.5, 0.9, 0.99, 1.0]
    values = [summary["min"], summary["p50"], summary["p90"], summary["p99"], summary["max"]]
    return np.interp((np.arange(n) + 0.5) / n, levels, values)


@dataclass(frozen=True)
class QueueConfig:
    arrivals: int = 200_000
    seed: int = 12


def queue_reference(rate_rps: float, service_ms: Sequence[float], cores: int, capacity_rps: float,
                    config: QueueConfig = QueueConfig()) -> dict[str, Any]:
    """Two ideal queues at the run's arrival rate, each in two service scalings.

    * `cores` servers, each request on one of them for a drawn service time; and 1 server with the
      drawn time / cores (one request at a time on every core). Same utilisation, same work.
    * `as_sampled`: service = the unloaded latency itself. That latency is a request spread over
      the cores, so it under-states a request's CPU and the utilisation comes out below the run's.
    * `at_run_utilisation`: the same samples scaled so utilisation = rate / capacity (0.7 at the
      nominal load): each request costs what the node spent per request at capacity."""
    samples = np.asarray(service_ms, dtype=np.float64)
    scale = cores * 1000.0 / capacity_rps / float(samples.mean())  # mean becomes cores / capacity
    out: dict[str, Any] = {}
    for name, factor in (("as_sampled", 1.0), ("at_run_utilisation", scale)):
        scaled = samples * factor
        rows = []
        for servers, per_request in ((cores, scaled), (1, scaled / cores)):
            stats = simulate_fcfs(rate_rps, per_request, servers, config.arrivals, config.seed)
            rows.append({**stats.as_dict(), "service_mean_ms": round(float(per_request.mean()), 3)})
        out[name] = {"service_scale": round(factor, 4), "queues": rows}
    return out


# --- from a latency.json ------------------------------------------------------------------------

def _get(data: Mapping[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(data, Mapping) or key not in data:
            return None
        data = data[key]
    return data


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _latency_floors(costs: StageCosts, cores: int, result: Mapping[str, Any]) -> dict[str, Any]:
    """Per frame count: the floors, the peer's p50 and idv's unloaded p50 the headline ratios use."""
    sources = {  # the same rows the headline keys peer_latency_ratio / peer_latency_ratio_1f come from
        5: ("comparison", "frames", "5f"),
        1: ("baseline", "frames", "1f") if _get(result, "baseline", "frames", "1f", "peer") else
           ("comparison", "frames", "1f"),
    }
    out: dict[str, Any] = {}
    for frames, path in sources.items():
        if frames != 1 and frames != costs.burst_frames:
            continue
        path_floor = critical_path(costs, frames, cores)
        cpu = model_cpu(costs, frames)
        peer = _get(result, *path, "peer", "p50")
        idv = _get(result, *path, "idv", "p50")
        out[f"{frames}f"] = {
            "model_cpu_ms": round(cpu.total_ms, 3),
            "not_timed": list(cpu.not_timed),
            **path_floor.as_dict(),
            "source": ".".join(path),
            "peer_p50_ms": peer,
            "idv_p50_ms": idv,
            "idv_ms_above_dependent_floor": round(idv - path_floor.dependent_ms, 3) if idv is not None else None,
            "peer_ratio_measured": _ratio(idv, peer),
            "peer_ratio_best_ideal": _ratio(path_floor.ideal_ms, peer),
            "peer_ratio_best_dependent": _ratio(path_floor.dependent_ms, peer),
            "target": TARGETS["peer_latency_ratio" if frames > 1 else "peer_latency_ratio_1f"],
        }
    return out


def floors_from_results(result: Mapping[str, Any], k: int | None = None, statistic: str = "p50",
                        queue: QueueConfig = QueueConfig()) -> dict[str, Any]:
    """The `floors` section of latency.json from the run's own sections (stages, machine, baseline,
    comparison, e2e); a part whose inputs the run did not measure is None with the reason."""
    cores = int(_get(result, "machine", "cpus_usable") or _get(result, "machine", "cpu_count"))
    costs = StageCosts.from_stages(result["stages"], statistic, k)
    cpu5 = model_cpu(costs, costs.burst_frames)
    out: dict[str, Any] = {
        "what": "lower bounds on the issue-12 targets from this run's own measurements: model work only "
                "(single-thread stage timings), no overhead; see benchmarks/latency/floors.py",
        "statistic": statistic,
        "cores": cores,
        "cores_source": "machine.cpus_usable (sched_getaffinity)",
        "targets": TARGETS,
        "excluded_everywhere": list(EXCLUDED),
        "model_cpu": {f"{costs.burst_frames}f": cpu5.as_dict(), "1f": model_cpu(costs, 1).as_dict()},
    }

    idv_rps = _get(result, "baseline", "capacity", "capacity_rps", "idv")
    baseline_rps = _get(result, "baseline", "capacity", "capacity_rps", "baseline")
    if baseline_rps:
        out["capacity"] = {**capacity_ceiling(cpu5.total_ms, cores, baseline_rps, idv_rps),
                           "source": "baseline.capacity.capacity_rps (closed loop, same rounds)",
                           "target": TARGETS["capacity_vs_baseline"]}
    else:
        out["capacity"] = {"available": False, "reason": "no baseline node in this run"}
    out["latency"] = _latency_floors(costs, cores, result)

    # Every stage at its fastest observed call: the most generous version of the same bounds.
    fastest = StageCosts.from_stages(result["stages"], "min", costs.k)
    generous: dict[str, Any] = {}
    if baseline_rps:
        generous["capacity_vs_baseline_ceiling"] = capacity_ceiling(
            model_cpu(fastest, fastest.burst_frames).total_ms, cores, baseline_rps)["capacity_vs_baseline_ceiling"]
    for key, row in _latency_floors(fastest, cores, result).items():
        generous[f"peer_ratio_best_dependent_{key}"] = row["peer_ratio_best_dependent"]
    out["at_stage_min"] = generous

    out["queueing"] = _queueing(result, cores, queue)
    return out


def _queueing(result: Mapping[str, Any], cores: int, queue: QueueConfig) -> dict[str, Any]:
    nominal = _get(result, "e2e", "plan", "nominal_fraction") or 0.7
    five = _get(result, "e2e", "matrix", "frames", "5") or {}
    run = _get(five, "open_loop", f"{nominal:g}")
    unloaded = _get(five, "closed_loop", "1")
    if not run or not unloaded or not five.get("capacity_rps"):
        return {"available": False, "reason": "no 5-frame open-loop run at the nominal load or no c=1 run"}
    raw = unloaded.get("latency_samples_ms")
    if raw:
        service, kind = np.asarray(raw, dtype=np.float64), "raw samples"
    else:
        service, kind = samples_from_summary(unloaded["latency_ms"]), \
            "reconstructed: this run kept no raw samples; quantile function drawn through min/p50/p90/p99/max"
    measured = run.get("latency_ms") or {}
    out: dict[str, Any] = {
        "fraction_of_capacity": nominal,
        "arrival_rate_rps": run["offered_rps"],
        "capacity_rps": five["capacity_rps"],
        "service_samples": {"source": "e2e.matrix.frames.5.closed_loop.1: unloaded 5-frame Verify latencies "
                                      "(closed loop c=1, the node the open-loop run used, OK answers)",
                            "kind": kind, "n": len(service), "mean_ms": round(float(service.mean()), 3)},
        "arrivals": queue.arrivals,
        "seed": queue.seed,
        "model": "FCFS, work-conserving, nothing dropped, Poisson arrivals at the run's offered rate "
                 "(a fresh draw, not the run's schedule), service times drawn with replacement",
        "measured": {"p50_ms": measured.get("p50"), "p99_ms": measured.get("p99"),
                     "p99_over_p50": _ratio(measured.get("p99"), measured.get("p50"))},
        "target_p99_over_p50": TARGETS["p99_over_p50_at_0.7x"],
    }
    out.update(queue_reference(run["offered_rps"], service, cores, five["capacity_rps"], queue))
    return out


def log_line(floors: Mapping[str, Any]) -> str:
    """One line for the run's stderr log: each target next to its floor-implied best."""
    parts = []
    capacity = floors.get("capacity") or {}
    if capacity.get("capacity_vs_baseline_ceiling") is not None:
        parts.append(f"capacity vs baseline {capacity.get('capacity_vs_baseline')} (ceiling "
                     f"{capacity['capacity_vs_baseline_ceiling']}, target >= {capacity['target']})")
    for key, row in (floors.get("latency") or {}).items():
        parts.append(f"{key} peer ratio {row['peer_ratio_measured']} (best {row['peer_ratio_best_dependent']}, "
                     f"target <= {row['target']})")
    queueing = floors.get("queueing") or {}
    if queueing.get("measured"):
        ideal = ", ".join(f"c={q['servers']} {q['p99_over_p50']}"
                          for q in queueing["at_run_utilisation"]["queues"])
        parts.append(f"p99/p50 at {queueing['fraction_of_capacity']:g}x {queueing['measured']['p99_over_p50']} "
                     f"(ideal FCFS {ideal}, target <= {queueing['target_p99_over_p50']})")
    return "floors: " + "; ".join(parts)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="?",
                        default=Path(__file__).resolve().parents[1] / "results" / "latency.json")
    parser.add_argument("--k", type=int, default=None, help="default: the k the run recorded")
    parser.add_argument("--out", type=Path, default=None, help="default: JSON to stdout")
    args = parser.parse_args(argv)
    floors = floors_from_results(json.loads(args.results.read_text()), args.k)
    text = json.dumps(floors, indent=2, ensure_ascii=False) + "\n"
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    sys.stderr.write(log_line(floors) + "\n")
    return floors


if __name__ == "__main__":
    main()
