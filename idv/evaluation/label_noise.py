"""Label noise in impostor sets, found and confirmed without the recognizer being calibrated.

A pair of images filed under different people is *the same person* (and leaves the
impostor set) when either

1. the images are the same photo: identical bytes, or perceptual hashes within
   `image_hashing.NEAR_DUPLICATE_BITS` of 64 bits; or
2. a second, independent recognizer (dlib ResNet, `second_recognizer`) puts them
   closer than its own strict same-person distance: the distance at which dlib's
   false-match rate is 1e-4 on East-Asian impostor pairs whose labels cannot be wrong
   (portraits of people of different nationality). Set on LFW instead, dlib's
   distance would be far too loose for East-Asian faces (it removed ~5% of pairs).

Neither test reads an SFace score, so the cleaning does not select on the score
whose tail sets the threshold; a true impostor pair is wrongly removed only when
dlib itself false-matches it: about 1e-4 of East-Asian impostor pairs overall, and what
matters, in the SFace tail that sets thresholds, it is *measured* on the clean pairs
(`tail_check` in demographics.json: clean impostor pairs at or above the old fmr_1e-3
threshold that dlib would have removed: 7 of 649, about 1% of the tail, when this was
written; none of the 212 scoring >= 0.40). The removed
count is reported, and every FMR is published raw and cleaned.
Genuine pairs that are the same photo twice are also dropped from FNMR (cleaned).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from idv.evaluation.metrics import threshold_for_fmr
from idv.evaluation.pairs import PairList

DLIB_CONFIRM_FMR = 1e-4


@dataclass(frozen=True)
class SameImageEvidence:
    near_duplicate: np.ndarray  # (N, N) bool over the table's rows
    dlib_found: np.ndarray  # (N,) bool
    dlib_distance: np.ndarray  # (N, N) float; inf where dlib found no face
    dlib_same_below: float  # distance under which dlib confirms one person


def dlib_confirm_distance(distances: np.ndarray, same: np.ndarray) -> float:
    """dlib's distance at FMR DLIB_CONFIRM_FMR on clean impostor pairs (smaller distance = more alike)."""
    impostor = np.sort(-distances[~same])  # as similarities
    return float(-threshold_for_fmr(impostor, DLIB_CONFIRM_FMR))


@dataclass(frozen=True)
class Cleaning:
    kept: np.ndarray  # bool per pair
    removed_duplicate: int  # impostor pairs that are the same photo
    removed_dlib: int  # impostor pairs dlib confirms as one person (and not the same photo)
    genuine_duplicate: int  # genuine pairs that are the same photo twice


def clean(pairs: PairList, evidence: SameImageEvidence) -> Cleaning:
    duplicate = evidence.near_duplicate[pairs.left, pairs.right]
    dlib_same = evidence.dlib_distance[pairs.left, pairs.right] < evidence.dlib_same_below
    impostor = ~pairs.same
    drop_impostor = impostor & (duplicate | dlib_same)
    drop_genuine = pairs.same & duplicate
    return Cleaning(
        kept=~(drop_impostor | drop_genuine),
        removed_duplicate=int((impostor & duplicate).sum()),
        removed_dlib=int((impostor & dlib_same & ~duplicate).sum()),
        genuine_duplicate=int(drop_genuine.sum()),
    )
