"""`idv eval light DIR` (issue 14): the light check measured on a site's own labelled recordings.

Record mode (idv.http.recorder) saves captures from the capture page with the label the operator
picked: `genuine`, or the presentation-attack species staged (print, screen, video, synthetic,
mask). This runs the node's own light check on each (VerificationPipeline.judge_light: timing,
decode, detection, the quality gate, then the light analysis with the node's thresholds; no face
comparison) and reports:

- BPCER: genuine captures the light check rejects (any cause, with the causes counted);
- APCER per attack species: attack captures it accepts;

each with its counts and a 95% Clopper-Pearson interval. The shipped thresholds come from
simulation (benchmarks/README.md, "Light challenge"); this is how a site checks them on real
devices. The numbers describe the recordings given, nothing more: a site that tunes on them must
report on other recordings.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from idv.errors import IdvError
from idv.evaluation.intervals import Rate, rate
from idv.http.recorder import GENUINE, LABELS, MANIFEST, RECORDING_VERSION
from idv.pipeline import Budget, LightRequest, VerificationPipeline
from liveness.light import PALETTE, LightConfig, LightStep

_BUDGET_SECONDS = 120.0  # per recording: an offline run, not a request


class LightRecordingError(ValueError):
    """A directory without recordings, or a malformed recording; the message names it."""


@dataclass(frozen=True)
class Recording:
    name: str
    label: str
    light: tuple[LightStep, ...]
    timestamps_ms: tuple[float, ...]
    frames: tuple[Path, ...]


@dataclass(frozen=True)
class RecordingResult:
    name: str
    label: str
    passed: bool
    cause: str  # VERIFIED, or why the light check rejected it (CHALLENGE_FAILED, NO_FACE, ...)


@dataclass(frozen=True)
class LightReport:
    results: tuple[RecordingResult, ...]
    config: LightConfig

    def bpcer(self) -> Rate | None:
        genuine = [r for r in self.results if r.label == GENUINE]
        return rate(sum(not r.passed for r in genuine), len(genuine)) if genuine else None

    def apcer(self) -> dict[str, Rate]:
        species = sorted({r.label for r in self.results if r.label != GENUINE}, key=LABELS.index)
        out = {}
        for name in species:
            attacks = [r for r in self.results if r.label == name]
            out[name] = rate(sum(r.passed for r in attacks), len(attacks))
        return out

    def causes(self, label: str) -> dict[str, int]:
        return dict(Counter(r.cause for r in self.results if r.label == label and not r.passed))


def _load_one(directory: Path) -> Recording:
    where = f"recording {directory.name}"
    try:
        raw = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except OSError as exc:
        raise LightRecordingError(f"{where}: {MANIFEST} cannot be read ({exc.strerror})") from None
    except (ValueError, UnicodeDecodeError):
        raise LightRecordingError(f"{where}: {MANIFEST} is not valid JSON") from None
    if not isinstance(raw, dict):
        raise LightRecordingError(f"{where}: {MANIFEST} is not a JSON object")
    if raw.get("version") != RECORDING_VERSION:
        raise LightRecordingError(f"{where}: version {raw.get('version')!r} is not {RECORDING_VERSION}")
    label = raw.get("label")
    if label not in LABELS:
        raise LightRecordingError(f"{where}: label {label!r} is not one of {', '.join(LABELS)}")
    try:
        light = tuple(LightStep(str(step["colour"]), int(step["duration_ms"])) for step in raw["light"])
        stamps = tuple(float(t) for t in raw["timestamps_ms"])
        names = [str(n) for n in raw["frames"]]
    except (KeyError, TypeError, ValueError):
        raise LightRecordingError(f"{where}: needs light (colour, duration_ms steps), timestamps_ms and "
                                  "frames lists") from None
    if not light or any(step.colour not in PALETTE or step.duration_ms <= 0 for step in light):
        raise LightRecordingError(f"{where}: the light sequence is empty or has unknown colours/durations")
    if not names or len(stamps) != len(names) or not all(math.isfinite(t) for t in stamps):
        raise LightRecordingError(f"{where}: {len(names)} frames but {len(stamps)} timestamps (one finite "
                                  "timestamp per frame)")
    frames = []
    for name in names:
        path = directory / name
        if Path(name).name != name or not path.is_file():
            raise LightRecordingError(f"{where}: frame file {name!r} is missing")
        frames.append(path)
    return Recording(directory.name, label, light, stamps, tuple(frames))


def load_recordings(directory: Path) -> list[Recording]:
    """Every recording under `directory` (one sub-directory each, as record mode writes them)."""
    if not directory.is_dir():
        raise LightRecordingError(f"{directory} is not a directory")
    # Record mode writes `.<name>.partial` first and renames it: those are unfinished, not recordings.
    entries = sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not entries:
        raise LightRecordingError(f"no recordings in {directory} (expected one folder per capture with a "
                                  f"{MANIFEST}, as the capture page's record mode writes them)")
    return [_load_one(entry) for entry in entries]


def evaluate(recordings: list[Recording], pipeline: VerificationPipeline,
             config: LightConfig = LightConfig()) -> LightReport:
    results = []
    for recording in recordings:
        frames = [path.read_bytes() for path in recording.frames]
        try:
            judged = pipeline.judge_light(frames, LightRequest(recording.light, recording.timestamps_ms),
                                          Budget(_BUDGET_SECONDS))
        except IdvError as exc:  # e.g. a frame that is not a JPEG/PNG, too many frames
            raise LightRecordingError(f"recording {recording.name}: {exc.message}") from None
        results.append(RecordingResult(recording.name, recording.label, judged.passed, judged.true_reason.value))
    return LightReport(tuple(results), config)


def build_pipeline(settings) -> VerificationPipeline:
    """The node's detector and recognizer, loaded as the node loads them, in a pipeline with the
    node's limits and quality gate (the light thresholds are the pipeline's default, as in the node)."""
    from idv.models.model_set import load_models, manifest_for

    models = load_models(manifest_for(settings.models), settings.models, liveness=False, actions=False,
                         min_face_px=settings.quality.min_face_size)
    return VerificationPipeline(models.detector, models.embedder, models.threshold, settings.limits, settings.image,
                                settings.quality, settings.burst)


def _rate_json(value: Rate) -> dict[str, object]:
    return {"errors": value.errors, "trials": value.trials, "rate": round(value.rate, 4),
            "ci95": [round(value.low, 4), round(value.high, 4)]}


def report_json(report: LightReport) -> dict[str, object]:
    bpcer = report.bpcer()
    return {
        "recordings": len(report.results),
        "thresholds": {"min_correlation": report.config.min_correlation,
                       "min_amplitude": report.config.min_amplitude, "source": "simulation (liveness/light.py)"},
        "bpcer": None if bpcer is None else {**_rate_json(bpcer), "rejections_by_cause": report.causes(GENUINE)},
        "apcer": {species: {**_rate_json(value)} for species, value in report.apcer().items()},
        "per_recording": [{"name": r.name, "label": r.label, "passed": r.passed, "cause": r.cause}
                          for r in report.results],
    }


def report_lines(report: LightReport) -> list[str]:
    lines = [f"light check on {len(report.results)} recordings (thresholds: correlation >= "
             f"{report.config.min_correlation}, amplitude >= {report.config.min_amplitude}; from simulation)",
             f"{'metric':<18} {'errors':>6} {'of':>5} {'rate':>7}   95% CI (Clopper-Pearson)"]

    def row(name: str, value: Rate) -> str:
        return (f"{name:<18} {value.errors:>6} {value.trials:>5} {value.rate:>7.1%}   "
                f"[{value.low:.1%}, {value.high:.1%}]")

    bpcer = report.bpcer()
    lines.append(row("BPCER (genuine)", bpcer) if bpcer else "BPCER (genuine)    no genuine recordings")
    for species, value in report.apcer().items():
        lines.append(row(f"APCER ({species})", value))
    if not report.apcer():
        lines.append("APCER              no attack recordings")
    causes = report.causes(GENUINE)
    if causes:
        lines.append("genuine rejections by cause: " + ", ".join(f"{k} {v}" for k, v in sorted(causes.items())))
    return lines
