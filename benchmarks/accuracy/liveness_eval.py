"""Calibrate and evaluate the liveness check on ../shared/testdata.

    .venv/bin/python benchmarks/accuracy/liveness_eval.py [--shared DIR] [--cache-dir DIR] [--out FILE]

Cuts 5-frame bursts from the real data (liveness_data.py), runs the real
detector (YuNet, largest face), recognizer (SFace) and the liveness cues, then:

1. chooses every threshold on the calibration split only;
2. reports, on calibration and on the held-out split, APCER per attack species
   (print, screen, still) and BPCER, in ISO/IEC 30107-3 terms: APCER = share of
   attack bursts that pass, BPCER = share of bona fide bursts that fail;
3. measures the latency of the check on 5-frame 640x480 bursts;
4. writes everything, with the per-burst evidence behind each threshold, to
   benchmarks/results/liveness.json.

Held-out split (never used to choose a threshold): NUAA subjects 0007-0009,
video clips live_d10, live_d12, live_d14 and the second half (in time) of the
replay pair (real + screen): there is only one screen clip.

The replay/ face crops are reported on their own and kept out of the headline
BPCER: a tight crop carries none of the context (background, head outline) the
passive models were trained on, and the model calls even live tight crops
attacks (MODELS.md: tight_crop_portrait); measured here, the live crops score
like the screen crops.
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
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from idv.face.embedder import align_face  # noqa: E402
from idv.models.manifest import load_manifest  # noqa: E402
from idv.models.model_set import open_detector, open_embedder, open_minifasnets  # noqa: E402
from idv.models.pull import pull_models  # noqa: E402
from liveness import FaceObservation, LivenessChecker, LivenessConfig, LivenessEvidence, judge  # noqa: E402
from liveness.decision import decide  # noqa: E402
from liveness_data import BONA_FIDE, Burst, all_bursts  # noqa: E402

log = logging.getLogger("liveness_eval")

HELD_OUT_SUBJECTS = frozenset(
    {"0007", "0008", "0009", "live_d10", "live_d12", "live_d14", "replay_pair_real_b", "replay_pair_screen_b"}
)
SPECIES = ("print", "screen", "still")
MODELS = ["yunet", "sface_fp32", "minifasnet_v2", "minifasnet_v1se"]


@dataclasses.dataclass(frozen=True)
class Measured:
    burst: Burst
    evidence: LivenessEvidence | None  # None: no face in some frame (counts as a failed check)

    @property
    def split(self) -> str:
        return "held_out" if self.burst.subject in HELD_OUT_SUBJECTS else "calibration"

    @property
    def group(self) -> str:
        if self.burst.source == "replay":
            return "replay_crops"
        return "main"


def default_shared() -> Path:
    return Path(os.environ.get("IDV_SHARED_DIR", REPO.parent / "shared"))


class Pipeline:
    def __init__(self, cache_dir: Path, mirror: Path):
        manifest = load_manifest()
        pull_models(manifest, MODELS, cache_dir, mirror=mirror, allow_network=False)
        self.detector = open_detector(manifest, "yunet", cache_dir)
        self.embedder = open_embedder(manifest, "sface_fp32", cache_dir)
        v2, v1se = open_minifasnets(manifest, cache_dir)
        self.fingerprints = {"yunet": self.detector.fingerprint, "sface_fp32": self.embedder.fingerprint,
                             **{name: f"{name}:{manifest.entry(name).sha256[:16]}"
                                for name in ("minifasnet_v2", "minifasnet_v1se")}}
        self.v2, self.v1se = v2, v1se
        self._cache: dict[int, FaceObservation | None] = {}

    def observe(self, frame: np.ndarray) -> FaceObservation | None:
        key = id(frame)  # repeated-frame bursts share the frame object: detect once
        if key not in self._cache:
            faces = self.detector.detect(frame)
            if not faces:
                self._cache[key] = None
            else:
                face = max(faces, key=lambda f: f.width * f.height)
                embedding = self.embedder.embed([align_face(frame, face)])[0]
                self._cache[key] = FaceObservation(frame, face.box_xywh, face.landmarks, embedding)
        return self._cache[key]


def rate(flags: list[bool]) -> float | None:
    return float(np.mean(flags)) if flags else None


def report(measured: list[Measured], config: LivenessConfig) -> dict:
    """APCER per species and BPCER under `config`, judged exactly as the service judges."""

    def passed(m: Measured) -> bool:
        return m.evidence is not None and decide(judge(m.evidence, config))

    out: dict = {}
    for split in ("calibration", "held_out", "all"):
        for group in ("main", "replay_crops"):
            rows = [m for m in measured if (split == "all" or m.split == split) and m.group == group]
            if group == "replay_crops" and split != "all":
                continue
            bona = [passed(m) for m in rows if m.burst.species == BONA_FIDE]
            entry = {
                "bpcer": None if not bona else 1.0 - float(np.mean(bona)),
                "bona_fide_bursts": len(bona),
                "apcer": {},
                "attack_bursts": {},
            }
            for species in SPECIES:
                attacks = [passed(m) for m in rows if m.burst.species == species]
                if attacks:
                    entry["apcer"][species] = float(np.mean(attacks))
                    entry["attack_bursts"][species] = len(attacks)
            out[f"{split}/{group}"] = entry
    return out


def cue_fail_rates(measured: list[Measured], config: LivenessConfig) -> dict:
    """Each cue on its own: the share of bursts of each class it fails (None verdicts count as pass)."""
    out: dict = {}
    for cue in ("passive", "motion", "identity", "planarity"):
        per_class: dict = {}
        for cls in (BONA_FIDE, *SPECIES):
            rows = [m for m in measured if m.burst.species == cls and m.group == "main" and m.evidence is not None]
            if rows:
                per_class[cls] = float(np.mean([getattr(judge(m.evidence, config), cue) is False for m in rows]))
        out[cue] = per_class
    return out


def percentiles(values: list[float]) -> dict | None:
    if not values:
        return None
    qs = (0, 1, 5, 25, 50, 75, 95, 99, 100)
    return {f"p{q}": round(float(v), 5) for q, v in zip(qs, np.percentile(values, qs))}


def distributions(measured: list[Measured]) -> dict:
    fields: dict[str, Callable[[LivenessEvidence], float | None]] = {
        "passive_score": lambda e: e.passive_score,
        "motion_coarse_change": lambda e: e.motion.coarse_change if e.motion else None,
        "motion_coherence": lambda e: e.motion.coherence if e.motion else None,
        "motion_landmark": lambda e: e.motion.landmark if e.motion else None,
        "identity_min_cosine": lambda e: e.identity_min_cosine,
        "planarity_movement": lambda e: e.planarity.movement if e.planarity else None,
        "planarity_ratio": lambda e: e.planarity_ratio,
    }
    out: dict = {}
    for group in ("main", "replay_crops"):
        for cls in (BONA_FIDE, *SPECIES):
            rows = [m.evidence for m in measured if m.group == group and m.burst.species == cls and m.evidence]
            if not rows:
                continue
            out[f"{group}/{cls}"] = {
                name: percentiles([v for e in rows if (v := get(e)) is not None]) for name, get in fields.items()
            }
    return out


def _calib(measured: list[Measured], cls: str) -> list[LivenessEvidence]:
    return [
        m.evidence
        for m in measured
        if m.split == "calibration" and m.group == "main" and m.burst.species == cls and m.evidence is not None
    ]


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return float(np.log(p / (1 - p)))


def _expit(x: float) -> float:
    return float(1 / (1 + np.exp(-x)))


def choose_thresholds(measured: list[Measured]) -> tuple[LivenessConfig, dict]:
    """Every threshold from the calibration split (main group), with the rule that chose it."""
    bona = _calib(measured, BONA_FIDE)
    rules: dict = {}

    # Passive: the scores are confident (attacks near 0, bona fide near 1), so the threshold
    # goes half-way, in log-odds, between the highest attack score (print and screen) and the
    # bona fide 1st percentile: the margin is shared between the two error kinds.
    attack_scores = [e.passive_score for s in ("print", "screen") for e in _calib(measured, s)]
    bona_p1 = float(np.percentile([e.passive_score for e in bona], 1))
    attack_max = float(max(attack_scores))
    passive_threshold = round(float(_expit((_logit(attack_max) + _logit(bona_p1)) / 2)), 3)
    rules["passive"] = {
        "rule": "log-odds midpoint of the highest attack score (print, screen) and the bona fide 1st percentile",
        "attack_max": attack_max,
        "bona_fide_p1": bona_p1,
    }

    # Motion: the coarse change must clear every still burst, the coherence every noise-added
    # one (the variant whose coarse change grows with the noise); each threshold is the
    # geometric mean of the stills' maximum and the bona fide 1st percentile.
    stills = _calib(measured, "still")
    noisy = [m.evidence for m in measured if m.split == "calibration" and m.burst.name.startswith("still-noisy/")]
    change_max = max(e.motion.coarse_change for e in stills)
    coherence_max = max(e.motion.coherence for e in noisy)
    change_p1 = float(np.percentile([e.motion.coarse_change for e in bona], 1))
    coherence_p1 = float(np.percentile([e.motion.coherence for e in bona], 1))
    motion_min_change = round(float(np.sqrt(change_max * change_p1)), 3)
    motion_min_coherence = round(float(np.sqrt(coherence_max * coherence_p1)), 3)
    rules["motion"] = {
        "rule": "geometric mean of the stills' maximum (coherence: noise-added stills) and the bona fide 1st percentile",
        "still_max_coarse_change": change_max,
        "bona_fide_p1_coarse_change": change_p1,
        "noisy_still_max_coherence": coherence_max,
        "bona_fide_p1_coherence": coherence_p1,
    }

    # Identity: the data has no spliced bursts, so the bound comes from the other side:
    # strangers score up to ~0.30 on SFace (MODELS.md); keep bona fide failures <= 1%.
    cosines = np.array([e.identity_min_cosine for e in bona])
    identity_threshold = round(float(min(0.30, np.percentile(cosines, 1))), 3)
    rules["identity_threshold"] = "min(0.30 = highest stranger cosine seen, bona fide 1st percentile)"

    # Planarity: the largest print catch rate with bona fide failures <= 1%.
    prints = _calib(measured, "print")
    best_plan = (0.0, 0.10, 0.0)
    for movement in (0.05, 0.10, 0.15, 0.20, 0.30):
        for ratio in np.round(np.arange(0.005, 0.101, 0.005), 3):
            cfg = LivenessConfig(planarity_min_movement=movement, planarity_max_ratio=float(ratio))
            bona_fail = np.mean([judge(e, cfg).planarity is False for e in bona])
            caught = np.mean([judge(e, cfg).planarity is False for e in prints])
            if bona_fail <= 0.01 and caught > best_plan[0] + 1e-9:
                best_plan = (float(caught), movement, float(ratio))
    rules["planarity"] = {
        "rule": "grid: movement 0.05..0.30, ratio 0.005..0.10: most prints caught with bona fide failures <= 1%",
        "prints_caught_alone": best_plan[0],
    }

    config = LivenessConfig(
        passive_threshold=passive_threshold,
        motion_min_change=motion_min_change,
        motion_min_coherence=motion_min_coherence,
        identity_threshold=identity_threshold,
        planarity_min_movement=best_plan[1],
        planarity_max_ratio=best_plan[2],
    )
    return config, rules


def latency(pipeline: Pipeline, bursts: list[Burst], config: LivenessConfig, repeats: int = 3) -> dict:
    """Milliseconds for the passive stage and for the whole check on 5-frame 640x480 bursts."""
    checker = LivenessChecker(pipeline.v2, pipeline.v1se, config)
    passive_only = LivenessChecker(
        pipeline.v2,
        pipeline.v1se,
        dataclasses.replace(config, motion_enabled=False, identity_enabled=False, planarity_enabled=False),
    )
    whole, passive = [], []
    for burst in bursts:
        observations = [pipeline.observe(f) for f in burst.frames]
        if any(o is None for o in observations):
            continue
        for _ in range(repeats):
            start = time.perf_counter()
            checker.check(observations)
            whole.append((time.perf_counter() - start) * 1e3)
            start = time.perf_counter()
            passive_only.check(observations)
            passive.append((time.perf_counter() - start) * 1e3)
    return {
        "bursts": len(whole) // repeats,
        "frames_per_burst": 5,
        "frame_size": "640x480",
        "threads": 1,
        "whole_check_ms": {"median": float(np.median(whole)), "p95": float(np.percentile(whole, 95))},
        "passive_stage_ms": {"median": float(np.median(passive)), "p95": float(np.percentile(passive, 95))},
        "passive_frames_scored": config.passive_frames,
        "passive_per_scored_frame_ms": float(np.median(passive)) / config.passive_frames,
    }


def det_passive(measured: list[Measured], config: LivenessConfig) -> dict:
    """DET of the whole decision as the passive threshold sweeps (the other cues at their chosen values).

    The decision is a conjunction of cues, not one score; the passive threshold is the
    cue that separates print and screen attacks here, so it is the axis of the curve.
    """
    rows = [m for m in measured if m.group == "main"]
    thresholds = sorted({0.0, 1.0, *np.round(np.geomspace(1e-4, 0.999, 60), 5).tolist()})
    curve = []
    for threshold in thresholds:
        cfg = dataclasses.replace(config, passive_threshold=float(threshold))

        def fails(m: Measured) -> bool:
            return m.evidence is None or not decide(judge(m.evidence, cfg))

        point = {"passive_threshold": threshold,
                 "bpcer": rate([fails(m) for m in rows if m.burst.species == BONA_FIDE])}
        for species in ("print", "screen"):
            point[f"apcer_{species}"] = rate([not fails(m) for m in rows if m.burst.species == species])
        curve.append(point)
    return {"axis": "passive_threshold", "operating_threshold": config.passive_threshold, "points": curve}


def plot_det(det: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor = 1e-3  # rates of 0 drawn at the floor of the log axes
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for species, colour in (("print", "tab:blue"), ("screen", "tab:orange")):
        xs = [max(p["bpcer"], floor) for p in det["points"]]
        ys = [max(p[f"apcer_{species}"], floor) for p in det["points"]]
        ax.plot(xs, ys, marker=".", color=colour, label=f"{species} attacks")
        chosen = min(det["points"], key=lambda p: abs(p["passive_threshold"] - det["operating_threshold"]))
        ax.scatter([max(chosen["bpcer"], floor)], [max(chosen[f"apcer_{species}"], floor)], color=colour, s=60,
                   edgecolor="black", zorder=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("BPCER (bona fide bursts refused)")
    ax.set_ylabel("APCER (attack bursts accepted)")
    ax.set_title(f"Liveness DET, passive threshold swept\n(dot: operating point {det['operating_threshold']:.2f}; "
                 f"0 drawn at {floor:g})", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, check=True)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=default_shared())
    parser.add_argument("--cache-dir", type=Path, default=Path(os.environ.get("IDV_MODEL_CACHE", "/tmp/idv-models")))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "liveness.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    pipeline = Pipeline(args.cache_dir, args.shared / "models")
    bursts = all_bursts(args.shared / "testdata")
    log.info("%d bursts", len(bursts))
    # Every cue measured; thresholds are applied afterwards by judge().
    measuring = LivenessChecker(pipeline.v2, pipeline.v1se, LivenessConfig())
    measured: list[Measured] = []
    for i, burst in enumerate(bursts):
        observations = [pipeline.observe(f) for f in burst.frames]
        evidence = None if any(o is None for o in observations) else measuring.measure(observations)
        measured.append(Measured(burst, evidence))
        if i % 200 == 0:
            log.info("%d/%d", i, len(bursts))

    config, rules = choose_thresholds(measured)
    timing_bursts = [b for b in bursts if b.source == "nuaa" and b.species == BONA_FIDE][:20]
    result = {
        "what": "liveness: passive MiniFASNet V2+V1SE, motion, identity, planarity; 5-frame bursts",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "model_fingerprints": pipeline.fingerprints,
        "terms": "ISO/IEC 30107-3: APCER = attack bursts that pass / attack bursts of that species; "
        "BPCER = bona fide bursts that fail / bona fide bursts. A burst with no face detected in a frame fails.",
        "held_out_subjects": sorted(HELD_OUT_SUBJECTS),
        "thresholds": dataclasses.asdict(config),
        "threshold_rules": rules,
        "results": report(measured, config),
        "passive_only_results": report(
            measured, dataclasses.replace(config, motion_enabled=False, identity_enabled=False, planarity_enabled=False)
        ),
        "cue_fail_rates_alone": cue_fail_rates(measured, config),
        "no_face_bursts": {
            cls: sum(1 for m in measured if m.evidence is None and m.burst.species == cls)
            for cls in (BONA_FIDE, *SPECIES)
        },
        "distributions": distributions(measured),
        "det_passive": det_passive(measured, config),
        "latency": latency(pipeline, timing_bursts, config),
        "failed_bona_fide": [
            m.burst.name
            for m in measured
            if m.burst.species == BONA_FIDE and m.group == "main" and not (m.evidence and decide(judge(m.evidence, config)))
        ],
        "passed_attacks": [
            m.burst.name
            for m in measured
            if m.burst.species != BONA_FIDE and m.group == "main" and m.evidence and decide(judge(m.evidence, config))
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    plot_det(result["det_passive"], args.out.with_name("det_liveness.png"))
    log.info("wrote %s", args.out)
    print(json.dumps({k: result[k] for k in ("thresholds", "results", "latency")}, indent=2))  # noqa: T201 (script)


if __name__ == "__main__":
    main()
