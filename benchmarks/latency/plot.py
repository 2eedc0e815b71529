"""One figure for latency.json: open-loop latency against offered load, and the thread sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_latency(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on a server
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for frames, entry in sorted(result["e2e"]["matrix"]["frames"].items()):
        runs = sorted(entry["open_loop"].values(), key=lambda r: r["offered_rps"])
        runs = [r for r in runs if r.get("latency_ms")]
        x = [r["offered_rps"] for r in runs]
        left.plot(x, [r["latency_ms"]["p50"] for r in runs], "o-", label=f"{frames} frame(s) p50")
        left.plot(x, [r["latency_ms"]["p99"] for r in runs], "s--", label=f"{frames} frame(s) p99")
        left.axvline(entry["capacity_rps"], color="grey", lw=0.6, ls=":")
    left.set_xlabel("offered load, requests/s (Poisson; dotted: measured capacity)")
    left.set_ylabel("latency from scheduled send, ms")
    left.set_yscale("log")
    left.set_title("Verify over gRPC, open loop")
    left.legend(fontsize=8)

    sweep = result["e2e"].get("sweep") or []
    if sweep:
        labels = [f"w{r['worker_threads']}×i{r['intra_op_threads']}" for r in sweep]
        capacity = [r["capacity"]["throughput_rps"] for r in sweep]
        unloaded = [r["unloaded"]["latency_ms"]["p50"] for r in sweep]
        bars = right.bar(labels, capacity, color="tab:blue", alpha=0.7)
        chosen = result.get("chosen_default") or {}
        for bar, r in zip(bars, sweep):
            if (r["worker_threads"], r["intra_op_threads"]) == (chosen.get("worker_threads"), chosen.get("intra_op_threads")):
                bar.set_color("tab:green")
        right.set_ylabel("5-frame capacity, requests/s (bars)")
        twin = right.twinx()
        twin.plot(labels, unloaded, "ko-")
        twin.set_ylabel("unloaded p50, ms (dots)")
        right.set_title("workers × intra-op threads (green: chosen)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
