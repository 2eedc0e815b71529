"""Which liveness decisions move when detection runs on a downscaled copy, and what exactness costs.

    .venv/bin/python -W ignore benchmarks/accuracy/detection_scale_liveness.py [--shared DIR] [--out FILE]

Every burst of benchmarks/accuracy/liveness_data.py (stills left out: they repeat a bona fide
frame) is taken through the service's per-burst steps (idv.pipeline: subject and bystanders,
the quality gate, the k best usable frames spread over the burst, embedded; the liveness cues
of the committed LivenessConfig) under these detection policies, each the detector's own
`detect` as the service calls it:

* `full`: the dynamic-input YuNet at the calibrated (fixed graph's) scale, `detection_face_px`
  60, the shipped default: the reference;
* `refined_m<M>`: the downscaled copy (`--target-face-px`, 24 by default), the subject of every
  frame re-detected on a window of the full-size canvas M face sizes wide, frames the copy
  cannot settle (no face, a second face near bystander size, a window without the face)
  detected at full size (idv/face/detector.py).

A cost-only part (`onnxruntime_shape_changes`) times the session on one repeated window shape
against four shapes in turn (what windows sized per face feed it). A second cost-only part (`distant_subject`) repeats the detection on NUAA live frames shrunk
by `--distant-factor` (0.5) onto a grey 640x480 canvas: a subject further from the camera
(faces ~90-160 px instead of 180-320), where a refinement window is a smaller part of the frame.

For each policy: every burst whose outcome differs from `full` with the cue verdicts on both
sides (which cue flipped), BPCER/APCER per split as liveness_eval reports them, the subject's
box/landmark deviation from `full` per source, how many frames fell back to full size, and the
detector's cost per frame and per 5-frame NUAA burst (milliseconds measured interleaved in this
one process; relative on a shared machine, so the headline is the ratio to `full`).

Writes benchmarks/results/detection_scale_liveness.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from idv.evaluation.provenance import run_provenance  # noqa: E402
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
MARGINS = (2.0, 1.5, 1.25)
POLICIES = ("full", *(f"refined_m{m:g}" for m in MARGINS))
CUES = ("passive", "motion", "identity", "planarity")


def _deviation(a, b) -> float:
    """Largest difference of two faces' boxes and landmarks, in pixels."""
    return float(max(np.abs(np.asarray(a.box_xywh) - np.asarray(b.box_xywh)).max(),
                     np.abs(a.landmarks - b.landmarks).max()))


class _FallbackCounter:
    """Counts a detector's full-size re-runs (its `_detect` called at an explicit scale)."""

    def __init__(self, detector):
        self.count = 0
        inner = detector._detect

        def counted(image, scale):
            if scale is not None:
                self.count += 1
            return inner(image, scale)

        detector._detect = counted


class Harness:
    def __init__(self, manifest, model_dir: Path, target_face_px: float):
        self.detectors = {"full": open_detector(manifest, "yunet_dynamic", model_dir,
                                                scale=DetectionScale(target_face_px=60.0))}
        for margin, policy in zip(MARGINS, POLICIES[1:]):
            self.detectors[policy] = open_detector(
                manifest, "yunet_dynamic", model_dir,
                scale=DetectionScale(target_face_px=target_face_px, refine_margin=margin))
        self.fallbacks = {p: _FallbackCounter(d) for p, d in self.detectors.items() if p != "full"}
        self.embedder = open_embedder(manifest, "sface_fp32_batch", model_dir)
        v2, v1se = open_minifasnets(manifest, model_dir)
        self.config = LivenessConfig()
        self.checker = LivenessChecker(v2, v1se, self.config)
        self.quality = QualityLimits()
        self.k = BurstPolicy().embed_frames
        self.bystander = PipelineLimits().bystander_ratio
        self.ms: dict[str, list[float]] = {p: [] for p in POLICIES}

    def burst(self, frames) -> dict:
        n = len(frames)
        found: dict[str, list] = {p: [] for p in POLICIES}
        for frame in frames:
            for policy, detector in self.detectors.items():  # interleaved: the same load for every policy
                start = time.perf_counter()
                faces = detector.detect(frame)
                self.ms[policy].append((time.perf_counter() - start) * 1000.0)
                found[policy].append(select_subject(faces, self.bystander))
        out: dict = {"deviation_px": {}}
        for policy in POLICIES[1:]:
            pairs = [(s, f) for (s, _), (f, _) in zip(found[policy], found["full"]) if s is not None and f is not None]
            if pairs:
                out["deviation_px"][policy] = max(_deviation(s, f) for s, f in pairs)
        for policy in POLICIES:
            faces = found[policy]
            if any(s is None for s, _ in faces):
                out[policy] = "NO_FACE"
                continue
            if any(others for _, others in faces):
                out[policy] = "MULTIPLE_FACES"
                continue
            subjects = [self.detectors[policy].refine(frame, s) for frame, (s, _) in zip(frames, faces)]
            aligned = [align_face(frame, face) for frame, face in zip(frames, subjects)]
            reports = [assess(face, crop, self.quality) for face, crop in zip(subjects, aligned)]
            usable = [i for i, r in enumerate(reports) if r.passed]
            if len(usable) * 2 < n or not usable:
                out[policy] = "LOW_QUALITY"
                continue
            chosen = [usable[j] for j in pick_frames(usable, [reports[i].sharpness for i in usable], self.k)]
            vectors = dict(zip(chosen, self.embedder.embed([aligned[i] for i in chosen])))
            evidence = self.checker.measure([FaceObservation(frames[i], subjects[i].box_xywh, subjects[i].landmarks,
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
                    "deviation_px": r["deviation_px"].get(policy)} for r in changed],
    }


