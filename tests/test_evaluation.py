"""Tests for idv.evaluation: metrics on synthetic scores with known answers, the LFW pairs
parser, the comparison protocols' bookkeeping, and the threshold calibration / manifest edit."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import numpy as np
import pytest

from idv.evaluation.calibration import (
    CalibrationError,
    choose_thresholds,
    render_thresholds_table,
    write_manifest_thresholds,
)
from idv.evaluation.datasets import DatasetError, LfwImage, NuaaFrame, parse_pairs_file
from idv.evaluation.embedding import FaceTable
from idv.evaluation.metrics import (
    ScoreSet,
    allowed_false_matches,
    best_accuracy_threshold,
    ceil_to_decimals,
    cross_validated_accuracy,
    error_curve,
    operating_point,
    threshold_for_fmr,
)
from idv.evaluation.protocols import all_vs_all, id_vs_live, live_windows, ReferenceChoice

TENTHS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


# --- thresholds for a target FMR -----------------------------------------------------


def test_threshold_for_fmr_lets_exactly_the_allowed_impostors_through():
    scores = ScoreSet([0.95], TENTHS)
    threshold = threshold_for_fmr(scores.impostor, 0.2)  # 2 of 10 may pass: 0.9 and 1.0
    assert 0.8 < threshold < 0.9
    assert threshold == np.nextafter(0.8, 1.0)
    assert scores.fmr(threshold) == pytest.approx(0.2)
    # One step lower is the impostor score itself, which passes (>=): FMR 0.3 > target.
    assert scores.fmr(0.8) == pytest.approx(0.3)


def test_threshold_for_fmr_is_the_lowest_that_meets_the_target():
    rng = np.random.default_rng(7)
    impostor = np.sort(rng.normal(size=5000))
    for target in (0.1, 0.01, 1e-3, 3e-4):
        threshold = threshold_for_fmr(impostor, target)
        scores = ScoreSet([0.0], impostor)
        assert scores.fmr(threshold) <= target
        assert scores.fmr(float(np.nextafter(threshold, -np.inf))) > target


def test_ties_at_the_pivot_are_excluded_together():
    # 2 false matches allowed, but the 2nd..4th highest scores tie at 0.5: a threshold
    # that admits the 2nd admits all three, so only the top score may pass.
    scores = ScoreSet([0.9], [0.1, 0.5, 0.5, 0.5, 0.7, 0.0, 0.0, 0.0, 0.0, 0.0])
    threshold = threshold_for_fmr(scores.impostor, 0.2)
    assert 0.5 < threshold < 0.7
    assert scores.false_matches(threshold) == 1
    assert scores.false_matches(0.5) == 4


def test_no_false_match_allowed_puts_the_threshold_above_the_highest_impostor():
    scores = ScoreSet([0.9], TENTHS)
    threshold = threshold_for_fmr(scores.impostor, 0.05)  # floor(0.5) = 0 allowed
    assert threshold == np.nextafter(1.0, 2.0)
    assert scores.false_matches(threshold) == 0


def test_allowed_false_matches_is_not_fooled_by_binary_rounding():
    assert 0.07 * 100 != 7  # 7.000000000000001 in binary floating point
    assert allowed_false_matches(3000, 1e-3) == 3
    assert allowed_false_matches(100, 0.07) == 7
    assert allowed_false_matches(2999, 1e-3) == 2
    assert allowed_false_matches(7_255_541, 1e-5) == 72
    with pytest.raises(ValueError):
        allowed_false_matches(10, 0.0)


# --- FNMR, FMR, operating points ---------------------------------------------------------


def test_rates_use_pass_iff_score_at_least_threshold():
    scores = ScoreSet([0.3, 0.4, 0.5, 0.6], [0.1, 0.4, 0.45])
    assert scores.false_non_matches(0.4) == 1  # 0.4 passes
    assert scores.fnmr(0.4) == pytest.approx(0.25)
    assert scores.false_matches(0.4) == 2  # 0.4 and 0.45 pass
    assert scores.fmr(0.4) == pytest.approx(2 / 3)
    assert scores.fnmr(0.61) == 1.0 and scores.fmr(0.61) == 0.0


def test_generalised_fnmr_counts_failures_to_acquire_as_non_matches():
    scores = ScoreSet([0.3, 0.6, 0.7, 0.8], [0.1], genuine_unscored=1)
    assert scores.fnmr(0.5) == pytest.approx(1 / 4)
    assert scores.gfnmr(0.5) == pytest.approx(2 / 5)


def test_operating_point_at_target_and_at_a_given_threshold():
    impostor = np.linspace(0.0, 0.9, 3000)
    genuine = [0.99, 0.995, 0.5, 0.93]
    point = operating_point(ScoreSet(genuine, impostor), 1e-3)
    assert point.false_matches == 3 and point.fmr == pytest.approx(1e-3)
    assert point.false_non_matches == 1 and point.fnmr == pytest.approx(0.25)
    assert point.supported
    assert not operating_point(ScoreSet(genuine, impostor[:2999]), 1e-3).supported
    fixed = operating_point(ScoreSet(genuine, impostor), 1e-3, threshold=0.95)
    assert fixed.threshold == 0.95 and fixed.false_non_matches == 2


def test_error_curve_matches_direct_counts():
    rng = np.random.default_rng(1)
    scores = ScoreSet(rng.normal(1, 1, 300).round(1), rng.normal(-1, 1, 500).round(1))  # many ties
    curve = error_curve(scores)
    for t, fmr, fnmr in zip(curve.thresholds[::7], curve.fmr[::7], curve.fnmr[::7]):
        assert fmr == pytest.approx(np.mean(scores.impostor >= t))
        assert fnmr == pytest.approx(np.mean(scores.genuine < t))


def test_ceil_to_decimals_never_rounds_down():
    assert ceil_to_decimals(0.36841, 4) == 0.3685
    assert ceil_to_decimals(0.3685, 4) == 0.3685
    assert ceil_to_decimals(float(np.nextafter(0.3685, 1.0)), 4) == 0.3686
    for value in np.random.default_rng(3).uniform(-1, 1, 1000):
        rounded = ceil_to_decimals(float(value), 4)
        assert value <= rounded < value + 1e-4 + 1e-12


# --- accuracy with a cross-validated threshold ---------------------------------------------


def test_best_accuracy_threshold_is_the_midpoint_of_the_best_gap():
    choice = best_accuracy_threshold([0.6, 0.7, 0.8], [0.1, 0.2, 0.5])
    assert choice.threshold == pytest.approx(0.55) and choice.accuracy == 1.0


def test_best_accuracy_threshold_with_ties_and_overlap():
    # Scores tie across classes at 0.5: t <= 0.5 passes both (one error), t > 0.5 fails
    # both (one error); the lowest equally good threshold is kept.
    choice = best_accuracy_threshold([0.5, 0.9], [0.5, 0.1])
    assert choice.accuracy == pytest.approx(0.75)
    assert 0.1 < choice.threshold <= 0.5


def test_cross_validated_accuracy_holds_each_fold_out():
    # Folds 0 and 1 separate at 0.5; fold 2 has a genuine 0.45 that only its own data would admit.
    scores = np.array([0.9, 0.1, 0.8, 0.2, 0.45, 0.3])
    same = np.array([True, False, True, False, True, False])
    folds = np.array([0, 0, 1, 1, 2, 2])
    result = cross_validated_accuracy(scores, same, folds)
    assert result.fold_accuracies[2] == 0.5  # threshold from folds 0+1 is 0.5: 0.45 fails
    assert result.fold_accuracies[0] == 1.0 and result.fold_accuracies[1] == 1.0
    assert result.mean == pytest.approx(2.5 / 3)
    assert result.std == pytest.approx(np.std([1.0, 1.0, 0.5]))


def test_cross_validated_accuracy_treats_unscored_pairs_as_rejections():
    scores = np.array([0.9, 0.1, 0.9, 0.1, -np.inf, -np.inf])
    same = np.array([True, False, True, False, True, False])
    folds = np.array([0, 0, 1, 1, 2, 2])
    assert cross_validated_accuracy(scores, same, folds).fold_accuracies == (1.0, 1.0, 0.5)


# --- LFW pairs file -------------------------------------------------------------------------


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pairs.txt"
    path.write_text(text)
    return path


def test_parse_pairs_file(tmp_path):
    path = _write(
        tmp_path,
        "2\t2\n"
        "Ann_A\t1\t2\nBob_B\t1\t3\nAnn_A\t1\tCid_C\t1\nBob_B\t2\tCid_C\t4\n"
        "Cid_C\t2\t3\nAnn_A\t2\t3\nDee_D\t1\tAnn_A\t3\nBob_B\t1\tDee_D\t1\n",
    )
    pairs = parse_pairs_file(path)
    assert (pairs.folds, pairs.per_fold, len(pairs.pairs)) == (2, 2, 8)
    assert [p.same for p in pairs.pairs] == [True, True, False, False] * 2
    assert [p.fold for p in pairs.pairs] == [0] * 4 + [1] * 4
    first, mixed = pairs.pairs[0], pairs.pairs[3]
    assert first.left == LfwImage("Ann_A", 1) and first.right == LfwImage("Ann_A", 2)
    assert mixed.left == LfwImage("Bob_B", 2) and mixed.right == LfwImage("Cid_C", 4)
    assert mixed.right.relpath == "Cid_C/Cid_C_0004.jpg"
    assert len(pairs.images()) == len({i for p in pairs.pairs for i in (p.left, p.right)})


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("1 1\nAnn 1 2\n", "promises 2"),
        ("1 1\nAnn 1 Bob 2\nAnn 1 Bob 2\n", "3 fields"),
        ("1 1\nAnn 1 2\nAnn 1 2\n", "4 fields"),
        ("1 1\nAnn 1 2\nAnn 1 Ann 2\n", "twice"),
        ("1 1\nAnn 0 2\nAnn 1 Bob 2\n", "start at 1"),
        ("one two\n", "header"),
    ],
)
def test_parse_pairs_file_rejects_malformed_files(tmp_path, text, message):
    with pytest.raises(DatasetError, match=message):
        parse_pairs_file(_write(tmp_path, text))


# --- protocols: bookkeeping of failures to acquire ----------------------------------------


def _table(vectors: np.ndarray, acquired: list[bool]) -> FaceTable:
    n = len(acquired)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    unit[~np.asarray(acquired)] = 0.0
    nan = np.full(n, np.nan)
    return FaceTable(tuple(f"img{i}" for i in range(n)), np.asarray(acquired), np.zeros(n, bool),
                     unit.astype(np.float32), unit.astype(np.float32), nan, nan, nan)


def test_all_vs_all_counts_every_pair_once_and_unscored_pairs_separately():
    rng = np.random.default_rng(0)
    identities = ["a", "a", "a", "b", "b", "c"]
    table = _table(rng.normal(size=(6, 8)), [True, True, False, True, True, True])
    scores = all_vs_all(identities, table, flip=False)
    # Genuine: a has 3 pairs (2 involve the failed image), b has 1.
    # Impostor: 15 - 4 = 11 pairs, 3 of them (failed a vs b, b, c) unscored.
    assert (scores.n_genuine, scores.genuine_unscored) == (2, 2)
    assert (scores.n_impostor, scores.impostor_unscored) == (8, 3)
    vectors = table.embeddings.astype(np.float64)
    assert vectors[0] @ vectors[1] in scores.genuine


def test_nuaa_windows_and_reference_comparisons():
    def frame(subject: str, number: int) -> NuaaFrame:
        return NuaaFrame(Path(f"{subject}_{number}.jpg"), "live", subject, "00", "00", "01", number)

    lives = tuple(frame(s, n) for s in ("0001", "0002") for n in range(4))
    rng = np.random.default_rng(5)
    table = _table(rng.normal(size=(8, 8)), [True, True, True, False, True, True, True, True])
    windows = live_windows(lives, table, k=3, flip=False)
    assert windows.subjects.tolist() == ["0001", "0001", "0002", "0002"]
    # The second window of 0001 holds frames 1, 2, 3; frame 3 has no face, so it averages 1 and 2.
    expected = table.embeddings[1] + table.embeddings[2]
    assert np.allclose(windows.embeddings[1], expected / np.linalg.norm(expected), atol=1e-6)
    references = {
        "0001": ReferenceChoice("0001", 0, "r1", 1.0, 0.0, 1),
        "0002": ReferenceChoice("0002", -1, "", math.nan, math.nan, 0),  # no face in any print frame
    }
    scores = id_vs_live(references, table, windows, flip=False)
    assert (scores.n_genuine, scores.n_impostor) == (2, 2)
    assert (scores.genuine_unscored, scores.impostor_unscored) == (2, 2)


# --- calibration and the manifest edit ------------------------------------------------------


def test_choose_thresholds_takes_the_strictest_supported_set_and_stays_monotone():
    rng = np.random.default_rng(11)
    big = ScoreSet([0.9], rng.normal(0.0, 0.1, 400_000))
    small = ScoreSet([0.9], rng.normal(0.2, 0.1, 5_000))  # shifted up, supports 1e-3 only
    levels = {level.level: level for level in choose_thresholds({"big": big, "small": small})}
    assert levels["fmr_1e-3"].decided_by == "small"
    assert levels["fmr_1e-3"].exact == threshold_for_fmr(small.impostor, 1e-3)
    assert levels["fmr_1e-4"].decided_by.startswith("big") or levels["fmr_1e-4"].decided_by.startswith("small")
    values = [levels[k].threshold for k in ("fmr_1e-3", "fmr_1e-4", "fmr_1e-5")]
    assert values == sorted(values)
    for level in levels.values():
        assert level.threshold >= level.exact and round(level.threshold, 4) == level.threshold
    with pytest.raises(CalibrationError):
        choose_thresholds({"small": small})  # nothing supports 1e-4


MANIFEST = """schema = 1

