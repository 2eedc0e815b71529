"""Percentile summaries of latency samples (milliseconds)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Summary:
    n: int
    p50: float
    p90: float
    p99: float
    mean: float
    min: float
    max: float

    @classmethod
    def of(cls, samples_ms: Sequence[float]) -> Summary | None:
        if len(samples_ms) == 0:
            return None
        a = np.asarray(samples_ms, dtype=np.float64)
        # "higher": a reported p99 is a latency that was actually observed, never an interpolation below it.
        p50, p90, p99 = (float(np.percentile(a, q, method="higher")) for q in (50, 90, 99))
        return cls(len(a), p50, p90, p99, float(a.mean()), float(a.min()), float(a.max()))

    def as_dict(self) -> dict[str, float | int]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def summary_dict(samples_ms: Sequence[float]) -> dict[str, float | int] | None:
    summary = Summary.of(samples_ms)
    return summary.as_dict() if summary else None
