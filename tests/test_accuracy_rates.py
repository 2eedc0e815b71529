"""Genuine probes PASS and impostors FAIL at the rates the manifest's threshold promises.

The matcher is exercised through the node's own pipeline (decode, detect, quality, align,
embed, fuse, compare at the manifest threshold for the default security level). Liveness
is switched off here because this test is about the threshold; liveness has its own.
Expected rates come from benchmarks/results/verification.json, which chose the threshold.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from idv.errors import InvalidRequest
from idv.evaluation.datasets import parse_pairs_file
from idv.identity import make_id_number
from idv.pipeline import Budget
from idv.service import EnrollCommand, VerifyCommand
from idv.verdicts import Purpose, TrueReason
from tests.conftest import REPO, nuaa_frames, nuaa_sequences

SUBJECTS = [f"{i:04d}" for i in range(1, 10)]


def _id_for(index: int) -> str:
    from datetime import date

    year, sequence = divmod(index, 1000)
    return make_id_number("310104", date(1985 + year, 6, 1), sequence)


@pytest.fixture(scope="module")
def results() -> dict:
    return json.loads((REPO / "benchmarks" / "results" / "verification.json").read_text())


@pytest.fixture()
def matcher(node_settings, assemble):
    return assemble(node_settings.updated(liveness=False, caller_requests_per_minute=10**6,
                              caller_distinct_identities_per_hour=10**6, lockout_after_failures=10**5,
                              failure_cap=10**5,
                              # LFW photos are press crops with neighbours at the edges; the capture
                              # policy (bystander_ratio) is not what this test measures.
                              bystander_ratio=1.0,
                              # LFW enrols one person under several ID numbers on purpose: no 1:N screening.
                              duplicate_policy="off")).service


def _enroll_first_usable(pipeline, id_number: str, candidates: list[Path]) -> None:
    for path in candidates:
        try:
            pipeline.enroll(EnrollCommand(id_number, "测试", (path.read_bytes(),)), Budget(30))
            return
        except InvalidRequest:
            continue
    raise AssertionError("no usable reference")


def _verdict(pipeline, id_number: str, frames: tuple[bytes, ...]) -> TrueReason:
    return pipeline.verify(VerifyCommand(id_number, "测试", Purpose.CHECK_IN, frames), Budget(30)).true_reason


def test_nuaa_id_photo_vs_live_bursts(matcher, testdata) -> None:
    for index, subject in enumerate(SUBJECTS):
        _enroll_first_usable(matcher, _id_for(index), nuaa_frames(testdata, "print", subject))
    genuine, impostor = [], []
    for index, subject in enumerate(SUBJECTS):
        for frames in nuaa_sequences(testdata, "live", subject).values():
            for start in range(0, len(frames) - 9, 14):  # 3-frame bursts spread over ~1 s
                burst = tuple(p.read_bytes() for p in frames[start:start + 9:4])
                genuine.append(_verdict(matcher, _id_for(index), burst))
                for other in (index + 1, index + 4):  # two other enrolled identities
                    impostor.append(_verdict(matcher, _id_for(other % len(SUBJECTS)), burst))
    usable_genuine = [r for r in genuine if r in (TrueReason.VERIFIED, TrueReason.FACE_MISMATCH)]
    assert len(usable_genuine) >= 0.95 * len(genuine), "too many bursts failed capture checks"
    false_non_matches = usable_genuine.count(TrueReason.FACE_MISMATCH)
    false_matches = impostor.count(TrueReason.VERIFIED)
    # verification.json: NUAA FNMR at this threshold is 0 for 3+ frame bursts; allow 2 % for the sample.
    assert false_non_matches <= max(1, 0.02 * len(usable_genuine)), (false_non_matches, len(usable_genuine))
    assert false_matches == 0, f"{false_matches} of {len(impostor)} impostor bursts passed"
    assert len(impostor) >= 100


def test_lfw_pairs_single_photo_vs_single_photo(matcher, testdata, results) -> None:
    lfw = testdata / "lfw"
    fold = [p for p in parse_pairs_file(lfw / "pairs_folds1-5.txt").pairs if p.fold == 0]
    genuine_pairs = [p for p in fold if p.same][:120]
    impostor_pairs = [p for p in fold if not p.same][:120]
    false_non, false_match, skipped = 0, 0, 0
    for number, pair in enumerate(genuine_pairs + impostor_pairs):
        id_number = _id_for(1000 + number)
        try:
            matcher.enroll(EnrollCommand(id_number, "测试", ((lfw / pair.left.relpath).read_bytes(),)), Budget(30))
        except InvalidRequest:
            skipped += 1
            continue
        reason = _verdict(matcher, id_number, ((lfw / pair.right.relpath).read_bytes(),))
        if reason not in (TrueReason.VERIFIED, TrueReason.FACE_MISMATCH):
            skipped += 1
        elif pair.same and reason is TrueReason.FACE_MISMATCH:
            false_non += 1
        elif not pair.same and reason is TrueReason.VERIFIED:
            false_match += 1
    assert skipped <= 0.05 * (len(genuine_pairs) + len(impostor_pairs))
    # The all-vs-all FNMR at the default level (fmr_1e-4) is under 3 %; 120 pairs: allow up to 8 (binomial tail).
    promised = results["lfw_nuaa_diagnostic_thresholds"]["levels"]["fmr_1e-4"]
    assert promised["threshold"] > 0
    assert false_non <= 8, false_non
    assert false_match == 0, false_match
