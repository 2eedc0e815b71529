"""Confidence intervals for error rates.

* `clopper_pearson`: exact binomial interval for k errors in n independent trials.
  Right for FNMR over genuine pairs that share no image, and a lower bound on the
  width otherwise.
* `subject_bootstrap`: impostor pairs that share a person are not independent (one
  look-alike gives many false matches), so an FMR's interval resamples people, not
  pairs: draw people with replacement, keep the pairs whose two people were both
  drawn (a pair counted once per draw of each side), recompute the rate. Percentile
  interval over the draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import beta

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Rate:
    errors: int
    trials: int
    rate: float
    low: float  # Clopper-Pearson, 95%
    high: float
    bootstrap_low: float | None = None  # subject bootstrap, 95% (FMR only)
    bootstrap_high: float | None = None


def clopper_pearson(errors: int, trials: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    if trials <= 0:
        raise ValueError("an interval needs at least one trial")
    alpha = 1 - confidence
    low = 0.0 if errors == 0 else float(beta.ppf(alpha / 2, errors, trials - errors + 1))
    high = 1.0 if errors == trials else float(beta.ppf(1 - alpha / 2, errors + 1, trials - errors))
    return low, high


def rate(errors: int, trials: int) -> Rate:
    low, high = clopper_pearson(errors, trials)
    return Rate(int(errors), int(trials), errors / trials, low, high)


def subject_bootstrap(
    left: np.ndarray, right: np.ndarray, errors: np.ndarray, subjects: int, draws: int = 200, seed: int = 15
) -> list[tuple[float, float]]:
    """95% percentile interval of the error rate over pairs (left[i], right[i]) when people are
    resampled. `left`/`right` are person indices in [0, subjects); `errors` is bool per pair.

    A pair's weight in one draw is (times its left person was drawn) x (times its right
    person was drawn), so a rate is two weighted sums; people sides may come from
    different populations (e.g. ID photos vs live probes), indices then share one range.
    `errors` may be (pairs,) or (pairs, T) for T thresholds at once: one interval each.
    """
    rng = np.random.default_rng(seed)
    matrix = np.asarray(errors, dtype=np.float32).reshape(len(left), -1)
    rates = np.empty((draws, matrix.shape[1]))
    for d in range(draws):
        counts = np.bincount(rng.integers(0, subjects, subjects), minlength=subjects).astype(np.float32)
        weight = counts[left] * counts[right]
        total = float(weight.sum(dtype=np.float64))
        rates[d] = (weight @ matrix) / total if total > 0 else 0.0
    bounds = np.quantile(rates, [(1 - CONFIDENCE) / 2, 1 - (1 - CONFIDENCE) / 2], axis=0)
    return [(float(bounds[0, t]), float(bounds[1, t])) for t in range(matrix.shape[1])]
