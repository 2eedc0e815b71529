"""benchmarks/results/scale.json: one section per benchmark, merged so each can be rerun alone."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results" / "scale.json"


def machine() -> dict[str, object]:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=RESULTS.parents[2]).stdout.strip()
    return {"cpu_count": os.cpu_count(), "python": platform.python_version(), "git_commit": commit,
            "load_average_at_start": os.getloadavg()}


def write_section(name: str, section: dict[str, object]) -> None:
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[name] = section
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
