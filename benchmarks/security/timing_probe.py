"""An outsider's timing probe: does an unknown ID answer faster or slower than a known ID with the wrong face?

Starts a real node (`server.py`) on a free port with a temporary data dir, enrols one
identity, then sends N interleaved Verify calls of each kind (same frames, same name,
CHECK_IN) and records the client-side latency. Writes benchmarks/results/timing_probe.json.

    .venv/bin/python benchmarks/security/timing_probe.py [--calls 200] [--frames 3]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    from idv.client import IdvClient
    from idv.identity import make_id_number

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "testdata")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "timing_probe.json")
    args = parser.parse_args()

    live = sorted((args.data_dir / "nuaa" / "live" / "0002").glob("*.jpg"))
    frames = [p.read_bytes() for p in live[: args.frames * 3 : 3]]
    reference = sorted((args.data_dir / "nuaa" / "print" / "0001").glob("*.jpg"))[0].read_bytes()
    enrolled = make_id_number("110105", date(1949, 12, 31), 2)
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="idv-timing-") as data_dir:
        env = {**os.environ, "IDV_DATA_DIR": data_dir, "IDV_METRICS_PORT": "-1",
               "IDV_CHALLENGE_PASSIVE_ONLY_FOR": "check_in",  # passive CHECK_IN probed (issue 14)
               "IDV_CALLER_REQUESTS_PER_MINUTE": "1000000", "IDV_CALLER_DISTINCT_IDENTITIES_PER_HOUR": "1000000",
               "IDV_LOCKOUT_AFTER_FAILURES": "1000000", "IDV_FAILURE_CAP": "1000000"}
        server = subprocess.Popen([sys.executable, str(REPO / "server.py"), "--port", str(port)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with IdvClient(f"127.0.0.1:{port}", timeout=30, retries=0) as client:
                client.wait_until_serving(120)
                client.enroll(enrolled, "张三", [reference])
                for _ in range(5):  # warm both paths
                    client.verify(enrolled, "张三", frames)
                timings: dict[str, list[float]] = {"unknown_id": [], "face_mismatch": []}
                for i in range(args.calls):
                    order = ("unknown_id", "face_mismatch") if i % 2 else ("face_mismatch", "unknown_id")
                    for kind in order:
                        id_number = make_id_number("110101", date(1990, 1, 1), i) if kind == "unknown_id" else enrolled
                        start = time.perf_counter()
                        result = client.verify(id_number, "张三", frames)
                        timings[kind].append((time.perf_counter() - start) * 1000)
                        assert result.reason == "NOT_VERIFIED", result
        finally:
            server.terminate()
            server.wait(timeout=30)
    summary = {kind: {"median_ms": round(statistics.median(v), 3), "p10_ms": round(_percentile(v, 0.1), 3),
                      "p90_ms": round(_percentile(v, 0.9), 3), "calls": len(v)} for kind, v in timings.items()}
    difference = abs(summary["unknown_id"]["median_ms"] - summary["face_mismatch"]["median_ms"])
    result = {
        "benchmark": "timing_probe",
        "git_commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                     text=True).stdout.strip(),
        "frames_per_call": args.frames,
        "results": summary,
        "median_difference_ms": round(difference, 3),
        "criterion": "medians within 5 ms (RELIABILITY.md B11)",
        "passed": difference < 5.0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    sys.stdout.write(json.dumps(result["results"]) + f"\nmedian difference {difference:.2f} ms\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
