"""Where the numbers came from: commit, CPU, library versions, model digests, and how busy the machine was.

This machine has 2 cores and is shared: other jobs may run during a benchmark.
`CpuMonitor` measures how many cores *other* processes kept busy during a
measurement, so a slow result can be told apart from a noisy neighbour.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.latency.data import REPO

from idv.evaluation.provenance import cpu_model  # one definition for every results file

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def git_state(repo: Path = REPO) -> dict[str, object]:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False).stdout

    # The request path is what a latency number describes; uncommitted edits there make the commit id approximate.
    dirty = [line[3:] for line in git("status", "--porcelain", "--", "idv", "liveness", "models", "server.py").splitlines()]
    # issue 12: a result from a tree with any uncommitted change is not written unless --allow-dirty,
    # and then carries clean_tree = false (never commit such a result).
    anywhere = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    return {"commit": git("rev-parse", "HEAD").strip(), "request_path_uncommitted": sorted(dirty),
            "clean_tree": not anywhere, "uncommitted": sorted(anywhere)}




def cpu_flags() -> list[str]:
    """The CPU's feature flags (AVX-512, VNNI, ...): which model build wins depends on them."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return sorted(line.split(":", 1)[1].split())
    return []


def machine_info() -> dict[str, object]:
    import cv2
    import grpc
    import numpy
    import onnxruntime

    return {
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_mib": _meminfo_mib("MemTotal"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "opencv": cv2.__version__,
        "grpcio": grpc.__version__,
        "numpy": numpy.__version__,
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
    }


def _meminfo_mib(key: str) -> int | None:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) // 1024
    return None


def model_fingerprints(model_dir: Path, files: Iterable[str]) -> dict[str, str]:
    """sha256 of each model file actually read (not the manifest's claim)."""
    return {name: sha256_file(model_dir / name) for name in sorted(set(files)) if (model_dir / name).is_file()}


def _machine_busy_ticks() -> tuple[int, int]:
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def _process_ticks(pid: int) -> int:
    try:
        # Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
        rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(rest[11]) + int(rest[12])
    except (OSError, IndexError, ValueError):
        return 0


def _own_ticks() -> float:
    t = os.times()
    # Includes children this process has waited for (finished helper processes).
    return (t.user + t.system + t.children_user + t.children_system) * _CLK_TCK


@dataclass(frozen=True)
class CpuUse:
    seconds: float
    machine_busy_cores: float  # average cores busy, all processes
    ours_cores: float  # this process, its reaped children and the tracked (live) processes
    others_cores: float  # everything else on the machine: noise

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.__dict__.items()}


class CpuMonitor:
    """Use as `with CpuMonitor([server_pid]) as m: ...; m.result` (tracked pids must outlive the block)."""

    def __init__(self, pids: Iterable[int] = ()):
        self._pids = tuple(pids)
        self.result: CpuUse | None = None

    def __enter__(self) -> CpuMonitor:
        self._t0 = time.monotonic()
        self._busy0, _ = _machine_busy_ticks()
        self._ours0 = _own_ticks() + sum(_process_ticks(p) for p in self._pids)
        return self

    def __exit__(self, *exc: object) -> None:
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        busy1, _ = _machine_busy_ticks()
        ours1 = _own_ticks() + sum(_process_ticks(p) for p in self._pids)
        busy = (busy1 - self._busy0) / _CLK_TCK / elapsed
        ours = (ours1 - self._ours0) / _CLK_TCK / elapsed
        self.result = CpuUse(elapsed, busy, ours, max(busy - ours, 0.0))


def peak_rss_mib(pid: int) -> float | None:
    """VmHWM: the process's resident-set high-water mark since it started."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
