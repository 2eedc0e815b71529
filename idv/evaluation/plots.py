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
    Either comes with a histogram of the first series' genuine and impostor scores.

    Markers show where fixed thresholds (e.g. the service's) fall on the first series.
    """
    if kind not in ("roc", "det"):
        raise ValueError(f"kind must be roc or det, not {kind!r}")
    plt = _pyplot()
    fig, (ax, hist_ax) = plt.subplots(1, 2, figsize=(12.0, 5.0), dpi=110, gridspec_kw={"width_ratios": [3, 2]})
    # Log axes cannot show a zero rate: a zero FNMR is drawn at half of 1/genuine-count
    # (a dotted floor line says so); points with FMR = 0 are left out.
    fnmr_floor = min(0.5 / max(item.scores.n_genuine, 1) for item in series) if series else 1e-4
    # A ROC's left end rests on a handful of impostor scores; start it where at least
    # ten false matches stand behind each point, so the operating region fills the plot.
    floor = min(1.0 / max(s.scores.n_impostor, 1) for s in series) if series else 1e-6
    x_min = 10 * floor if kind == "roc" else floor / 2
    lowest_y = 1.0
    for item in series:
        curve = error_curve(item.scores, plot_thresholds(item.scores))
        keep = curve.fmr >= x_min
        y = 1.0 - curve.fnmr if kind == "roc" else np.maximum(curve.fnmr, fnmr_floor)
        if keep.any():
            lowest_y = min(lowest_y, float(y[keep].min()))
        ax.plot(curve.fmr[keep], y[keep], label=item.label, linewidth=1.6)
    if markers and series:
        first = series[0].scores
        for marker in markers:
            fmr, fnmr = first.fmr(marker.threshold), first.fnmr(marker.threshold)
            if fmr < x_min or fmr <= 0:
                continue
            y = 1.0 - fnmr if kind == "roc" else max(fnmr, fnmr_floor)
            ax.plot([fmr], [y], marker="o", color="black", markersize=4)
            ax.annotate(marker.label, (fmr, y), textcoords="offset points", xytext=(5, 6), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(max(x_min, 1e-8), 1.0)
    ax.set_xlabel("FMR (false match rate)")
    if kind == "roc":
        ax.set_ylabel("TMR = 1 - FNMR")
        ax.set_ylim(max(0.0, np.floor(lowest_y * 20) / 20 - 0.01), 1.002)
    else:
        ax.set_yscale("log")
        ax.set_ylim(fnmr_floor / 2, 1.0)
        ax.axhline(fnmr_floor, linestyle=":", color="grey", linewidth=1)
        ax.annotate("FNMR = 0 is drawn on this line", (1.0, fnmr_floor), textcoords="offset points",
                    xytext=(-4, 3), ha="right", fontsize=7, color="grey")
        ax.set_ylabel("FNMR (false non-match rate)")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right" if kind == "roc" else "upper right")
    if series:
        _score_histogram(hist_ax, series[0], markers or [])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _score_histogram(ax, item: Series, markers: list[Marker]) -> None:
    """Genuine and impostor score counts of one series (log counts, so both tails show), thresholds as lines."""
    scores = item.scores
    bins = np.linspace(min(scores.impostor[0], scores.genuine[0]), max(scores.impostor[-1], scores.genuine[-1]), 120)
    ax.hist(scores.impostor, bins=bins, histtype="stepfilled", alpha=0.45, label=f"impostor ({scores.n_impostor:,})")
    ax.hist(scores.genuine, bins=bins, histtype="stepfilled", alpha=0.45, label=f"genuine ({scores.n_genuine:,})")
    ax.set_yscale("log")
    for marker in markers:
        ax.axvline(marker.threshold, color="black", linewidth=0.8, linestyle="--")
        ax.annotate(f"{marker.label} {marker.threshold:.4f}", (marker.threshold, 0.98), xycoords=("data", "axes fraction"),
                    rotation=90, va="top", ha="right", fontsize=7)
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("comparisons")
    ax.set_title(f"scores: {item.label}", fontsize=8)
    ax.legend(fontsize=7, loc="best")