[models.sface_fp32]
role = "recognizer"
file = "x.onnx"
contract.outputs = { fc1 = [1, 128] }

# The next model.
[models.other]
role = "detector"
file = "y.onnx"
"""


def test_manifest_thresholds_are_inserted_then_replaced_in_place(tmp_path):
    values = {"fmr_1e-3": 0.36851, "fmr_1e-4": 0.4235, "source": "benchmarks/results/verification.json"}
    text = render_thresholds_table(MANIFEST, "sface_fp32", values, comment="written by a test")
    parsed = tomllib.loads(text)
    assert parsed["models"]["sface_fp32"]["thresholds"] == {
        "fmr_1e-3": 0.3685, "fmr_1e-4": 0.4235, "source": "benchmarks/results/verification.json"
    }
    assert parsed["models"]["other"] == {"role": "detector", "file": "y.onnx"}
    assert text.index("[models.sface_fp32.thresholds]") < text.index("# The next model.")
    # A second write replaces the block instead of adding one; the rest is byte-identical.
    path = tmp_path / "manifest.toml"
    path.write_text(text)
    write_manifest_thresholds(path, "sface_fp32", {"fmr_1e-3": 0.5, "source": "s"})
    again = path.read_text()
    assert again.count("[models.sface_fp32.thresholds]") == 1
    assert tomllib.loads(again)["models"]["sface_fp32"]["thresholds"] == {"fmr_1e-3": 0.5, "source": "s"}
    before, after = text.split("[models.sface_fp32.thresholds]"), again.split("[models.sface_fp32.thresholds]")
    assert before[0] == after[0]
    assert before[1][before[1].index("\n\n"):] == after[1][after[1].index("\n\n"):]


def test_manifest_edit_refuses_a_missing_model():
    with pytest.raises(CalibrationError):
        render_thresholds_table(MANIFEST, "arcface", {"fmr_1e-3": 0.5})


def test_thresholds_per_number_of_references_never_fall_below_fewer_photos():
    # m=1 voted by a wide single-photo population; m=2's set sits lower (would be laxer) and
    # supports only 1e-3: m=2 keeps m=1's threshold wherever its own is lower or unsupported.
    from idv.evaluation.calibration import choose_thresholds_by_references

    rng = np.random.default_rng(15)
    single = ScoreSet([0.9], rng.normal(0.1, 0.1, 400_000))
    fused_low = ScoreSet([0.9], rng.normal(0.0, 0.1, 5_000))
    fused_high = ScoreSet([0.9], rng.normal(0.3, 0.1, 5_000))
    by_m = choose_thresholds_by_references({1: {"single": single}, 2: {"fused": fused_low},
                                            3: {"fused3": fused_high}})
    one, two, three = ({lv.level: lv for lv in by_m[m]} for m in (1, 2, 3))
    for level in one:
        assert one[level].threshold <= two[level].threshold <= three[level].threshold
        assert two[level].threshold == one[level].threshold and two[level].decided_by == "m=1's threshold"
    assert three["fmr_1e-3"].decided_by == "fused3" and three["fmr_1e-3"].threshold > one["fmr_1e-3"].threshold
    with pytest.raises(CalibrationError):
        choose_thresholds_by_references({1: {"fused": fused_low}})  # m=1 has no bound to fall back on
