"""Which frames of a burst the recognizer sees (issue 12: work per burst, not per frame).

Every frame is detected and quality-checked (liveness and the challenge need every face
box), but a burst of one person at one moment does not need every frame embedded: the
`embed_frames` best usable ones, spread over the burst, are embedded (one crop per model call,
the k calls side by side on the node's frame pool) and their mean is the probe. Spread, because a burst spliced from two captures is then seen on
both sides by the identity cue; best, because a motion-blurred frame is the worst probe.
k and the detection scale were chosen in benchmarks/accuracy/burst_sweep.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BurstPolicy:
    """The `[burst]` settings section (defaults from benchmarks/results/burst_sweep.json)."""

    embed_frames: int = 3  # k: frames embedded per burst (the best, spread over the burst)
    refine_landmarks: bool = True  # re-detect the embedded faces at full resolution before aligning
    # A burst of more frames than this (a challenge's 24) is detected on shrunk copies first; only
    # the frames embedded or judged by the liveness cues are then detected at full size. 0 (the
    # default): every frame at full size. Not on by default: with 8, 14 of 504 paired decisions
    # moved on the attack data, all on 24-frame challenge bursts (FaceMesh crops and the track
    # read the coarse boxes), one synthetic talking head passing (benchmarks/results/
    # paired_decisions.json).
    coarse_detection_above: int = 0

    def problems(self) -> list[str]:
        problems = ["burst.embed_frames must be at least 1"] if self.embed_frames < 1 else []
        if self.coarse_detection_above < 0:
            problems.append("burst.coarse_detection_above must be 0 (off) or a frame count")
        return problems


def pick_frames(positions: Sequence[int], quality: Sequence[float], k: int) -> list[int]:
    """Indices into `positions` (burst order) of the k frames to embed: the burst is cut into
    k consecutive runs of usable frames and the best-quality frame of each run is taken."""
    if len(positions) != len(quality):
        raise ValueError("one quality value per frame is needed")
    if len(positions) <= k:
        return list(range(len(positions)))
    runs = np.array_split(np.arange(len(positions)), k)
    return [int(run[int(np.argmax([quality[i] for i in run]))]) for run in runs]
