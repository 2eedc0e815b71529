"""Comparisons as explicit pair lists (image rows, people, score), for sets where each pair must be
traceable: label-noise cleaning removes pairs, and the subject bootstrap resamples people."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from idv.evaluation.intervals import Rate, rate, subject_bootstrap
from idv.evaluation.metrics import ScoreSet


@dataclass(frozen=True, eq=False)
class PairList:
    left: np.ndarray  # row of the reference-side image (int64)
    right: np.ndarray  # row of the probe-side image
    left_person: np.ndarray  # person index (shared numbering across both sides)
    right_person: np.ndarray
    scores: np.ndarray  # cosine, float64
    same: np.ndarray  # bool: labelled the same person

    def __len__(self) -> int:
        return int(self.scores.size)

    def where(self, keep: np.ndarray) -> PairList:
        return PairList(self.left[keep], self.right[keep], self.left_person[keep], self.right_person[keep],
                        self.scores[keep], self.same[keep])

    @property
    def genuine(self) -> PairList:
        return self.where(self.same)

    @property
    def impostor(self) -> PairList:
        return self.where(~self.same)

    def score_set(self) -> ScoreSet:
        return ScoreSet(self.scores[self.same], self.scores[~self.same])


def within(rows: np.ndarray, vectors: np.ndarray, person: np.ndarray) -> PairList:
    """Every unordered pair of distinct images among `rows` (acquired rows only)."""
    rows = np.asarray(rows, dtype=np.int64)
    sub = vectors[rows].astype(np.float64)
    i, j = np.triu_indices(rows.size, k=1)
    scores = np.einsum("ij,ij->i", sub[i], sub[j]) if rows.size < 2 else (sub @ sub.T)[i, j]
    left, right = rows[i], rows[j]
    return PairList(left, right, person[left], person[right], scores, person[left] == person[right])


def across(reference_rows: np.ndarray, reference_vectors: np.ndarray, reference_person: np.ndarray,
           probe_rows: np.ndarray, probe_vectors: np.ndarray, probe_person: np.ndarray) -> PairList:
    """Every reference against every probe (two tables; person numbers must be shared)."""
    scores = reference_vectors[reference_rows].astype(np.float64) @ probe_vectors[probe_rows].astype(np.float64).T
    left = np.repeat(reference_rows, probe_rows.size)
    right = np.tile(probe_rows, reference_rows.size)
    lp, rp = reference_person[left], probe_person[right]
    return PairList(left, right, lp, rp, scores.ravel(), lp == rp)


def false_match_rates(impostors: PairList, thresholds: list[float], people: int,
                      bootstrap: bool = True) -> list[Rate]:
    """FMR at each threshold, with Clopper-Pearson and (optionally) subject-bootstrap intervals."""
    errors = impostors.scores[:, None] >= np.asarray(thresholds, dtype=np.float64)[None, :]
    points = [rate(int(errors[:, t].sum()), len(impostors)) for t in range(len(thresholds))]
    if not bootstrap:
        return points
    bounds = subject_bootstrap(impostors.left_person, impostors.right_person, errors, people)
    return [Rate(p.errors, p.trials, p.rate, p.low, p.high, low, high) for p, (low, high) in zip(points, bounds)]


def false_non_match_rate(genuine: PairList, threshold: float) -> Rate:
    return rate(int((genuine.scores < threshold).sum()), len(genuine))
