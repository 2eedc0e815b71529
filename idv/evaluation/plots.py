"""ROC and DET plots (PNG). matplotlib is an optional dependency (the `bench` extra): imported on use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from idv.evaluation.metrics import ScoreSet, error_curve, plot_thresholds


@dataclass(frozen=True, eq=False)
class Series:
    label: str
    scores: ScoreSet


@dataclass(frozen=True)
class Marker:
    label: str
    threshold: float


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def plot_curves(
    series: list[Series], path: Path, title: str, kind: str, markers: list[Marker] | None = None
) -> None:
    """kind "roc": TMR against FMR (log); kind "det": FNMR against FMR (both log).

    Markers show where fixed thresholds (e.g. the service's) fall on the first series.
    """
    if kind not in ("roc", "det"):
        raise ValueError(f"kind must be roc or det, not {kind!r}")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 5.5), dpi=120)
    for item in series:
        curve = error_curve(item.scores, plot_thresholds(item.scores))
        keep = curve.fmr > 0  # a log axis has no place for FMR = 0
        y = 1.0 - curve.fnmr if kind == "roc" else curve.fnmr
        if kind == "det":
            keep &= curve.fnmr > 0
        ax.plot(curve.fmr[keep], y[keep], label=item.label, linewidth=1.6)
    if markers and series:
        first = series[0].scores
        for marker in markers:
            fmr, fnmr = first.fmr(marker.threshold), first.fnmr(marker.threshold)
            if fmr <= 0:
                continue
            y = 1.0 - fnmr if kind == "roc" else fnmr
            ax.plot([fmr], [max(y, 1e-4)], marker="o", color="black", markersize=4)
            ax.annotate(marker.label, (fmr, max(y, 1e-4)), textcoords="offset points", xytext=(5, -12), fontsize=8)
    ax.set_xscale("log")
    floor = min(1.0 / max(s.scores.n_impostor, 1) for s in series) if series else 1e-6
    ax.set_xlim(max(floor, 1e-7), 1.0)
    ax.set_xlabel("FMR (false match rate)")
    if kind == "roc":
        ax.set_ylabel("TMR = 1 - FNMR")
        ax.set_ylim(min(0.5, ax.get_ylim()[0]), 1.0)
    else:
        ax.set_yscale("log")
        ax.set_ylabel("FNMR (false non-match rate)")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right" if kind == "roc" else "upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
