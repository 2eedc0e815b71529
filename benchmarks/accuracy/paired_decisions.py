"""Paired decisions: does a change of settings leave the decisions on the attack and bona fide data unchanged?

Every burst that benchmarks/accuracy/attacks_eval.py sends (its generators and its Bench, unchanged:
both policies, every species, the bona fide presentations) goes through TWO pipelines built from
the same loaded models: the *reference* settings and the *candidate* settings (each attacks_eval's
settings plus `--reference` / `--candidate` overrides). The reference pipeline's `evaluate` is
wrapped so that each call also runs the candidate's `evaluate` on the same checked burst, claimed
templates (a copy: `evaluate` zeroes what it owns, and with one reference photo that is the
claimed array itself), challenge actions and light request. The bench sees the reference's
answer, so the reference side is an attacks_eval run (its APCER/BPCER counts); the candidate side
is what the candidate would have answered to the very same bursts, challenges and references.

A pair is compared on the core's true reason (VERIFIED, LIVENESS_FAILED, CHALLENGE_FAILED, ...);
what the service decides before the core (an invalid challenge, a replay) is the same for both
sides by construction and is counted as `not_evaluated`. Each source is enrolled on both services
(from the same image), so the candidate's 1:N screening sees the same people; an enrolment that
one side refuses is listed. Challenges are fresh random draws of the service (as in attacks_eval),
so two runs do not send identical challenges, but within a run both sides always see the same one.

Use it to show that a change meant to be decision-neutral (a faster path, a parallel schedule) is:
a run with zero differences on both splits is the evidence; any difference is listed with the
reasons on each side and its source. A pair that must differ (e.g. quality__min_sharpness=1e6)
shows the harness sees differences.

    .venv/bin/python benchmarks/accuracy/paired_decisions.py \\
        --reference serving__burst_parallel=true --candidate serving__burst_parallel=false --split report
    .venv/bin/python benchmarks/accuracy/paired_decisions.py --candidate burst__coarse_detection_above=0 \\
        --write        # -> benchmarks/results/paired_decisions.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from attacks_eval import SPECIES, Bench, bench_overrides, run_sources, summarise  # noqa: E402

from idv.assemble import build_service  # noqa: E402
from idv.config import Settings, load_settings, masked  # noqa: E402
from idv.errors import IdvError  # noqa: E402
from idv.evaluation.provenance import run_provenance  # noqa: E402
from idv.models.model_set import ModelSet, load_models, manifest_for  # noqa: E402
from idv.pipeline import Budget, CheckedBurst, ClaimedReference, Decision, LightRequest, VerificationPipeline  # noqa: E402

log = logging.getLogger("paired_decisions")
CANDIDATE_BUDGET_S = 60.0  # the bench's own budget per request (attacks_eval.Bench)


@dataclass(frozen=True)
class Pair:
    """One burst's core decision on each side (a reason, or `error:<type>` when evaluate raised)."""

    reference: str
    candidate: str
    reference_ms: float
    candidate_ms: float


def _reason(call: Callable[[], Decision]) -> tuple[str, Decision | None, BaseException | None, float]:
    began = time.perf_counter()
    try:
        decision = call()
    except Exception as error:  # noqa: BLE001 (recorded, and the reference's re-raised to the service)
        return f"error:{type(error).__name__}", None, error, (time.perf_counter() - began) * 1000.0
    return decision.true_reason.value, decision, None, (time.perf_counter() - began) * 1000.0


