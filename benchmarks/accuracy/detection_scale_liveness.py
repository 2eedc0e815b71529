"""Which liveness cues move when detection runs on a downscaled copy, and what exactness costs.

    .venv/bin/python -W ignore benchmarks/accuracy/detection_scale_liveness.py [--shared DIR] [--out FILE]

Every burst of benchmarks/accuracy/liveness_data.py (stills left out: they repeat a bona fide
frame) is taken through the service's per-burst steps (idv.pipeline: subject and bystanders,
the quality gate, the k best usable frames spread over the burst, refined and embedded; the
liveness cues of the committed LivenessConfig) under four detection policies:

* `full`: the dynamic-input YuNet at the frame's own size (`detection_face_px` 60, the
  shipped default): the reference;
* `coarse_k`: the downscaled copy (`--target-face-px`, 24 by default), only the k embedded
  frames refined (what the service does with detection_face_px 24);
* `refine_cues`: as coarse_k, plus the frames the passive cue scores refined;
* `refine_all`: every frame refined (the quality gate and every cue on refined faces).

For each policy: every burst whose outcome differs from `full` with the cue verdicts on both
sides (which cue flipped), BPCER/APCER per split as liveness_eval reports them, the face box
deviation from `full` per source, and the detector's cost per frame and per burst (milliseconds
measured interleaved in this one process; relative on a shared machine).

Writes benchmarks/results/detection_scale_liveness.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from idv.evaluation.provenance import cpu_model  # noqa: E402
from idv.face.burst import BurstPolicy, pick_frames  # noqa: E402
from idv.face.detector import DetectionScale  # noqa: E402
from idv.face.embedder import align_face  # noqa: E402
from idv.face.quality import QualityLimits, assess  # noqa: E402
from idv.models.manifest import load_manifest  # noqa: E402
from idv.models.model_set import open_detector, open_embedder, open_minifasnets  # noqa: E402
from idv.models.pull import pull_models  # noqa: E402
from idv.pipeline import PipelineLimits, select_subject  # noqa: E402
from liveness import FaceObservation, LivenessChecker, LivenessConfig  # noqa: E402
from liveness.decision import decide, judge  # noqa: E402
from liveness_data import BONA_FIDE, nuaa_bursts, replay_bursts, video_bursts  # noqa: E402
from liveness_eval import HELD_OUT_SUBJECTS  # noqa: E402

log = logging.getLogger("detection_scale_liveness")
POLICIES = ("full", "coarse_k", "refine_cues", "refine_all")
CUES = ("passive", "motion", "identity", "planarity")


def _timed(fn, sink: list[float]):
    start = time.perf_counter()
    out = fn()
    sink.append((time.perf_counter() - start) * 1000.0)
    return out


def _deviation(a, b) -> float:
    """Largest difference of two faces' boxes and landmarks, in pixels."""
    return float(max(np.abs(np.asarray(a.box_xywh) - np.asarray(b.box_xywh)).max(),
                     np.abs(a.landmarks - b.landmarks).max()))


class Harness:
    def __init__(self, manifest, model_dir: Path, target_face_px: float):
        self.full = open_detector(manifest, "yunet_dynamic", model_dir, scale=DetectionScale(target_face_px=60.0))
        self.coarse = open_detector(manifest, "yunet_dynamic", model_dir,
                                    scale=DetectionScale(target_face_px=target_face_px))
        self.embedder = open_embedder(manifest, "sface_fp32_batch", model_dir)
        v2, v1se = open_minifasnets(manifest, model_dir)
        self.config = LivenessConfig()
        self.checker = LivenessChecker(v2, v1se, self.config)
        self.quality = QualityLimits()
        self.k = BurstPolicy().embed_frames
        self.bystander = PipelineLimits().bystander_ratio
        self.ms: dict[str, list[float]] = {"detect_full": [], "detect_coarse": [], "refine": []}

    def burst(self, frames) -> dict:
        n = len(frames)
        full, coarse, refined = [], [], []
        for frame in frames:
            full.append(select_subject(_timed(lambda: self.full.detect(frame), self.ms["detect_full"]), self.bystander))
            subject, others = select_subject(_timed(lambda: self.coarse.detect(frame), self.ms["detect_coarse"]),
                                             self.bystander)
            coarse.append((subject, others))
            refined.append(None if subject is None else
                           _timed(lambda: self.coarse.refine(frame, subject), self.ms["refine"]))
        out: dict = {"refined_frames": {}}
        if all(s is not None for s, _ in full) and all(s is not None for s, _ in coarse):
            out["deviation_coarse_px"] = max(_deviation(c, f) for (c, _), (f, _) in zip(coarse, full))
            out["deviation_refined_px"] = max(_deviation(r, f) for r, (f, _) in zip(refined, full))
        embedded: dict = {}
        passive = sorted({int(round(i)) for i in np.linspace(0, n - 1, min(self.config.passive_frames, n))})
        for policy in POLICIES:
            found = full if policy == "full" else coarse
            if any(s is None for s, _ in found):
                out[policy] = "NO_FACE"
                continue
            if any(others for _, others in found):
                out[policy] = "MULTIPLE_FACES"
                continue
            gated = refined if policy == "refine_all" else [s for s, _ in found]
            reports = [assess(face, align_face(frame, face), self.quality) for frame, face in zip(frames, gated)]
            usable = [i for i, r in enumerate(reports) if r.passed]
            if len(usable) * 2 < n or not usable:
                out[policy] = "LOW_QUALITY"
                continue
            chosen = [usable[j] for j in pick_frames(usable, [reports[i].sharpness for i in usable], self.k)]
            refine_at = {"full": set(), "coarse_k": set(chosen), "refine_cues": set(chosen) | set(passive),
                         "refine_all": set(range(n))}[policy]
            faces = [refined[i] if i in refine_at else gated[i] for i in range(n)]
            out["refined_frames"][policy] = len(refine_at)
            vectors = {}
            for i in chosen:
                key = (i, faces[i].box_xywh)
                if key not in embedded:
                    embedded[key] = self.embedder.embed([align_face(frames[i], faces[i])])[0]
                vectors[i] = embedded[key]
            evidence = self.checker.measure([FaceObservation(frames[i], faces[i].box_xywh, faces[i].landmarks,
                                                             vectors.get(i)) for i in range(n)])
            verdicts = judge(evidence, self.config)
            out[policy] = {"passed": bool(decide(verdicts)), **{c: getattr(verdicts, c) for c in CUES},
                           "passive_score": evidence.passive_score}
        return out


