"""Verification metrics with the service's exact decision rule: PASS iff score >= threshold.

Every count here follows that rule, ties included:

* a false match is an impostor comparison with score >= threshold;
* a false non-match is a genuine comparison with score < threshold.

Scores are handled as float64. Thresholds derived from data are chosen *between*
observed scores (just above an impostor score, or at a midpoint), so a
comparison that ties with the score the threshold was derived from is on the
safe side of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# An FMR is "supported" by a score set when it holds at least this many impostor
# comparisons per 1/FMR: with fewer, the threshold rests on a handful of tail
# scores (at 3/FMR the threshold sits above the 3 highest impostor scores).
MIN_IMPOSTORS_PER_INVERSE_FMR = 3


def _as_scores(values: np.ndarray | list[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if np.isnan(array).any():
        raise ValueError("scores contain NaN")
    return array


class ScoreSet:
    """Genuine and impostor scores, kept sorted so every rate is two binary searches.

    `genuine_unscored` / `impostor_unscored` count comparisons that could not be
    scored because an image failed acquisition (no face found). They are never
    part of the score arrays; the service would answer FAIL for them, so they
    count as non-matches in the generalised rates (`gfnmr`).
    """

    def __init__(
        self,
        genuine: np.ndarray | list[float],
        impostor: np.ndarray | list[float],
        genuine_unscored: int = 0,
        impostor_unscored: int = 0,
    ):
        self.genuine = np.sort(_as_scores(genuine))
        self.impostor = np.sort(_as_scores(impostor))
        self.genuine_unscored = int(genuine_unscored)
        self.impostor_unscored = int(impostor_unscored)

    @property
    def n_genuine(self) -> int:
        return int(self.genuine.size)

    @property
    def n_impostor(self) -> int:
        return int(self.impostor.size)

    def false_matches(self, threshold: float) -> int:
        # Impostor scores >= threshold: everything from the first index not left of it.
        return self.n_impostor - int(np.searchsorted(self.impostor, threshold, side="left"))

    def false_non_matches(self, threshold: float) -> int:
        # Genuine scores < threshold.
        return int(np.searchsorted(self.genuine, threshold, side="left"))

    def fmr(self, threshold: float) -> float:
        return self.false_matches(threshold) / self.n_impostor

    def fnmr(self, threshold: float) -> float:
        """Among scored genuine comparisons only."""
        return self.false_non_matches(threshold) / self.n_genuine

    def gfnmr(self, threshold: float) -> float:
        """Generalised FNMR: unscored genuine comparisons (failure to acquire) count as non-matches."""
        total = self.n_genuine + self.genuine_unscored
        return (self.false_non_matches(threshold) + self.genuine_unscored) / total

    def supports(self, target_fmr: float) -> bool:
        return self.n_impostor >= MIN_IMPOSTORS_PER_INVERSE_FMR / target_fmr


def allowed_false_matches(n_impostor: int, target_fmr: float) -> int:
    """The most false matches that keep FMR <= target on n_impostor comparisons."""
    if not (0.0 < target_fmr <= 1.0):
        raise ValueError(f"target FMR must be in (0, 1], not {target_fmr}")
    # The relative nudge absorbs binary rounding in either direction (0.07 * 100 is
    # 7.000000000000001, other products land just below an integer): it is a count.
    return math.floor(target_fmr * n_impostor * (1 + 1e-12))


def threshold_for_fmr(impostor_sorted: np.ndarray, target_fmr: float) -> float:
    """The lowest threshold whose FMR (share of impostor scores >= it) is <= target_fmr.

    With m = floor(target * n) false matches allowed and impostor scores sorted
    descending s[0] >= s[1] >= ..., any threshold t > s[m] lets through at most
    the m scores above s[m]; no threshold <= s[m] can do so, because s[0..m]
    (m + 1 scores) would all pass. So the answer is the next float above s[m].
    Ties at s[m] are excluded together, so the achieved FMR may be below target.
    """
    scores = np.asarray(impostor_sorted, dtype=np.float64)
    n = scores.size
    if n == 0:
        raise ValueError("no impostor scores")
    allowed = allowed_false_matches(n, target_fmr)
    if allowed >= n:
        return float(scores[0])  # every impostor may pass: accept everything observed
    pivot = scores[n - 1 - allowed]  # the (allowed+1)-th highest score
    return float(np.nextafter(pivot, np.inf))


def ceil_to_decimals(value: float, decimals: int) -> float:
    """Round up on a 10**-decimals grid, so a rounded threshold is never laxer than the exact one."""
    scale = 10**decimals
    scaled = value * scale
    nearest = round(scaled)
    # A value already on the grid can scale to a hair above the integer (k + 5e-13): keep k.
    steps = nearest if abs(scaled - nearest) <= 1e-9 * max(1.0, abs(scaled)) else math.ceil(scaled)
    rounded = round(steps / scale, decimals)
    # ...but never return less than value.
    while rounded < value:
        rounded = round(rounded + 1 / scale, decimals)
    return rounded


@dataclass(frozen=True)
class OperatingPoint:
    target_fmr: float
    threshold: float
    fmr: float  # achieved: false_matches / n_impostor
    false_matches: int
    fnmr: float  # scored genuine comparisons only
    false_non_matches: int
    gfnmr: float  # failures to acquire counted as non-matches
    n_genuine: int
    n_impostor: int
    supported: bool  # n_impostor >= MIN_IMPOSTORS_PER_INVERSE_FMR / target_fmr


def operating_point(scores: ScoreSet, target_fmr: float, threshold: float | None = None) -> OperatingPoint:
    """Rates at `threshold`, or at the threshold for `target_fmr` derived from these impostors."""
    chosen = threshold_for_fmr(scores.impostor, target_fmr) if threshold is None else float(threshold)
    return OperatingPoint(
        target_fmr=target_fmr,
        threshold=chosen,
        fmr=scores.fmr(chosen),
        false_matches=scores.false_matches(chosen),
        fnmr=scores.fnmr(chosen),
        false_non_matches=scores.false_non_matches(chosen),
        gfnmr=scores.gfnmr(chosen),
        n_genuine=scores.n_genuine,
        n_impostor=scores.n_impostor,
        supported=scores.supports(target_fmr),
    )


@dataclass(frozen=True, eq=False)
class ErrorCurve:
    """FMR and FNMR at each threshold (ascending). ROC plots 1 - fnmr against fmr; DET plots fnmr against fmr."""

    thresholds: np.ndarray
    fmr: np.ndarray
    fnmr: np.ndarray


def error_curve(scores: ScoreSet, thresholds: np.ndarray | None = None) -> ErrorCurve:
    """Exact rates at the given thresholds, or at every distinct observed score."""
    if thresholds is None:
        thresholds = np.unique(np.concatenate([scores.genuine, scores.impostor]))
    thresholds = np.sort(np.asarray(thresholds, dtype=np.float64))
    false_matches = scores.n_impostor - np.searchsorted(scores.impostor, thresholds, side="left")
    false_non_matches = np.searchsorted(scores.genuine, thresholds, side="left")
    return ErrorCurve(thresholds, false_matches / scores.n_impostor, false_non_matches / scores.n_genuine)


def plot_thresholds(scores: ScoreSet, points: int = 400) -> np.ndarray:
    """A few hundred thresholds that trace a curve evenly on a log-FMR axis and a linear FNMR axis.

    Impostor quantiles spaced log-uniformly in FMR down to 1/n_impostor, plus
    genuine quantiles spaced uniformly in FNMR: enough for a plot, far cheaper
    than millions of distinct scores.
    """
    n_imp, n_gen = scores.n_impostor, scores.n_genuine
    fmr_grid = np.logspace(math.log10(1.0 / n_imp), 0.0, points)
    imp_idx = np.clip(np.round(n_imp * (1.0 - fmr_grid)).astype(np.int64), 0, n_imp - 1)
    gen_idx = np.clip(np.round(np.linspace(0, n_gen - 1, points)).astype(np.int64), 0, n_gen - 1)
    candidates = np.concatenate([scores.impostor[imp_idx], scores.genuine[gen_idx]])
    # nextafter: a threshold just above each chosen score, as threshold_for_fmr picks them.
    return np.unique(np.nextafter(candidates, np.inf))


def equal_error_rate(scores: ScoreSet) -> tuple[float, float]:
    """(EER, threshold): the distinct-score threshold where FMR and FNMR are closest; EER is their mean there."""
    curve = error_curve(scores)
    best = int(np.argmin(np.abs(curve.fmr - curve.fnmr)))
    return float((curve.fmr[best] + curve.fnmr[best]) / 2), float(curve.thresholds[best])


@dataclass(frozen=True)
class AccuracyThreshold:
    threshold: float
    accuracy: float


def best_accuracy_threshold(genuine: np.ndarray, impostor: np.ndarray) -> AccuracyThreshold:
    """The threshold that maximises (genuine >= t) + (impostor < t) over both sets.

    Accuracy is constant for t in each interval (u[i-1], u[i]] between adjacent
    distinct scores u; the threshold returned is that interval's midpoint (the
    first interval wins a tie), or u[0] for the interval below every score, or
    the float just above u[-1] for "reject everything".
    """
    gen = np.sort(_as_scores(genuine))
    imp = np.sort(_as_scores(impostor))
    distinct = np.unique(np.concatenate([gen, imp]))
    if distinct.size == 0:
        raise ValueError("no scores")
    upper = np.append(distinct, np.nextafter(distinct[-1], np.inf))
    correct = (gen.size - np.searchsorted(gen, upper, side="left")) + np.searchsorted(imp, upper, side="left")
    best = int(np.argmax(correct))  # first maximum: the lowest of equally good thresholds
    if best == 0 or best == upper.size - 1:
        threshold = float(upper[best])
    else:
        midpoint = (upper[best - 1] + upper[best]) / 2
        # Adjacent floats have no midpoint strictly inside (u[i-1], u[i]]: use u[i].
        threshold = float(midpoint if midpoint > upper[best - 1] else upper[best])
    return AccuracyThreshold(threshold=threshold, accuracy=float(correct[best]) / (gen.size + imp.size))


@dataclass(frozen=True)
class CrossValidatedAccuracy:
    fold_accuracies: tuple[float, ...]
    fold_thresholds: tuple[float, ...]
    mean: float
    std: float  # population standard deviation over folds (ddof=0), as LFW results are usually quoted


def cross_validated_accuracy(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> CrossValidatedAccuracy:
    """Per held-out fold: choose the best-accuracy threshold on the other folds, apply it to this one.

    A score of -inf marks a comparison that could not be made (failure to acquire):
    it is a rejection, i.e. an error on a genuine pair and a correct answer on an impostor pair.
    """
    scores = np.asarray(scores, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    folds = np.asarray(folds)
    accuracies, thresholds = [], []
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        finite = train & np.isfinite(scores)
        choice = best_accuracy_threshold(scores[finite & same], scores[finite & ~same])
        decision = scores[test] >= choice.threshold
        accuracies.append(float(np.mean(decision == same[test])))
        thresholds.append(choice.threshold)
    return CrossValidatedAccuracy(
        fold_accuracies=tuple(accuracies),
        fold_thresholds=tuple(thresholds),
        mean=float(np.mean(accuracies)),
        std=float(np.std(accuracies)),
    )