class PairedPipelines:
    """The reference pipeline's `evaluate`, wrapped to also run the candidate's on the same inputs.

    The wrapper is an instance attribute of the reference pipeline (it shadows the method), so the
    reference service, which holds that pipeline, calls it without knowing."""

    def __init__(self, reference: VerificationPipeline, candidate: VerificationPipeline):
        self._reference_evaluate = reference.evaluate
        self._candidate = candidate
        self._pending: list[Pair] = []
        reference.evaluate = self.evaluate  # type: ignore[method-assign]

    def evaluate(self, burst: CheckedBurst, claimed: ClaimedReference, actions: tuple[str, ...] | None,
                 budget: Budget, light: LightRequest | None = None) -> Decision:
        # Copied before the reference runs: it zeroes what it owns, and a single reference photo's
        # fused template is the claimed array itself (idv/face/reference_fusion.py).
        templates = None if claimed.templates is None else claimed.templates.copy()
        try:
            ref_reason, decision, error, ref_ms = _reason(
                lambda: self._reference_evaluate(burst, claimed, actions, budget, light=light))
            # A fresh budget: the candidate must not run short because the reference ran first.
            cand_reason, _, _, cand_ms = _reason(
                lambda: self._candidate.evaluate(burst, ClaimedReference(claimed.id_key, templates), actions,
                                                 Budget(CANDIDATE_BUDGET_S), light=light))
        finally:
            if templates is not None:
                templates.fill(0)
        self._pending.append(Pair(ref_reason, cand_reason, ref_ms, cand_ms))
        if error is not None:
            raise error
        assert decision is not None
        return decision

    def take(self) -> Pair | None:
        """The pair of the request just answered (None: the service answered before the core)."""
        pending, self._pending = self._pending, []
        if len(pending) > 1:
            raise RuntimeError(f"{len(pending)} evaluations for one recorded presentation")
        return pending[0] if pending else None


class PairedService:
    """What the Bench drives: the reference service, enrolments made on both services."""

    def __init__(self, reference, candidate):
        self.reference = reference
        self.candidate = candidate
        self.enrolments: list[dict] = []

    def enroll(self, command, budget: Budget):
        refused: IdvError | None = None
        outcome = None
        try:
            outcome = self.reference.enroll(command, budget)
        except IdvError as error:
            refused = error
        try:
            self.candidate.enroll(command, Budget(CANDIDATE_BUDGET_S))
            candidate = "ENROLLED"
        except IdvError as error:
            candidate = error.reason
        self.enrolments.append({"reference": "ENROLLED" if refused is None else refused.reason,
                                "candidate": candidate})
        if refused is not None:
            raise refused
        return outcome

    def __getattr__(self, name: str):  # verify, create_challenge: the reference's
        return getattr(self.reference, name)


class PairedBench(Bench):
    """attacks_eval's Bench; each recorded presentation carries its pair of core decisions."""

    def __init__(self, service: PairedService, pipelines: PairedPipelines, seed: int):
        super().__init__(service, seed)
        self.pipelines = pipelines

    def enroll(self, source: str, image) -> str | None:
        id_number = super().enroll(source, image)
        self.service.enrolments[-1]["source"] = source
        return id_number

    def record(self, kind: str, species: str, policy: str, source: str, reason: str, **extra) -> None:
        pair = self.pipelines.take()
        super().record(kind, species, policy, source, reason, **extra)
        row = self.rows[-1]
        if pair is not None:
            row.update(reference_reason=pair.reference, candidate_reason=pair.candidate,
                       reference_ms=round(pair.reference_ms, 1), candidate_ms=round(pair.candidate_ms, 1))


def settings_for(extra: dict[str, object], data_dir: Path, base: dict[str, object]) -> Settings:
    return load_settings(environ={}, overrides={**base, **extra, "data_dir": data_dir})


def _models_key(settings: Settings) -> tuple:
    """What build_service loads the models from: sides that differ here cannot share one ModelSet."""
    return (settings.models, settings.liveness.enabled, settings.quality.min_face_size,
            settings.serving.frame_pool_threads)


def _load(settings: Settings) -> ModelSet:
    return load_models(manifest_for(settings.models), settings.models, liveness=settings.liveness.enabled,
                       min_face_px=settings.quality.min_face_size, parallel_calls=settings.serving.frame_pool_threads)


