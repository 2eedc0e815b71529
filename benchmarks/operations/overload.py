"""Overload: open-loop Poisson arrivals at 2x (and 1.5x) the node's capacity (RELIABILITY.md E2).

    .venv/bin/python -m benchmarks.operations.overload [--seconds 30] [--out FILE]

Pass criteria printed with the numbers: the excess is refused fast with RESOURCE_EXHAUSTED
/OVERLOADED (p99 of a refusal <= 50 ms), accepted calls keep p99 within the deadline, no
DEADLINE_EXCEEDED storm, goodput >= 90% of capacity. The node runs on all cores but the
last, the load generator on the last (when the machine has two or more).

Do not commit numbers measured on a shared development machine: they measure the
neighbours. The JSON goes to the temp directory unless --out says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from pathlib import Path

from benchmarks.latency.data import ID_NUMBER, NAME, probe
from benchmarks.latency.e2e import verify_request
from benchmarks.latency.loadgen import LoadSpec, run_load, summarise
from benchmarks.operations.common import capacity_rps, pin_process, split_cores, start_node
from idv.client import IdvClient


def run(seconds: float, factors: tuple[float, ...], frames: int, timeout: float) -> dict:
    node_cores, load_cores = split_cores()
    os.sched_setaffinity(0, load_cores)
    p = probe()
    with start_node() as node:
        pin_process(node.pid, node_cores)
        with IdvClient(node.target, timeout=30, retries=0) as client:
            client.enroll(ID_NUMBER, NAME, [p.reference])
        capacity = capacity_rps(node, p, frames, seconds=max(seconds / 3, 5.0))
        runs = []
        for factor in factors:
            spec = LoadSpec("open", seconds, rate_rps=capacity * factor, timeout_s=timeout, channels=8)
            outcomes = asyncio.run(run_load(node.target, verify_request(p, frames), spec))
            result = summarise(outcomes, spec)
            refused = [o.latency_ms for o in outcomes if o.status == "RESOURCE_EXHAUSTED/OVERLOADED"]
            refused.sort()
            result["factor"] = factor
            result["refused_overloaded"] = len(refused)
            result["refusal_p99_ms"] = round(refused[int(0.99 * (len(refused) - 1))], 2) if refused else None
            result["goodput_fraction_of_capacity"] = round(result["throughput_rps"] / capacity, 3) if capacity else None
            result["deadline_exceeded"] = sum(1 for o in outcomes if o.status.startswith("DEADLINE_EXCEEDED"))
            result["checks"] = {
                "goodput_at_least_90pct": (result["goodput_fraction_of_capacity"] or 0) >= 0.9,
                "refusal_p99_at_most_50ms": result["refusal_p99_ms"] is not None and result["refusal_p99_ms"] <= 50,
                "accepted_p99_within_deadline": (result["latency_ms"].get("p99") or 0) <= timeout * 1000,
                "no_deadline_storm": result["deadline_exceeded"] <= 0.01 * max(result["requests"], 1),
            }
            runs.append(result)
    return {"capacity_rps": capacity, "frames": frames, "node_cores": sorted(node_cores),
            "load_generator_cores": sorted(load_cores), "runs": runs,
            "note": "measured on this machine; not comparable across machines and not committed"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="each overload run")
    parser.add_argument("--factors", default="1.5,2.0")
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=5.0, help="client deadline per call")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "idv-overload.json")
    args = parser.parse_args(argv)
    result = run(args.seconds, tuple(float(f) for f in args.factors.split(",")), args.frames, args.timeout)
    args.out.write_text(json.dumps(result, indent=2))
    for r in result["runs"]:
        print(f"{r['factor']}x: offered {r['offered_rps']} rps, goodput {r['throughput_rps']} rps "
              f"({r['goodput_fraction_of_capacity']} of capacity {result['capacity_rps']:.2f}), "
              f"refused {r['refused_overloaded']} (p99 {r['refusal_p99_ms']} ms), accepted p99 "
              f"{r['latency_ms'].get('p99')} ms, errors {r['errors']}; checks {r['checks']}")
    print(f"written to {args.out}")
    return 0 if all(all(r["checks"].values()) for r in result["runs"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
