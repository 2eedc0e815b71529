"""A real idv node in its own process: `python server.py --port 0` with a throwaway data directory.

The port is the one the node reports in its "listening" log line (port 0 lets
the kernel choose, so two runs never race for a port). Settings reach it only
through IDV_* environment variables, as in a deployment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.latency.data import REPO
from benchmarks.latency.machine import peak_rss_mib


@dataclass(frozen=True)
class NodeConfig:
    worker_threads: int
    intra_op_threads: int
    max_concurrent_rpcs: int = 8
    model_dir: Path | None = None
    manifest: Path | None = None  # None: the committed idv/models/manifest.toml
    extra_env: dict[str, str] = field(default_factory=dict)
    repo: Path = REPO  # the tree whose server.py (and idv package) runs: another for a baseline node

    def env(self, data_dir: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IDV_")}
        env.update(
            IDV_DATA_DIR=str(data_dir),
            IDV_WORKER_THREADS=str(self.worker_threads),
            IDV_INTRA_OP_THREADS=str(self.intra_op_threads),
            IDV_MAX_CONCURRENT_RPCS=str(self.max_concurrent_rpcs),
            IDV_LOG_LEVEL="INFO",
            # 1-frame Verify is refused by default (liveness needs motion); operators may allow a
            # passive-only single-frame check, which is what the 1-frame rows measure.
            IDV_LIVENESS_ALLOW_SINGLE_FRAME="true",
            # The benchmarks measure the passive CHECK_IN path: allowed explicitly (issue 14 default: a challenge).
            IDV_CHALLENGE_PASSIVE_ONLY_FOR="check_in",
        )
        if self.model_dir is not None:
            env["IDV_MODEL_DIR"] = str(self.model_dir)
        if self.manifest is not None:
            env["IDV_MODEL_MANIFEST"] = str(self.manifest)
        env.update(self.extra_env)
        return env


class NodeProcess:
    """Context manager: start, wait for SERVING, stop with SIGTERM on exit."""

    def __init__(self, config: NodeConfig, start_timeout: float = 90.0):
        self.config = config
        self._start_timeout = start_timeout
        self.port = 0
        self.seconds_to_serving = 0.0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> NodeProcess:
        self._tmp = tempfile.TemporaryDirectory(prefix="idv-bench-node-")
        tmp = Path(self._tmp.name)
        self.log_path = tmp / "node.log"
        started = time.monotonic()
        with self.log_path.open("wb") as log:
            # The log goes to a file, not a pipe: an undrained pipe would block the node under load.
            self._proc = subprocess.Popen([sys.executable, str(self.config.repo / "server.py"), "--port", "0"],
                                          cwd=self.config.repo, env=self.config.env(tmp / "data"),
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            self.port = self._wait_for("listening", started)["port"]
            self._wait_for("serving", started)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.seconds_to_serving = time.monotonic() - started
        return self

    def _wait_for(self, message: str, started: float) -> dict[str, Any]:
        while time.monotonic() - started < self._start_timeout:
            for entry in self.log_entries():
                if entry.get("msg") == message:
                    return entry
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"the node exited ({self._proc.returncode}) before {message!r}:\n{self.log_tail()}")
            time.sleep(0.05)
        raise TimeoutError(f"the node did not log {message!r} within {self._start_timeout} s:\n{self.log_tail()}")

    def log_entries(self) -> list[dict[str, Any]]:
        entries = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return entries

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def peak_rss_mib(self) -> float | None:
        return peak_rss_mib(self.pid)

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._tmp.cleanup()