@contextmanager
def paired_bench(reference: Settings, candidate: Settings, seed: int,
                 models: ModelSet | None = None) -> Iterator[PairedBench]:
    """Two services (separate stores) on the same models, the reference's pipeline paired with the
    candidate's, behind attacks_eval's Bench. `models`: a loaded set for both (else loaded here; a
    separate one for the candidate when its settings load models differently)."""
    if models is None:
        models = _load(reference)
    candidate_models = models
    if _models_key(candidate) != _models_key(reference):
        log.warning("the candidate settings load the models differently: loading a second model set")
        candidate_models = _load(candidate)
    with ExitStack() as stack:
        ref = stack.enter_context(build_service(reference, models=models))
        cand = stack.enter_context(build_service(candidate, models=candidate_models))
        pipelines = PairedPipelines(ref.pipeline, cand.pipeline)
        yield PairedBench(PairedService(ref.service, cand.service), pipelines, seed)


def _group(row: dict) -> str:
    return row["species"] if row["kind"] == "attack" else "bona_fide"


def compare(rows: list[dict], enrolments: list[dict]) -> dict:
    """Pairs compared and differences per policy and species; each side's APCER/BPCER table."""
    by_policy: dict[str, dict[str, dict[str, int]]] = defaultdict(
        lambda: defaultdict(lambda: {"pairs": 0, "differ": 0, "not_evaluated": 0}))
    differences = []
    candidate_rows = []
    for row in rows:
        cell = by_policy[row["policy"]][_group(row)]
        if "reference_reason" not in row:
            cell["not_evaluated"] += 1  # answered before the core: the same on both sides
            candidate_rows.append(row)
            continue
        cell["pairs"] += 1
        # The service may re-map the core's answer (no reference, expired): the candidate's would be
        # re-mapped alike only when the core said the same, so a re-mapped row keeps the service's answer.
        remapped = row["true_reason"] != row["reference_reason"]
        candidate_rows.append({**row, "true_reason": row["true_reason"] if remapped else row["candidate_reason"]})
        if row["reference_reason"] != row["candidate_reason"]:
            cell["differ"] += 1
            differences.append({k: row[k] for k in ("kind", "species", "policy", "source", "reference_reason",
                                                   "candidate_reason", "actions", "via", "jitter") if k in row})
    ordered = {policy: {group: dict(by_policy[policy][group]) for group in (*SPECIES, "bona_fide")
                        if group in by_policy[policy]}
               for policy in ("default", "passive_only") if policy in by_policy}
    pairs = sum(c["pairs"] for p in ordered.values() for c in p.values())

    def ms(side: str) -> dict:
        out = {}
        for policy in ordered:
            values = [r[f"{side}_ms"] for r in rows if r["policy"] == policy and f"{side}_ms" in r]
            if values:
                out[policy] = {"mean": round(sum(values) / len(values), 1), "total_s": round(sum(values) / 1000, 1)}
        return out

    enrol_diff = [e for e in enrolments if e["reference"] != e["candidate"]]
    return {
        "pairs": pairs,
        "differences": len(differences),
        "enrolment_differences": enrol_diff,
        "agree": not differences and not enrol_diff,
        "by_policy": ordered,
        "differing": differences,
        "reference_table": summarise(rows),
        "candidate_table": summarise(candidate_rows),
        "evaluate_ms": {"reference": ms("reference"), "candidate": ms("candidate"),
                        "note": "wall time of each side's evaluate, run one after the other (reference first) on "
                                "a shared machine: indicative only, not a latency measurement"},
    }


def parse_overrides(items: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"an override is KEY=VALUE (e.g. serving__burst_parallel=false), got {item!r}")
        out[key.strip()] = value.strip()
    return out


