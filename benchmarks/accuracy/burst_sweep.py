"""Choose the detection scale and k (frames embedded per burst) from accuracy, liveness and cost.

    .venv/bin/python benchmarks/accuracy/burst_sweep.py [--shared DIR] [--out FILE]

For each detection setting (the previous service's fixed 640x640 YuNet at full size, and
the dynamic-size YuNet at several scales, with and without full-resolution landmark
refinement) and each k:

* verification at the manifest's thresholds and at fixed FMR: LFW all-vs-all (3,811
  images; k does not apply to single photos) and NUAA ID-print vs live bursts (windows of
  n consecutive live frames, n = 5 and 8; the k best by sharpness, spread over the
  window, averaged: exactly idv.face.burst.pick_frames);
* liveness (APCER per species, BPCER) on the bursts of benchmarks/accuracy/liveness_data.py,
  judged with the committed LivenessConfig (thresholds are not re-chosen here), with the
  identity cue on the k embedded frames plus track continuity;
* cost: per-stage milliseconds (detect, refine, embed k in one call), measured interleaved
  in one process. This machine is shared: read them as relative, not as latency results.

Writes benchmarks/results/burst_sweep.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from idv.evaluation.datasets import lfw_images, nuaa_frames  # noqa: E402
from idv.evaluation.embedding import (  # noqa: E402
    PICK_CENTRE, PICK_LARGEST, AcquisitionPolicy, ModelSelection, embed_images)
from idv.evaluation.metrics import ScoreSet, operating_point  # noqa: E402
from idv.evaluation.protocols import all_vs_all, group_sequences, id_vs_live, select_references  # noqa: E402
from idv.evaluation.protocols import REFERENCE_SESSION  # noqa: E402
from idv.face.burst import pick_frames  # noqa: E402
from idv.face.detector import DetectionScale  # noqa: E402
from idv.face.embedder import align_face, l2_normalise  # noqa: E402
from idv.face.quality import QualityLimits, assess  # noqa: E402
from idv.models.manifest import load_manifest  # noqa: E402
from idv.models.model_set import open_detector, open_embedder, open_minifasnets  # noqa: E402
from idv.models.pull import pull_models  # noqa: E402
from idv.evaluation.provenance import run_provenance  # noqa: E402
from liveness import FaceObservation, LivenessChecker, LivenessConfig  # noqa: E402
from liveness.decision import decide, judge  # noqa: E402
from liveness_data import BONA_FIDE, all_bursts  # noqa: E402
from liveness_eval import Measured, report  # noqa: E402

log = logging.getLogger("burst_sweep")


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str
    detector: str  # manifest entry
    scale: DetectionScale
    refine: bool


# In order of need (each setting's results are written as soon as they exist): the service's
# default first, then the alternatives around it, then the previous service's detection.
SETTINGS = (
    Setting("dyn_face24_refine", "yunet_dynamic", DetectionScale(target_face_px=24), True),
    Setting("dyn_face16_refine", "yunet_dynamic", DetectionScale(target_face_px=16), True),
    # dyn_face24_coarse (coarse boxes, no refinement) in burst_sweep.json was measured before the
    # detector refined every subject found below full size; it is no longer a service mode.
    Setting("previous_640_full", "yunet", DetectionScale(), False),  # the fixed graph: scale is ignored
    # The shipped default (detection_face_px 60): the fixed graph's scale on a trimmed canvas, refine a no-op.
    Setting("dyn_face60", "yunet_dynamic", DetectionScale(target_face_px=60), True),
)
KS = (1, 2, 3, 5)
WINDOWS = (5, 8)
# The previous service's liveness rates (every frame embedded) are benchmarks/results/liveness.json.
LIVENESS_SETTINGS = ("dyn_face24_refine",)
LIVENESS_KS = (2, 3)


def _rates(scores: ScoreSet, threshold: float) -> dict:
    return {"threshold": threshold, "fnmr": float(scores.fnmr(threshold)), "gfnmr": float(scores.gfnmr(threshold)),
            "fmr": float(scores.fmr(threshold)), "false_non_matches": int(scores.false_non_matches(threshold)),
            "false_matches": int(scores.false_matches(threshold)), "genuine": int(scores.n_genuine),
            "impostor": int(scores.n_impostor)}


def _at_fmr(scores: ScoreSet, fmr: float) -> dict:
    point = operating_point(scores, fmr)
    return {"fmr_target": fmr, "fnmr": float(point.fnmr), "threshold": float(point.threshold),
            "false_non_matches": int(point.false_non_matches), "genuine": int(point.n_genuine),
            "impostor": int(point.n_impostor)}


def nuaa_k_windows(lives, table, n: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows of n consecutive live frames (stride 1); probe = mean of the k picked frames."""
    vectors = table.embeddings
    subjects, embeddings, acquired = [], [], []
    for members in group_sequences(lives).values():
        for start in range(max(1, len(members) - n + 1)):
            window = [m for m in members[start:start + n] if table.acquired[m]]
            subjects.append(lives[members[0]].subject)
            if not window:
                acquired.append(False)
                embeddings.append(np.zeros(vectors.shape[1]))
                continue
            chosen = [window[j] for j in pick_frames(window, [float(table.sharpness[m]) for m in window], k)]
            acquired.append(True)
            embeddings.append(vectors[chosen].mean(axis=0))
    return np.asarray(subjects), l2_normalise(np.asarray(embeddings, np.float64)), np.asarray(acquired)


