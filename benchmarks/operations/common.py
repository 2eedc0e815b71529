"""What the overload and soak benchmarks share: a node pinned apart from the load generator,
process gauges read from /proc, and capacity found with the latency benchmark's closed loop.

Numbers measured on a shared machine say little: run these on the target hardware, with
nothing else running, and keep the JSON they write next to the machine's description.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from benchmarks.latency.data import Probe
from benchmarks.latency.e2e import BENCH_NODE_ENV, verify_request
from benchmarks.latency.loadgen import LoadSpec, run_load, summarise
from benchmarks.latency.node_process import NodeConfig, NodeProcess


def split_cores() -> tuple[set[int], set[int]]:
    """(node cores, load generator cores): the generator on the last core when there are 2 or more."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return set(cores), set(cores)
    return set(cores[:-1]), {cores[-1]}


def pin_process(pid: int, cores: set[int]) -> None:
    """Every thread of `pid` (onnxruntime and gRPC start theirs early) onto `cores`."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cores)
        except (OSError, ValueError):
            pass  # a thread that just ended


def process_gauges(pid: int) -> dict[str, float]:
    """RSS (MiB), open file descriptors and threads of the node right now."""
    status = {line.split(":")[0]: line.split(":")[1].strip()
              for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line}
    return {"rss_mib": int(status["VmRSS"].split()[0]) / 1024, "threads": int(status["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def start_node(data_dir: Path | None = None, max_concurrent_rpcs: int = 8, worker_threads: int = 4,
               extra_env: dict[str, str] | None = None) -> NodeProcess:
    env = dict(BENCH_NODE_ENV)
    if data_dir is not None:
        env["IDV_DATA_DIR"] = str(data_dir)
    env.update(extra_env or {})
    return NodeProcess(NodeConfig(worker_threads, 1, max_concurrent_rpcs, extra_env=env))


def capacity_rps(node: NodeProcess, probe: Probe, frames: int, seconds: float, concurrency: int = 4) -> float:
    """Best sustained goodput at `concurrency` requests in flight (closed loop)."""
    spec = LoadSpec("closed", seconds, concurrency=concurrency, min_requests=20, max_duration_s=seconds * 3)
    outcomes = asyncio.run(run_load(node.target, verify_request(probe, frames), spec))
    return float(summarise(outcomes, spec)["throughput_rps"])