def _passed(outcome) -> bool:
    return isinstance(outcome, dict) and outcome["passed"]


def _rates(rows: list[dict], policy: str) -> dict:
    out = {}
    for split in ("calibration", "held_out", "all"):
        for group in ("main", "replay_crops"):
            if group == "replay_crops" and split != "all":
                continue
            sel = [r for r in rows if r["group"] == group and (split == "all" or r["split"] == split)]
            bona = [_passed(r[policy]) for r in sel if r["species"] == BONA_FIDE]
            entry = {"bona_fide_bursts": len(bona), "bona_fide_failed": len(bona) - sum(bona),
                     "bpcer": None if not bona else 1.0 - float(np.mean(bona)), "apcer": {}, "attacks_passed": {}}
            for species in sorted({r["species"] for r in sel} - {BONA_FIDE}):
                attacks = [_passed(r[policy]) for r in sel if r["species"] == species]
                entry["apcer"][species] = float(np.mean(attacks))
                entry["attacks_passed"][species] = f"{sum(attacks)}/{len(attacks)}"
            out[f"{split}/{group}"] = entry
    # By name, as liveness_eval.py lists them (benchmarks/results/liveness.json): comparable burst by burst.
    out["failed_bona_fide"] = sorted(r["name"] for r in rows if r["group"] == "main" and r["species"] == BONA_FIDE
                                     and not _passed(r[policy]))
    out["passed_attacks"] = sorted(r["name"] for r in rows if r["group"] == "main" and r["species"] != BONA_FIDE
                                   and _passed(r[policy]))
    return out


def _changes(rows: list[dict], policy: str) -> dict:
    """Bursts whose outcome differs from `full`; a refusal for another reason counts as a different outcome."""

    def label(outcome) -> str:
        return outcome if isinstance(outcome, str) else ("pass" if outcome["passed"] else "LIVENESS_FAILED")

    changed = [r for r in rows if label(r[policy]) != label(r["full"])]
    decisions = [r for r in changed if _passed(r[policy]) != _passed(r["full"])]
    cues: dict[str, int] = defaultdict(int)
    for r in decisions:
        a, b = r["full"], r[policy]
        if isinstance(a, dict) and isinstance(b, dict):
            for cue in CUES:
                if a[cue] != b[cue]:
                    cues[cue] += 1
        else:
            cues["refused_before_liveness"] += 1
    return {
        "outcome_changed": len(changed),
        "pass_fail_changed": len(decisions),
        "pass_fail_changed_main_bona_fide": sum(1 for r in decisions if r["group"] == "main" and r["species"] == BONA_FIDE),
        "pass_fail_changed_main_attack": sum(1 for r in decisions if r["group"] == "main" and r["species"] != BONA_FIDE),
        "cues_behind_pass_fail_changes": dict(cues),
        "bursts": [{"name": r["name"], "species": r["species"], "split": r["split"], "group": r["group"],
                    "full": r["full"], policy: r[policy],
                    "deviation_coarse_px": r.get("deviation_coarse_px"),
                    "deviation_refined_px": r.get("deviation_refined_px")} for r in changed],
    }