def verification(setting: Setting, data: Path, manifest_path: Path, model_dir: Path, cache: Path, workers: int,
                 thresholds: dict[str, float]) -> dict:
    from idv.evaluation.protocols import ProbeWindows

    models = ModelSelection(manifest_path, model_dir, detector=setting.detector, recognizer="sface_fp32",
                            detection=setting.scale, refine_landmarks=setting.refine)
    images = lfw_images(data / "lfw")
    lfw = embed_images([data / "lfw" / i.relpath for i in images], AcquisitionPolicy(pick=PICK_CENTRE, upscale_retry=True, mirror=False),
                       models, workers=workers, cache_dir=cache)
    lfw_scores = all_vs_all([i.name for i in images], lfw, flip=False)
    out: dict = {"lfw_all_vs_all": {
        "fta": lfw.failures_to_acquire,
        "at_fmr_1e-3": _at_fmr(lfw_scores, 1e-3), "at_fmr_1e-4": _at_fmr(lfw_scores, 1e-4),
        "at_service_thresholds": {level: _rates(lfw_scores, t) for level, t in thresholds.items()},
    }}
    prints = tuple(f for f in nuaa_frames(data / "nuaa", "print") if f.session == REFERENCE_SESSION)
    lives = nuaa_frames(data / "nuaa", "live")
    policy = AcquisitionPolicy(pick=PICK_LARGEST, mirror=False)
    print_table = embed_images([f.path for f in prints], policy, models, workers=workers, cache_dir=cache)
    live_table = embed_images([f.path for f in lives], policy, models, workers=workers, cache_dir=cache)
    references = select_references(prints, print_table)
    out["nuaa_fta_live"] = live_table.failures_to_acquire
    for n in WINDOWS:
        for k in KS:
            if k > n:
                continue
            subjects, embeddings, acquired = nuaa_k_windows(lives, live_table, n, k)
            scores = id_vs_live(references, print_table, ProbeWindows(subjects, embeddings, acquired, n), flip=False)
            out[f"nuaa_id_vs_live_n{n}_k{k}"] = {
                "at_fmr_1e-3": _at_fmr(scores, 1e-3),
                "at_service_thresholds": {level: _rates(scores, t) for level, t in thresholds.items()},
            }
    return out


