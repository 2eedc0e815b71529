"""Pick, at node start, the fastest build of a model that still computes what the reference does.

The manifest lists pull-time builds of a reference model (`variant_of`): a dynamic-batch
fp32 graph, an int8 QDQ quantisation. Which one is fastest depends on the CPU the node
runs on (VNNI or not, AVX-512 or not), so it is measured here, not assumed:

1. every candidate embeds a fixed probe set; a candidate whose embeddings fall below
   `min_cosine` against the reference's on any probe is refused (it would not compute the
   scores the thresholds were calibrated on);
2. a variant must also carry accuracy evidence in the manifest (`evidence`: its LFW/NUAA
   rates measured within 0.1 point of the reference's, benchmarks/accuracy/variant_eval.py);
3. the accepted candidates are timed interleaved (round-robin, so a neighbour's CPU burst
   hits all alike) on one face per call, as the pipeline calls it; the lowest median wins.

Templates, thresholds and the fingerprint stay the reference's whichever build serves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

log = logging.getLogger(__name__)

Embed = Callable[[list[np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class VariantPolicy:
    # Committed tolerance: the lowest cosine between a variant's and the reference's embedding
    # of one probe. 0.999 moves a comparison score by at most ~0.045 in the worst case and
    # far less typically; tests/test_model_variants.py checks scores on real pairs.
    min_cosine: float = 0.999
    probe_faces: int = 8
    # Faces per timed call: the pipeline embeds one chosen frame per call (each its own task on the
    # frame pool, idv/pipeline.py), so one face is what a call costs in service.
    batch: int = 1
    rounds: int = 7


@dataclass(frozen=True)
class VariantReport:
    name: str
    min_cosine: float
    median_ms: float  # per timed call of `batch` faces; NaN when not timed
    accepted: bool
    reason: str  # why refused ("" when accepted)


@dataclass(frozen=True)
class VariantChoice:
    name: str
    reports: tuple[VariantReport, ...]


def probe_faces(count: int) -> list[np.ndarray]:
    """A fixed, seeded set of 112x112 BGR images with face-like statistics: smooth shading
    (low-frequency fields) plus fine texture, the range an aligned crop spans. No test
    data is needed at node start; a face-free probe is stricter, not laxer, for a quantised
    build calibrated on faces."""
    rng = np.random.default_rng(20261130)
    probes = []
    for _ in range(count):
        coarse = rng.uniform(40, 215, (7, 7, 3)).astype(np.float32)
        smooth = cv2.resize(coarse, (112, 112), interpolation=cv2.INTER_CUBIC)
        texture = rng.normal(0, 12, (112, 112, 3)).astype(np.float32)
        probes.append(np.clip(smooth + texture, 0, 255).astype(np.uint8))
    return probes


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.min(np.sum(a * b, axis=1)))


def choose(
    reference: tuple[str, Embed],
    variants: Sequence[tuple[str, Embed, bool]],
    policy: VariantPolicy = VariantPolicy(),
    clock: Callable[[], float] = time.perf_counter,
) -> VariantChoice:
    """The fastest of the reference and its agreeing variants (name, embed, has_evidence)."""
    probes = probe_faces(policy.probe_faces)
    reference_name, reference_embed = reference
    expected = reference_embed(probes)
    candidates: list[tuple[str, Embed]] = [reference]
    refused: list[VariantReport] = []
    agreement = {reference_name: 1.0}
    for name, embed, has_evidence in variants:
        try:
            cosine = _min_cosine(embed(probes), expected)
        except Exception as exc:  # noqa: BLE001 (a build that fails to run is refused, not fatal)
            refused.append(VariantReport(name, float("nan"), float("nan"), False, f"failed to run: {exc}"))
            continue
        agreement[name] = cosine
        if not has_evidence:
            refused.append(VariantReport(name, cosine, float("nan"), False, "no accuracy evidence in the manifest"))
        elif not cosine >= policy.min_cosine:
            refused.append(VariantReport(name, cosine, float("nan"), False,
                                         f"min cosine {cosine:.5f} < tolerance {policy.min_cosine}"))
        else:
            candidates.append((name, embed))

    timings: dict[str, list[float]] = {name: [] for name, _ in candidates}
    batch = probes[: policy.batch]
    for _, embed in candidates:
        embed(batch)  # first call allocates: not timed
    for _ in range(policy.rounds):
        for name, embed in candidates:
            start = clock()
            embed(batch)
            timings[name].append((clock() - start) * 1000.0)
    accepted = [VariantReport(name, agreement[name], float(np.median(timings[name])), True, "")
                for name, _ in candidates]
    best = min(accepted, key=lambda r: r.median_ms)
    reports = tuple(accepted + refused)
    log.info("model variant chosen", extra={
        "model": reference_name, "chosen": best.name,
        "variants": {r.name: {"min_cosine": round(r.min_cosine, 6), "median_ms": round(r.median_ms, 3),
                              "accepted": r.accepted, "reason": r.reason} for r in reports}})
    return VariantChoice(best.name, reports)