def _deviations(rows: list[dict]) -> dict:
    by: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        if "deviation_coarse_px" in r:
            by[r["source_kind"]].append((r["deviation_coarse_px"], r["deviation_refined_px"]))
    out = {}
    for kind, values in sorted(by.items()):
        v = np.asarray(values)
        out[kind] = {"bursts": len(v), "coarse_px_median": float(np.median(v[:, 0])),
                     "refined_px_median": float(np.median(v[:, 1])), "refined_px_p90": float(np.percentile(v[:, 1], 90)),
                     "bursts_refined_within_0.5px": float(np.mean(v[:, 1] < 0.5))}
    return out


def _summary(ms: list[float]) -> dict:
    return {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)), "n": len(ms)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("IDV_SHARED_DIR", REPO.parent / "shared")))
    parser.add_argument("--model-dir", type=Path, default=Path(os.environ.get("IDV_MODEL_DIR", Path.home() / ".cache/idv/models")))
    parser.add_argument("--target-face-px", type=float, default=24.0)
    parser.add_argument("--limit", type=int, default=0, help="first N bursts only (a smoke run)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "detection_scale_liveness.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    manifest = load_manifest()
    pull_models(manifest, ["yunet_dynamic", "sface_fp32_batch", "minifasnet_v2", "minifasnet_v1se"], args.model_dir,
                mirror=args.shared / "models", allow_network=False)
    harness = Harness(manifest, args.model_dir, args.target_face_px)
    root = args.shared / "testdata"
    sources = (nuaa_bursts(root, "live"), nuaa_bursts(root, "print"), replay_bursts(root, "real"),
               replay_bursts(root, "fake"), video_bursts(root))
    rows: list[dict] = []
    burst_ms: dict[str, list[float]] = {p: [] for p in POLICIES}
    for source in sources:
        for burst in source:
            if args.limit and len(rows) >= args.limit:
                break
            before = {k: len(v) for k, v in harness.ms.items()}
            row = {"name": burst.name, "species": burst.species, "frames": len(burst.frames),
                   "frame_size": f"{burst.frames[0].shape[1]}x{burst.frames[0].shape[0]}",
                   "split": "held_out" if burst.subject in HELD_OUT_SUBJECTS else "calibration",
                   "group": "replay_crops" if burst.source == "replay" else "main",
                   "source_kind": burst.source if burst.source != "nuaa" else "nuaa_640x480",
                   **harness.burst(burst.frames)}
            if burst.source == "video":
                row["source_kind"] = f"video_{row['frame_size']}"
            # The detector's work per burst under each policy, from this burst's own timings.
            full_ms = sum(harness.ms["detect_full"][before["detect_full"]:])
            coarse_ms = sum(harness.ms["detect_coarse"][before["detect_coarse"]:])
            refine = harness.ms["refine"][before["refine"]:]
            if burst.source == "nuaa" and len(refine) == len(burst.frames):
                burst_ms["full"].append(full_ms)
                mean_refine = float(np.mean(refine))
                for policy in POLICIES[1:]:
                    if policy in row["refined_frames"]:
                        burst_ms[policy].append(coarse_ms + mean_refine * row["refined_frames"][policy])
            rows.append(row)
            if len(rows) % 100 == 0:
                log.info("%d bursts", len(rows))
    rates = {p: _rates(rows, p) for p in POLICIES}
    changes = {p: _changes(rows, p) for p in POLICIES[1:]}
    per_burst = {p: _summary(v) for p, v in burst_ms.items() if v}
    # Scalars the README table (benchmarks/report.py) shows: decisions moved and detector cost per policy.
    headline = {
        **{f"{p}_pass_fail_changed_vs_full": changes[p]["pass_fail_changed"] for p in POLICIES[1:]},
        **{f"{p}_calibration_bona_fide_failed": rates[p]["calibration/main"]["bona_fide_failed"] for p in POLICIES},
        **{f"{p}_detector_ms_per_5_frame_burst_p50": round(per_burst[p]["median_ms"], 1) for p in per_burst},
    }
    result = {
        "what": __doc__.split("\n\n")[0],
        "headline": headline,
        "command": "benchmarks/accuracy/detection_scale_liveness.py" + (f" --target-face-px {args.target_face_px:g}"),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip(),
        "git_dirty": bool(subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True,
                                         text=True).stdout.strip()),
        "cpu_model": cpu_model(),
        "target_face_px": args.target_face_px,
        "refine_margin": DetectionScale().refine_margin,
        "embed_frames": harness.k,
        "liveness_config": dataclasses.asdict(harness.config),
        "bursts": len(rows),
        "stills": "left out (each repeats the first frame of a bona fide burst)",
        "cost_note": "one thread, measured interleaved in this process on a shared 2-core machine: relative",
        "cost_per_frame_640x480_and_other": {k: _summary(v) for k, v in harness.ms.items() if v},
        "detector_cost_per_nuaa_burst": per_burst,
        "deviation_from_full_by_source": _deviations(rows),
        "rates": rates,
        "changes_vs_full": changes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
