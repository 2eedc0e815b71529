"""benchmarks/latency/floors.py: the floors the issue-12 targets are checked against.

Hand-computed stage costs for the arithmetic, and queues with closed forms (M/D/1, M/M/1,
M/M/2) for the simulation: a wrong sum, a wrong phase or a queue that is not FCFS fails here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks.latency.floors import (
    QueueConfig,
    StageCosts,
    capacity_ceiling,
    critical_path,
    floors_from_results,
    log_line,
    model_cpu,
    queue_reference,
    samples_from_summary,
    simulate_fcfs,
)

REPO = Path(__file__).resolve().parents[1]

# Per frame: chain decode+detect+align+quality = 5.5 ms; refine 0.5 on each of the k = 3 chosen frames.
COSTS = StageCosts(
    per_frame_ms={"decode": 1.0, "detect": 4.0, "refine": 0.5, "align": 0.3, "quality": 0.2},
    embed_one_ms=10.0, embed_batched_ms=27.0, k=3, burst_frames=5,
    liveness_burst_ms=12.0, liveness_one_frame_ms=6.0, per_request_ms={"lookup": 0.1, "compare": 0.2},
)


def _summary(value: float, fastest: float | None = None) -> dict[str, float]:
    fastest = value if fastest is None else fastest
    return {"n": 200, "p50": value, "p90": value, "p99": value, "mean": value, "min": fastest, "max": value}


def _stages(with_k: bool = True, with_single: bool = True) -> dict:
    burst = {"burst_frames": 5, "bursts": 15, "lookup": _summary(0.1), "compare": _summary(0.2),
             "embed_3_in_one_call": _summary(27.0, 25.0),
             "liveness": {"available": True, **_summary(12.0, 10.0), "passed_fraction": 1.0}}
    if with_k:
        burst["embed_frames"] = 3
    if with_single:
        burst["liveness_1_frame"] = _summary(6.0, 5.0)
    per_frame = {"decode": _summary(1.0), "detect": _summary(4.0, 3.0), "refine": _summary(0.5),
                 "align": _summary(0.3), "quality": _summary(0.2), "embed": _summary(10.0, 9.0)}
    return {"per_frame_ms": per_frame, "per_burst_ms": burst}


def test_stage_costs_read_from_a_stages_section():
    assert StageCosts.from_stages(_stages()) == COSTS
    # Runs before embed_frames was recorded: k from the batched timing's name.
    assert StageCosts.from_stages(_stages(with_k=False)).k == 3
    fastest = StageCosts.from_stages(_stages(), "min")
    assert (fastest.per_frame_ms["detect"], fastest.embed_one_ms, fastest.embed_batched_ms,
            fastest.liveness_burst_ms) == (3.0, 9.0, 25.0, 10.0)


def test_model_cpu_of_a_five_frame_verify_by_hand():
    cpu = model_cpu(COSTS, 5)
    # 5 x (1 + 4 + 0.3 + 0.2) + 3 x 0.5 refine + 27 (one 3-crop call beats 3 x 10) + 12 liveness + 0.3
    assert cpu.total_ms == pytest.approx(27.5 + 1.5 + 27.0 + 12.0 + 0.3)
    assert cpu.parts["refine"].count == 3 and cpu.parts["detect"].ms == pytest.approx(20.0)
    assert cpu.parts["embed (one call of k crops)"].ms == pytest.approx(27.0)
    assert cpu.not_timed == ()


def test_model_cpu_of_a_one_frame_verify_by_hand():
    cpu = model_cpu(COSTS, 1)
    # One frame's chain 5.5, refine 0.5, one crop 10 (the 3-crop timing does not apply), 1-frame liveness 6, 0.3
    assert cpu.total_ms == pytest.approx(5.5 + 0.5 + 10.0 + 6.0 + 0.3)
    assert cpu.k == 1
    untimed = StageCosts.from_stages(_stages(with_single=False))
    assert model_cpu(untimed, 1).total_ms == pytest.approx(16.3)
    assert model_cpu(untimed, 1).not_timed == ("the 1-frame liveness check",)
    with pytest.raises(ValueError):
        model_cpu(COSTS, 3)  # liveness was timed for 1 and 5 frames only


def test_critical_path_on_two_cores_by_hand():
    path = critical_path(COSTS, 5, 2)
    assert path.ideal_ms == pytest.approx(68.3 / 2)
    assert path.phases_ms["frames"] == pytest.approx(13.75)  # 5 x 5.5 / 2 (> 3 detects of 4 on one core)
    assert path.phases_ms["refine"] == pytest.approx(0.75)  # 3 x 0.5 / 2
    # One crop per call: max((30 + 12) / 2, 2 calls x 10) = 21; one 3-crop call: max(39 / 2, 27) = 27.
    assert path.phases_ms["embed_and_liveness"] == pytest.approx(21.0)
    assert path.dependent_ms == pytest.approx(13.75 + 0.75 + 21.0 + 0.3)

    one = critical_path(COSTS, 1, 2)
    # A lone frame's chain cannot be shared; its one crop (10) outlasts half of crop + liveness (8).
    assert one.phases_ms == pytest.approx({"frames": 5.5, "refine": 0.5, "embed_and_liveness": 10.0,
                                           "lookup_and_compare": 0.3})
    assert one.ideal_ms == pytest.approx(22.3 / 2)


def test_critical_path_on_one_core_is_all_the_work_and_never_below_the_ideal():
    path = critical_path(COSTS, 5, 1)
    assert path.dependent_ms == pytest.approx(model_cpu(COSTS, 5).total_ms)  # the 3-crop call wins: 39 < 42
    assert path.ideal_ms == pytest.approx(path.dependent_ms)
    for cores in (2, 3, 4, 8):
        for frames in (1, 5):
            p = critical_path(COSTS, frames, cores)
            assert p.dependent_ms >= p.ideal_ms - 1e-9
    # Many cores: the longest calls decide (one chain; 3 crops on 3 cores run at once beside liveness).
    wide = critical_path(COSTS, 5, 8)
    assert wide.phases_ms["frames"] == pytest.approx(5.5)
    assert wide.phases_ms["embed_and_liveness"] == pytest.approx(10.0)


def test_capacity_ceiling_by_hand():
    out = capacity_ceiling(50.0, 2, 16.0, this_rps=20.0)
    assert out["baseline_cpu_ms_per_request"] == pytest.approx(125.0)  # 2 cores x 1000 / 16 rps
    assert out["capacity_vs_baseline_ceiling"] == pytest.approx(2.5)
    assert out["capacity_at_floor_rps"] == pytest.approx(40.0)
    assert out["this_cpu_ms_per_request"] == pytest.approx(100.0)
    assert out["this_cpu_ms_above_floor"] == pytest.approx(50.0)
    assert out["capacity_vs_baseline"] == pytest.approx(1.25)


def test_md1_mean_wait_matches_the_closed_form():
    # M/D/1: W = rho S / (2 (1 - rho)); 10/s of 50 ms: rho 0.5, W 25 ms.
    stats = simulate_fcfs(10.0, [50.0], servers=1, arrivals=200_000, seed=3)
    assert stats.utilisation == pytest.approx(0.5)
    assert stats.mean_wait_ms == pytest.approx(25.0, rel=0.03)


def test_mm1_sojourn_quantiles_match_the_closed_form():
    # M/M/1: the sojourn is exponential with rate mu - lambda = 20 - 10 /s: mean 100 ms,
    # p50 = 100 ln 2, p99 = 100 ln 100.
    service = np.random.default_rng(99).exponential(50.0, size=200_000)
    stats = simulate_fcfs(10.0, service, servers=1, arrivals=200_000, seed=4)
    assert stats.sojourn_ms.mean == pytest.approx(100.0, rel=0.03)
    assert stats.sojourn_ms.p50 == pytest.approx(100.0 * math.log(2), rel=0.03)
    assert stats.sojourn_ms.p99 == pytest.approx(100.0 * math.log(100), rel=0.05)


def test_mm2_mean_wait_matches_erlang_c():
    # M/M/2, lambda 20/s, mu 20/s: a = 1, Erlang C = 1/3, Wq = C / (2 mu - lambda) = 1/60 s.
    service = np.random.default_rng(7).exponential(50.0, size=200_000)
    stats = simulate_fcfs(20.0, service, servers=2, arrivals=200_000, seed=5)
    assert stats.utilisation == pytest.approx(0.5, rel=0.01)
    assert stats.mean_wait_ms == pytest.approx(1000.0 / 60.0, rel=0.05)
    # The same load on one server twice as fast waits longer in the mean (M/M/1 at rho 0.5: 25 ms).
    one = simulate_fcfs(20.0, service / 2, servers=1, arrivals=200_000, seed=5)
    assert one.mean_wait_ms == pytest.approx(25.0, rel=0.05)


def test_simulation_is_seeded():
    a = simulate_fcfs(15.0, [40.0, 50.0, 60.0], servers=2, arrivals=5000, seed=1)
    b = simulate_fcfs(15.0, [40.0, 50.0, 60.0], servers=2, arrivals=5000, seed=1)
    c = simulate_fcfs(15.0, [40.0, 50.0, 60.0], servers=2, arrivals=5000, seed=2)
    assert a == b and a != c


def test_samples_from_summary_follow_the_quantiles():
    samples = samples_from_summary({"min": 10.0, "p50": 20.0, "p90": 30.0, "p99": 40.0, "max": 50.0}, n=1000)
    assert np.all(np.diff(samples) >= 0) and samples.min() >= 10.0 and samples.max() <= 50.0
    assert np.quantile(samples, 0.25) == pytest.approx(15.0, abs=0.1)  # halfway from min to p50
    assert np.quantile(samples, 0.5) == pytest.approx(20.0, abs=0.1)
    assert np.quantile(samples, 0.95) == pytest.approx(30.0 + 10.0 * 5 / 9, abs=0.2)


def test_queue_reference_scales_service_to_the_run_utilisation():
    ref = queue_reference(14.0, [40.0, 50.0, 60.0], cores=2, capacity_rps=20.0, config=QueueConfig(20_000, 1))
    at_run = ref["at_run_utilisation"]["queues"]
    assert [q["servers"] for q in at_run] == [2, 1]
    for q in at_run:
        assert q["utilisation"] == pytest.approx(0.7)  # 14 / 20 rps
    assert at_run[0]["service_mean_ms"] == pytest.approx(100.0)  # 2 cores x 1000 / 20 rps
    assert at_run[1]["service_mean_ms"] == pytest.approx(50.0)
    sampled = ref["as_sampled"]["queues"]
    assert sampled[0]["utilisation"] == pytest.approx(14.0 * 0.05 / 2)


def _result(raw_samples: bool) -> dict:
    unloaded = {"latency_ms": {"n": 4, "p50": 45.0, "p90": 50.0, "p99": 55.0, "mean": 46.0, "min": 40.0,
                               "max": 56.0}}
    if raw_samples:
        unloaded["latency_samples_ms"] = [40.0, 45.0, 50.0, 55.0]
    return {
        "machine": {"cpus_usable": 2, "cpu_count": 2},
        "stages": _stages(),
        "e2e": {"plan": {"nominal_fraction": 0.7},
                "matrix": {"frames": {"5": {"capacity_rps": 20.0, "closed_loop": {"1": unloaded},
                                            "open_loop": {"0.7": {"offered_rps": 14.0,
                                                                  "latency_ms": {"p50": 80.0, "p99": 240.0}}}}}}},
        "comparison": {"frames": {"5f": {"idv": {"p50": 45.0}, "peer": {"p50": 80.0}},
                                  "1f": {"idv": {"p50": 99.0}, "peer": {"p50": 99.0}}}},
        "baseline": {"frames": {"1f": {"idv": {"p50": 20.0}, "peer": {"p50": 16.0}}},
                     "capacity": {"capacity_rps": {"idv": 24.0, "baseline": 16.0}}},
    }


def test_floors_from_a_results_dict():
    floors = floors_from_results(_result(raw_samples=True), queue=QueueConfig(arrivals=5000, seed=1))
    assert floors["cores"] == 2
    capacity = floors["capacity"]
    assert capacity["model_cpu_floor_ms"] == pytest.approx(68.3)
    assert capacity["capacity_vs_baseline_ceiling"] == pytest.approx(round(125.0 / 68.3, 3))
    assert capacity["capacity_vs_baseline"] == pytest.approx(1.5)
    five, one = floors["latency"]["5f"], floors["latency"]["1f"]
    assert five["source"] == "comparison.frames.5f" and five["peer_ratio_measured"] == pytest.approx(45.0 / 80.0,
                                                                                                      abs=1e-3)
    assert five["peer_ratio_best_dependent"] == pytest.approx(round(35.8 / 80.0, 3))
    # The 1-frame headline ratio comes from the baseline rounds: so does its floor's peer.
    assert one["source"] == "baseline.frames.1f" and one["peer_p50_ms"] == 16.0
    assert one["peer_ratio_best_dependent"] == pytest.approx(round(16.3 / 16.0, 3))
    queueing = floors["queueing"]
    assert queueing["service_samples"]["kind"] == "raw samples" and queueing["service_samples"]["n"] == 4
    assert queueing["measured"]["p99_over_p50"] == pytest.approx(3.0)
    assert queueing["arrival_rate_rps"] == 14.0
    generous = floors["at_stage_min"]  # every stage at its fastest call: a higher ceiling
    assert generous["capacity_vs_baseline_ceiling"] > capacity["capacity_vs_baseline_ceiling"]
    line = log_line(floors)
    assert "ceiling 1.83" in line and "target >= 2.5" in line and "p99/p50 at 0.7x 3.0" in line

    reconstructed = floors_from_results(_result(raw_samples=False), queue=QueueConfig(arrivals=5000, seed=1))
    assert reconstructed["queueing"]["service_samples"]["kind"].startswith("reconstructed")


def test_floors_without_a_baseline_node():
    result = _result(raw_samples=True)
    del result["baseline"]
    floors = floors_from_results(result, queue=QueueConfig(arrivals=2000, seed=1))
    assert floors["capacity"]["available"] is False
    assert floors["latency"]["1f"]["source"] == "comparison.frames.1f"


def test_committed_latency_json_has_what_the_floors_read():
    """The published result's schema (stage names, sections) is the one floors.py reads."""
    data = json.loads((REPO / "benchmarks" / "results" / "latency.json").read_text())
    floors = floors_from_results(data, queue=QueueConfig(arrivals=2000, seed=1))
    parts = floors["model_cpu"]["5f"]["parts"]
    for stage in data["stages"]["per_frame_ms"]:
        assert any(name == stage or name.startswith(f"{stage} (") for name in parts), stage
    assert floors["capacity"]["capacity_vs_baseline"] == data["headline"]["capacity_vs_baseline"]
    assert floors["latency"]["5f"]["peer_ratio_measured"] == data["headline"]["peer_latency_ratio"]
    assert floors["latency"]["1f"]["peer_ratio_measured"] == data["headline"]["peer_latency_ratio_1f"]
