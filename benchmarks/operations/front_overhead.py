"""What the connection front (idv/front.py) costs: a 5-frame Verify and a Health check, through the
front (the public port) and straight to the gRPC server's private loopback port, interleaved.

Runs a node in this process on free ports (throwaway data dir, plaintext on loopback), enrols one
NUAA subject, then sends `--rounds` pairs of calls (front, direct) on two warm channels, alternating
which goes first. Writes benchmarks/results/front_overhead.json (or --out).

    .venv/bin/python benchmarks/operations/front_overhead.py [--rounds 40]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from idv.client import IdvClient  # noqa: E402
from idv.config import load_settings  # noqa: E402
from idv.node import build_node  # noqa: E402
from tests.conftest import ID_SUBJECT_1, SHARED, nuaa_frames, nuaa_sequences  # noqa: E402


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"n": len(ordered), "mean_ms": round(statistics.mean(ordered) * 1000, 2),
            "p50_ms": round(ordered[len(ordered) // 2] * 1000, 2),
            "p95_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "front_overhead.json")
    args = parser.parse_args()
    testdata = SHARED / "testdata"
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(overrides={
            "port": 0, "data_dir": Path(tmp) / "data", "metrics_port": -1, "challenge_passive_only_for": "check_in",
            "integrity__replay_check": False, "caller_requests_per_minute": 100000})
        node = build_node(settings)
        try:
            node.load()
            burst = [p.read_bytes() for p in next(iter(nuaa_sequences(testdata, "live", "0001").values()))[:15:3]]
            reference = nuaa_frames(testdata, "print", "0001")[0].read_bytes()
            routes = {"front": node.port, "direct": node.server_port}
            clients = {name: IdvClient(f"127.0.0.1:{port}", timeout=30, retries=0) for name, port in routes.items()}
            clients["front"].enroll(ID_SUBJECT_1, "张三", [reference])
            verify: dict[str, list[float]] = {name: [] for name in routes}
            health: dict[str, list[float]] = {name: [] for name in routes}
            for name, client in clients.items():  # warm both channels
                assert client.verify(ID_SUBJECT_1, "张三", burst).verdict == "PASS"
            for round_ in range(args.rounds):
                order = list(routes) if round_ % 2 == 0 else list(reversed(routes))
                for name in order:
                    started = time.perf_counter()
                    verdict = clients[name].verify(ID_SUBJECT_1, "张三", burst).verdict
                    verify[name].append(time.perf_counter() - started)
                    assert verdict == "PASS", verdict
                    started = time.perf_counter()
                    clients[name].health()
                    health[name].append(time.perf_counter() - started)
            for client in clients.values():
                client.close()
        finally:
            node.stop(0)
    result = {
        "what": "5-frame Verify (NUAA live 0001, PASS) and Health, through the connection front vs straight to "
                "the gRPC server's private port, same node, interleaved, loopback, plaintext",
        "request_bytes": sum(len(f) for f in burst),
        "machine_cpus": os.cpu_count(),
        "verify": {name: _summary(samples) for name, samples in verify.items()},
        "health": {name: _summary(samples) for name, samples in health.items()},
    }
    result["verify_p50_overhead_ms"] = round(result["verify"]["front"]["p50_ms"] - result["verify"]["direct"]["p50_ms"], 2)
    result["health_p50_overhead_ms"] = round(result["health"]["front"]["p50_ms"] - result["health"]["direct"]["p50_ms"], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