class BurstObserver:
    """Frames -> liveness observations as the service makes them: every frame detected,
    quality-ranked; the k picked frames refined and embedded in one call."""

    def __init__(self, setting: Setting, manifest, model_dir: Path):
        self.detector = open_detector(manifest, setting.detector, model_dir, scale=setting.scale)
        self.embedder = open_embedder(manifest, "sface_fp32_batch", model_dir)
        self.refine = setting.refine

    def faces(self, frames):
        found = []
        for frame in frames:
            faces = self.detector.detect(frame)
            if not faces:
                return None
            face = max(faces, key=lambda f: f.width * f.height)
            sharp = assess(face, align_face(frame, face), QualityLimits()).sharpness
            found.append((face, sharp))
        return found

    def embeddings(self, frames, faces):
        crops = []
        for frame, (face, _) in zip(frames, faces):
            crops.append(align_face(frame, self.detector.refine(frame, face) if self.refine else face))
        return self.embedder.embed(crops)


def liveness(setting: Setting, manifest, model_dir: Path, shared: Path, bursts) -> dict:
    observer = BurstObserver(setting, manifest, model_dir)
    v2, v1se = open_minifasnets(manifest, model_dir)
    config = LivenessConfig()
    checker = LivenessChecker(v2, v1se, config)
    ks = LIVENESS_KS
    measured: dict[int, list[Measured]] = {k: [] for k in ks}
    jumps: list[float] = []
    for i, burst in enumerate(bursts):
        faces = observer.faces(burst.frames)
        if faces is None:
            for k in ks:
                measured[k].append(Measured(burst, None))
            continue
        every = observer.embeddings(burst.frames, faces)
        for k in ks:
            picked = set(pick_frames(list(range(len(faces))), [s for _, s in faces], k))
            observations = [FaceObservation(frame, face.box_xywh, face.landmarks, every[j] if j in picked else None)
                            for j, (frame, (face, _)) in enumerate(zip(burst.frames, faces))]
            evidence = checker.measure(observations)
            measured[k].append(Measured(burst, evidence))
            if k == ks[0] and burst.species == BONA_FIDE and evidence.track_jump is not None:
                jumps.append(evidence.track_jump)
        if i % 300 == 0:
            log.info("%s liveness %d/%d", setting.name, i, len(bursts))
    out = {}
    for k in ks:
        rows = measured[k]
        out[f"k{k}"] = {
            "results": report(rows, config),
            "identity_cue_fails": {
                cls: float(np.mean([judge(m.evidence, config).identity is False for m in rows
                                    if m.burst.species == cls and m.evidence is not None]))
                for cls in (BONA_FIDE, "print", "screen", "still")
                if any(m.burst.species == cls and m.evidence is not None for m in rows)
            },
            "no_face_bursts": sum(1 for m in rows if m.evidence is None),
        }
    out["bona_fide_track_jump"] = {f"p{q}": float(np.percentile(jumps, q)) for q in (50, 90, 99, 100)} if jumps else None
    return out