def settings_differences(reference: Settings, candidate: Settings) -> dict[str, list]:
    """section.name -> [reference, candidate] for every effective setting that differs (not the stores)."""
    a, b = masked(reference), masked(candidate)
    out = {}
    for section in a:
        for name, value in a[section].items():
            if value != b[section].get(name) and not (section == "store" and name.endswith(("dir", "path"))):
                out[f"{section}.{name}"] = [value, b[section].get(name)]
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", action="append", default=[], metavar="KEY=VALUE",
                        help="a settings override of the reference side (repeatable)")
    parser.add_argument("--candidate", action="append", default=[], metavar="KEY=VALUE",
                        help="a settings override of the candidate side (repeatable)")
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("IDV_SHARED_DIR", REPO.parent / "shared")))
    parser.add_argument("--split", choices=("dev", "report", "both"), default="both")
    parser.add_argument("--attempts", type=int, default=10, help="challenged attempts per video source")
    parser.add_argument("--fake-camera-attempts", type=int, default=2)
    parser.add_argument("--genuine-per-clip", type=int, default=10, help="start jitters per performable challenge")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--write", action="store_true", help="write benchmarks/results/paired_decisions.json")
    parser.add_argument("--out", type=Path, default=None, help="the report (default: a file in the temp dir)")
    parser.add_argument("--fail-on-difference", action="store_true", help="exit 1 when any decision differs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = args.out or (REPO / "benchmarks" / "results" / "paired_decisions.json" if args.write
                       else Path(tempfile.gettempdir()) / "paired_decisions.json")
    reference_overrides, candidate_overrides = parse_overrides(args.reference), parse_overrides(args.candidate)
    began = time.monotonic()
    base = bench_overrides()
    splits = ("dev", "report") if args.split == "both" else (args.split,)
    results: dict[str, dict] = {}
    all_rows: dict[str, list[dict]] = {}
    models = None
    differ: dict[str, list] = {}
    for split in splits:
        split_began = time.monotonic()
        # Fresh services per split, as attacks_eval runs each split on its own (replay_pair is in both).
        with tempfile.TemporaryDirectory() as ref_dir, tempfile.TemporaryDirectory() as cand_dir:
            reference = settings_for(reference_overrides, Path(ref_dir), base)
            candidate = settings_for(candidate_overrides, Path(cand_dir), base)
            differ = settings_differences(reference, candidate)
            if models is None:
                models = _load(reference)
            with paired_bench(reference, candidate, args.seed, models) as bench:
                run_sources(bench, args.shared, split, args.attempts, args.fake_camera_attempts,
                            args.genuine_per_clip, split_began)
        results[split] = {**compare(bench.rows, bench.service.enrolments),
                          "seconds": round(time.monotonic() - split_began, 1)}
        all_rows[split] = bench.rows
        log.info("%s: %d pairs, %d differ (%.0f s)", split, results[split]["pairs"], results[split]["differences"],
                 results[split]["seconds"])
    report = {
        "what": __doc__.splitlines()[0],
        "method": "every burst of benchmarks/accuracy/attacks_eval.py through two pipelines on the same models; "
                  "the core's true reason compared pair by pair (the reference side is an attacks_eval run)",
        **run_provenance(REPO),
        "reference_overrides": reference_overrides,
        "candidate_overrides": candidate_overrides,
        "settings_that_differ": differ,
        "base_overrides": {k: v for k, v in base.items()},
        "seed": args.seed,
        "attempts_per_video_source": args.attempts,
        "agree": all(r["agree"] for r in results.values()),
        "splits": results,
        "seconds": round(time.monotonic() - began, 1),
        "rows": all_rows,
    }
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    log.info("%s -> %s", "AGREE" if report["agree"] else "DIFFER", out)
    for split, result in results.items():
        log.info("%s: %s", split, json.dumps(result["by_policy"]))
        for d in result["differing"]:
            log.info("  differs: %s", json.dumps(d, ensure_ascii=False))
    if args.fail_on_difference and not report["agree"]:
        raise SystemExit(1)
    return report


if __name__ == "__main__":
    main()