def _deviations(rows: list[dict]) -> dict:
    """Per source and policy: the largest subject box/landmark deviation from `full` in a burst."""
    by: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        for policy, value in r["deviation_px"].items():
            by[r["source_kind"]][policy].append(value)
    out: dict = {}
    for kind, policies in sorted(by.items()):
        out[kind] = {}
        for policy, values in policies.items():
            v = np.asarray(values)
            out[kind][policy] = {"bursts": len(v), "px_median": float(np.median(v)),
                                 "px_p90": float(np.percentile(v, 90)), "px_max": float(v.max()),
                                 "bursts_within_0.5px": float(np.mean(v < 0.5))}
    return out


def _distant_subject(harness: Harness, root: Path, factor: float, every: int = 10) -> dict:
    """Detector cost and subject deviation per policy on NUAA live frames shrunk onto a 640x480 canvas."""
    ms: dict[str, list[float]] = {p: [] for p in POLICIES}
    deviation: dict[str, list[float]] = {p: [] for p in POLICIES[1:]}
    sizes = []
    paths = sorted((root / "nuaa" / "live").glob("*/*.jpg"))[::every]
    for path in paths:
        image = cv2.imread(str(path))
        small = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        canvas = np.full_like(image, 127)
        y0, x0 = (canvas.shape[0] - small.shape[0]) // 2, (canvas.shape[1] - small.shape[1]) // 2
        canvas[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
        subjects = {}
        for policy, detector in harness.detectors.items():
            start = time.perf_counter()
            faces = detector.detect(canvas)
            ms[policy].append((time.perf_counter() - start) * 1000.0)
            subjects[policy] = select_subject(faces, harness.bystander)[0]
        if subjects["full"] is None:
            continue
        sizes.append(max(subjects["full"].width, subjects["full"].height))
        for policy in POLICIES[1:]:
            if subjects[policy] is not None:
                deviation[policy].append(_deviation(subjects[policy], subjects["full"]))
    full = float(np.median(ms["full"]))
    return {
        "frames": len(paths), "factor": factor,
        "face_px_median": float(np.median(sizes)), "face_px_range": [float(min(sizes)), float(max(sizes))],
        "cost_per_frame": {p: _summary(v) for p, v in ms.items()},
        "cost_vs_full": {p: round(float(np.median(ms[p])) / full, 3) for p in POLICIES[1:]},
        "deviation_px": {p: {"median": float(np.median(v)), "p90": float(np.percentile(v, 90)), "max": float(max(v)),
                             "within_0.5px": float(np.mean(np.asarray(v) < 0.5)), "n": len(v)}
                         for p, v in deviation.items() if v},
    }


def _shape_changes(harness: Harness, reps: int = 60) -> dict:
    """Does onnxruntime re-plan when the input shape changes? The same session run on one repeated
    window shape, and cycling through four neighbouring shapes (as windows sized per face do),
    interleaved; random pixels (the cost does not depend on them)."""
    detector = harness.detectors["full"]
    session, name = detector._session, detector._input_name
    rng = np.random.default_rng(0)
    shapes = ((448, 448), (448, 512), (480, 448), (480, 512))
    blobs = [rng.uniform(0, 255, (1, 3, h, w)).astype(np.float32) for h, w in shapes]
    full_blob = rng.uniform(0, 255, (1, 3, 480, 640)).astype(np.float32)
    for blob in blobs + [full_blob]:
        session.run(None, {name: blob})
    fixed, cycling, full = [], [], []
    for _ in range(reps):  # blocks, alternated: within `fixed` and `full` the shape never changes
        for sink, block in ((fixed, [blobs[0]] * len(blobs)), (cycling, blobs), (full, [full_blob] * len(blobs))):
            for blob in block:
                start = time.perf_counter()
                session.run(None, {name: blob})
                sink.append((time.perf_counter() - start) * 1000.0)
    # Cycling runs of the first shape only: the same work as `fixed`, the shape changed before each
    # (the first run of a `fixed` block follows a change too: left out).
    cycling_first = cycling[:: len(shapes)]
    fixed = [ms for i, ms in enumerate(fixed) if i % len(shapes)]
    return {"shapes": [f"{w}x{h}" for h, w in shapes], "fixed_448x448": _summary(fixed),
            "cycling_448x448_runs": _summary(cycling_first), "full_640x480": _summary(full),
            # Median and fastest run: the fastest is the least disturbed by other work on a shared machine.
            "shape_change_overhead_median": round(float(np.median(cycling_first)) / float(np.median(fixed)) - 1.0, 3),
            "shape_change_overhead_min": round(float(np.min(cycling_first)) / float(np.min(fixed)) - 1.0, 3),
            "window_448x448_vs_full_640x480_min": round(float(np.min(fixed)) / float(np.min(full)), 3)}


def _summary(ms: list[float]) -> dict:
    return {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)), "n": len(ms)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("IDV_SHARED_DIR", REPO.parent / "shared")))
    parser.add_argument("--model-dir", type=Path, default=Path(os.environ.get("IDV_MODEL_DIR", Path.home() / ".cache/idv/models")))
    parser.add_argument("--target-face-px", type=float, default=24.0)
    parser.add_argument("--limit", type=int, default=0, help="first N bursts only (a smoke run)")
    parser.add_argument("--distant-factor", type=float, default=0.5)
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
    frames_seen = 0
    for source in sources:
        for burst in source:
            if args.limit and len(rows) >= args.limit:
                break
            before = len(harness.ms["full"])
            row = {"name": burst.name, "species": burst.species, "frames": len(burst.frames),
                   "frame_size": f"{burst.frames[0].shape[1]}x{burst.frames[0].shape[0]}",
                   "split": "held_out" if burst.subject in HELD_OUT_SUBJECTS else "calibration",
                   "group": "replay_crops" if burst.source == "replay" else "main",
                   "source_kind": burst.source if burst.source != "nuaa" else "nuaa_640x480",
                   **harness.burst(burst.frames)}
            frames_seen += len(burst.frames)
            if burst.source == "video":
                row["source_kind"] = f"video_{row['frame_size']}"
            if burst.source == "nuaa":  # the detector's work per 640x480 burst, from this burst's own timings
                for policy in POLICIES:
                    burst_ms[policy].append(sum(harness.ms[policy][before:]))
            rows.append(row)
            if len(rows) % 100 == 0:
                log.info("%d bursts", len(rows))
    distant = _distant_subject(harness, root, args.distant_factor)
    shape_changes = _shape_changes(harness)
    rates = {p: _rates(rows, p) for p in POLICIES}
    changes = {p: _changes(rows, p) for p in POLICIES[1:]}
    per_burst = {p: _summary(v) for p, v in burst_ms.items() if v}
    full_p50 = per_burst["full"]["median_ms"]
    # Ratio of medians of per-burst sums measured interleaved: what the shared machine's load cancels out of.
    ratio = {p: round(per_burst[p]["median_ms"] / full_p50, 3) for p in POLICIES[1:]}
    # Scalars the README table (benchmarks/report.py) shows: decisions moved and detector cost per policy.
    headline = {
        **{f"{p}_pass_fail_changed_vs_full": changes[p]["pass_fail_changed"] for p in POLICIES[1:]},
        **{f"{p}_outcome_changed_vs_full": changes[p]["outcome_changed"] for p in POLICIES[1:]},
        **{f"{p}_calibration_bona_fide_failed": rates[p]["calibration/main"]["bona_fide_failed"] for p in POLICIES},
        **{f"{p}_detector_cost_vs_full_5_frame_nuaa_burst": ratio[p] for p in POLICIES[1:]},
        **{f"{p}_detector_ms_per_5_frame_burst_p50": round(per_burst[p]["median_ms"], 1) for p in per_burst},
        **{f"{p}_detector_cost_vs_full_distant_subject": distant["cost_vs_full"][p] for p in POLICIES[1:]},
    }
    result = {
        "what": __doc__.split("\n\n")[0],
        "headline": headline,
        "command": "benchmarks/accuracy/detection_scale_liveness.py" + (f" --target-face-px {args.target_face_px:g}"),
        **run_provenance(REPO),
        "target_face_px": args.target_face_px,
        "refine_margins": list(MARGINS),
        "exact_ratio": DetectionScale().exact_ratio,
        "embed_frames": harness.k,
        "liveness_config": dataclasses.asdict(harness.config),
        "bursts": len(rows),
        "frames": frames_seen,
        "stills": "left out (each repeats the first frame of a bona fide burst)",
        "cost_note": "one thread, measured interleaved in this process on a shared 2-core machine: relative",
        "cost_per_frame_all_sources": {p: _summary(v) for p, v in harness.ms.items() if v},
        "frames_detected_again_at_full_size": {p: c.count for p, c in harness.fallbacks.items()},
        "detector_cost_per_nuaa_burst": per_burst,
        "deviation_from_full_by_source": _deviations(rows),
        "distant_subject": distant,
        "onnxruntime_shape_changes": shape_changes,
        "rates": rates,
        "changes_vs_full": changes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
