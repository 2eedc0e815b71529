"""A second node built from another git revision, measured interleaved with this one and the peer.

The baseline is checked out with `git worktree add --detach` into a temporary directory and
served by the same Python environment (`python server.py` from that tree imports that tree's
`idv`), with that tree's own committed manifest; its models are pulled into the same model
cache first (files are pinned by digest, so the two nodes share what they have in common).

Default revision: the newest release tag before HEAD; with no tag, the commit the committed
benchmarks/results/latency.json was measured at (the last published numbers); else pass
`--baseline REV` (e.g. HEAD~10).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.latency.data import REPO


class BaselineError(RuntimeError):
    """The baseline revision cannot be found or built."""


def _git(*args: str, cwd: Path = REPO, check: bool = True) -> str:
    done = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise BaselineError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def default_revision() -> str:
    tag = _git("describe", "--tags", "--abbrev=0", "HEAD^", check=False)
    if tag:
        return tag
    published = REPO / "benchmarks" / "results" / "latency.json"
    if published.is_file():
        commit = str(json.loads(published.read_text()).get("git", {}).get("commit", "")).removesuffix("-dirty")
        ancestor = subprocess.run(["git", "-C", str(REPO), "merge-base", "--is-ancestor", commit, "HEAD"],
                                  capture_output=True, check=False).returncode == 0
        if commit and ancestor:
            return commit
    raise BaselineError("no release tag and no published latency.json commit: pass --baseline REV (e.g. HEAD~10)")


class BaselineTree:
    """Context manager: a detached worktree of `revision` with its models pulled; removed on exit."""

    def __init__(self, revision: str, log=print):
        self.revision = revision
        self.commit = _git("rev-parse", "--verify", f"{revision}^{{commit}}")
        self._log = log
        self.path = Path()

    def __enter__(self) -> BaselineTree:
        self._tmp = tempfile.mkdtemp(prefix="idv-baseline-")
        self.path = Path(self._tmp) / "tree"
        _git("worktree", "add", "--detach", str(self.path), self.commit)
        try:
            self._pull_models()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _pull_models(self) -> None:
        env = {k: v for k, v in os.environ.items()}
        command = [sys.executable, "-m", "idv.cli", "models", "pull"]
        if env.get("IDV_MODEL_MIRROR"):
            command += ["--mirror", env["IDV_MODEL_MIRROR"], "--offline"]
        self._log(f"baseline {self.commit[:12]}: pulling its models")
        done = subprocess.run(command, cwd=self.path, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BaselineError(f"`idv models pull` in the baseline tree failed:\n{done.stderr[-2000:]}")

    def __exit__(self, *exc: object) -> None:
        _git("worktree", "remove", "--force", str(self.path), check=False)
        _git("worktree", "prune", check=False)
        subprocess.run(["rm", "-rf", self._tmp], check=False)
