"""Pieces of the East-Asian calibration (issue 15): intervals, image hashing, label-noise cleaning,
pair lists, the identity split. Real images from the shared test data where images are involved."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from idv.evaluation.demographics_run import CALIBRATION, REPORT, split_of
from idv.evaluation.eastasian import aaf_images, celeb_images
from idv.evaluation.image_hashing import hamming_matrix, near_duplicate_mask, phash
from idv.evaluation.intervals import clopper_pearson, rate, subject_bootstrap
from idv.evaluation.label_noise import SameImageEvidence, clean, dlib_confirm_distance
from idv.evaluation.pairs import PairList, false_match_rates, within


def test_clopper_pearson_matches_known_values() -> None:
    # Zero errors in n trials: the upper bound is 1 - 0.025**(1/n) (about 3.7/n for large n).
    low, high = clopper_pearson(0, 30000)
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / 30000), rel=1e-6)
    low, high = clopper_pearson(5, 100)
    assert low == pytest.approx(0.01643, abs=1e-4) and high == pytest.approx(0.11284, abs=1e-4)
    assert rate(3, 10).rate == 0.3
    with pytest.raises(ValueError):
        clopper_pearson(0, 0)


def test_subject_bootstrap_is_wider_when_errors_come_from_one_person() -> None:
    rng = np.random.default_rng(0)
    people = 200
    left, right = np.triu_indices(people, k=1)
    spread = rng.random(left.size) < 0.01
    clustered = (left == 7) & (rng.random(left.size) < 0.01 * people / 2)  # about as many errors, one person
    (s_low, s_high), = subject_bootstrap(left, right, spread, people, draws=200)
    (c_low, c_high), = subject_bootstrap(left, right, clustered, people, draws=200)
    assert s_low < spread.mean() < s_high
    assert (c_high - c_low) > 2 * (s_high - s_low)


def test_phash_finds_the_same_photo_resized_and_recompressed_but_not_other_people(testdata, tmp_path) -> None:
    photos = [image.path for image in aaf_images(testdata / "eastasian" / "aaf")[:20]]
    copy = tmp_path / "copy.jpg"
    image = cv2.imread(str(photos[0]))
    cv2.imwrite(str(copy), cv2.resize(image, None, fx=0.7, fy=0.7), [cv2.IMWRITE_JPEG_QUALITY, 60])
    assert bin(phash(photos[0]) ^ phash(copy)).count("1") <= 8
    near = near_duplicate_mask(photos + [copy])
    assert near[0, -1] and near[-1, 0]
    assert not near[1:-1, 1:-1].any()  # 19 different people: no near-duplicates among them
    hashes = np.array([0, 0xFF, 2**64 - 1], dtype=np.uint64)
    assert hamming_matrix(hashes).tolist() == [[0, 8, 64], [8, 0, 56], [64, 56, 0]]


def test_cleaning_removes_same_photo_and_confirmed_impostor_pairs_only() -> None:
    vectors = np.eye(4)
    person = np.array([0, 1, 2, 2])
    pairs = within(np.arange(4), vectors, person)
    near = np.zeros((4, 4), dtype=bool)
    near[0, 1] = near[1, 0] = True  # images 0 and 1: the same photo filed under two people
    near[2, 3] = near[3, 2] = True  # a genuine pair that is one photo twice
    distance = np.full((4, 4), 1.0)
    distance[0, 2] = distance[2, 0] = 0.2  # dlib: one person
    result = clean(pairs, SameImageEvidence(near, np.ones(4, dtype=bool), distance, 0.3))
    kept = {(int(a), int(b)) for a, b, k in zip(pairs.left, pairs.right, result.kept) if k}
    assert kept == {(0, 3), (1, 2), (1, 3)}
    assert (result.removed_duplicate, result.removed_dlib, result.genuine_duplicate) == (1, 1, 1)
    # dlib's confirm distance: the impostor distance at FMR 1e-4 (smaller = more alike): 20 of 200,002 pass.
    distances = np.concatenate([np.linspace(0.3, 1.2, 199982), np.full(20, 0.1)])
    same = np.zeros(distances.size, dtype=bool)
    assert 0.2 < dlib_confirm_distance(distances, same) <= 0.3


def test_false_match_rates_count_ties_as_matches_and_carry_both_intervals() -> None:
    pairs = PairList(np.arange(4), np.arange(4) + 4, np.arange(4), np.arange(4) + 4,
                     np.array([0.1, 0.5, 0.5, 0.9]), np.zeros(4, dtype=bool))
    at_half, at_one = false_match_rates(pairs, [0.5, 1.0], people=8)
    assert (at_half.errors, at_half.trials, at_one.errors) == (3, 4, 0)
    assert at_half.bootstrap_low is not None and at_half.low <= at_half.rate <= at_half.high


def test_identity_split_is_stable_and_about_half(testdata) -> None:
    labels = [image.identity for image in celeb_images(testdata / "eastasian" / "celeb")]
    halves = [split_of(label) for label in sorted(set(labels))]
    assert set(halves) == {CALIBRATION, REPORT}
    assert 0.4 < halves.count(CALIBRATION) / len(halves) < 0.6
    assert split_of("aaf:01070") == split_of("aaf:01070")