def cost(setting: Setting, manifest, model_dir: Path, frames: list[np.ndarray], reps: int = 3) -> dict:
    """Median / min ms per stage, interleaved over the frames (one process, one thread)."""
    observer = BurstObserver(setting, manifest, model_dir)
    faces = [max(observer.detector.detect(f), key=lambda x: x.width * x.height) for f in frames]
    crops = [align_face(f, x) for f, x in zip(frames, faces)]
    stages: dict[str, list[float]] = {"detect": [], "refine": [], **{f"embed_k{k}": [] for k in KS}}
    for _ in range(reps):
        for j, (frame, face) in enumerate(zip(frames, faces)):
            t = time.perf_counter(); observer.detector.detect(frame); stages["detect"].append(time.perf_counter() - t)
            t = time.perf_counter(); observer.detector.refine(frame, face); stages["refine"].append(time.perf_counter() - t)
            for k in KS:
                batch = [crops[(j + m) % len(crops)] for m in range(k)]
                t = time.perf_counter(); observer.embedder.embed(batch); stages[f"embed_k{k}"].append(time.perf_counter() - t)
    return {name: {"median_ms": 1e3 * float(np.median(v)), "min_ms": 1e3 * float(np.min(v))} for name, v in stages.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("IDV_SHARED_DIR", REPO.parent / "shared")))
    parser.add_argument("--model-dir", type=Path, default=Path(os.environ.get("IDV_MODEL_DIR", "/root/.cache/idv/models")))
    parser.add_argument("--table-cache", type=Path, default=Path("/tmp/idv-eval-tables"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-liveness", action="store_true")
    parser.add_argument("--only", default=None, help="run only this setting")
    parser.add_argument("--liveness-only", action="store_true", help="skip verification and cost")
    parser.add_argument("--species", default=None,
                        help="comma-separated burst species for liveness (default: all, stills included)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "burst_sweep.json")
    parser.add_argument("--merge", action="store_true",
                        help="with --only: replace that setting's entry in the existing --out file, keep the rest")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    manifest = load_manifest()
    pull_models(manifest, ["yunet", "yunet_dynamic", "sface_fp32", "sface_fp32_batch", "minifasnet_v2",
                           "minifasnet_v1se"], args.model_dir, mirror=args.shared / "models", allow_network=False)
    raw = manifest.entry("sface_fp32").thresholds
    thresholds = {k: float(v) for k, v in raw.items() if k.startswith("fmr_")}
    data = args.shared / "testdata"
    cost_frames = [cv2.imread(str(p)) for p in sorted((data / "nuaa" / "live").glob("*/*.jpg"))[::80]]
    result: dict = {
        "what": __doc__.split("\n\n")[0],
        **run_provenance(REPO),
        "service_thresholds": thresholds,
        "liveness_config": dataclasses.asdict(LivenessConfig()),
        "cost_note": "ms measured on a shared 2-core machine with other jobs running: relative only",
        "settings": {},
    }
    if args.merge:
        if not args.only or not args.out.is_file():
            parser.error("--merge needs --only and an existing --out file")
        previous = json.loads(args.out.read_text())
        provenance = {k: result[k] for k in ("date", "git_commit", "git_dirty", "cpu_model")}
        # The other settings keep their own provenance (previous["parts"]); this one records its run.
        result = {**previous, "settings": dict(previous.get("settings", {}))}
        # The thresholds of the manifest this run read (the file's top-level ones are its first run's).
        result.setdefault("parts", {})[args.only] = {**provenance, "liveness": not args.skip_liveness,
                                                     "service_thresholds": thresholds}
    bursts = None
    for setting in SETTINGS:
        if args.only and setting.name != args.only:
            continue
        log.info("setting %s", setting.name)
        entry: dict = {"detector": setting.detector, "scale": dataclasses.asdict(setting.scale),
                       "factor": setting.scale.factor if setting.detector == "yunet_dynamic" else None,
                       "refine_landmarks": setting.refine}
        if not args.liveness_only:
            entry["verification"] = verification(setting, data, manifest.path, args.model_dir, args.table_cache,
                                                 args.workers, thresholds)
            entry["cost"] = cost(setting, manifest, args.model_dir, cost_frames)
        result["settings"][setting.name] = entry
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        if not args.skip_liveness and setting.name in LIVENESS_SETTINGS:
            if bursts is None:  # ~4 GB: loaded only when needed
                wanted = set(args.species.split(",")) if args.species else None
                bursts = [b for b in all_bursts(data) if wanted is None or b.species in wanted]
                entry["liveness_species"] = sorted(wanted) if wanted else "all"
            entry["liveness"] = liveness(setting, manifest, args.model_dir, args.shared, bursts)
        result["settings"][setting.name] = entry
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")  # partial results survive a stop
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
