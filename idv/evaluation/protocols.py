"""Evaluation protocols: which comparisons are made and how their scores are built.

Scores are cosine similarities of L2-normalised embeddings, as the service
computes them. A comparison involving an image where no face was found is not
scored; it is counted (`*_unscored`) and treated as the service would treat it,
as a FAIL.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from idv.evaluation.datasets import LfwImage, LfwPairs, NuaaFrame, group_sequences
from idv.evaluation.embedding import FaceTable
from idv.evaluation.metrics import ScoreSet
from idv.face.embedder import l2_normalise


@dataclass(frozen=True, eq=False)
class PairScores:
    """One score per listed pair, -inf where an image of the pair failed acquisition."""

    scores: np.ndarray
    same: np.ndarray
    folds: np.ndarray

    @property
    def unscored(self) -> int:
        return int(np.isinf(self.scores).sum())

    def score_set(self) -> ScoreSet:
        finite = np.isfinite(self.scores)
        return ScoreSet(
            self.scores[finite & self.same],
            self.scores[finite & ~self.same],
            genuine_unscored=int((~finite & self.same).sum()),
            impostor_unscored=int((~finite & ~self.same).sum()),
        )


def lfw_pair_scores(pairs: LfwPairs, images: tuple[LfwImage, ...], table: FaceTable, flip: bool) -> PairScores:
    """Scores of the listed pairs; `images[i]` is the image in row i of `table`."""
    row = {image: i for i, image in enumerate(images)}
    vectors = table.fused(flip)
    left = np.array([row[p.left] for p in pairs.pairs])
    right = np.array([row[p.right] for p in pairs.pairs])
    scores = np.einsum("ij,ij->i", vectors[left].astype(np.float64), vectors[right].astype(np.float64))
    scores[~(table.acquired[left] & table.acquired[right])] = -np.inf
    return PairScores(
        scores=scores,
        same=np.array([p.same for p in pairs.pairs]),
        folds=np.array([p.fold for p in pairs.pairs]),
    )


def all_vs_all(identities: list[str] | tuple[str, ...], table: FaceTable, flip: bool) -> ScoreSet:
    """Every unordered pair of distinct images: genuine when both show the same person.

    One matrix product on the acquired rows gives all scores (about 7 million
    impostor pairs for the 3,811 LFW images, in a second or two); pairs with a
    failed image are counted as unscored.
    """
    labels = np.unique(np.asarray(identities), return_inverse=True)[1]
    acquired = table.acquired
    vectors = table.fused(flip)[acquired].astype(np.float64)
    kept_labels = labels[acquired]
    similarity = vectors @ vectors.T
    genuine, impostor = [], []
    for i in range(len(kept_labels) - 1):
        row, same = similarity[i, i + 1 :], kept_labels[i + 1 :] == kept_labels[i]
        genuine.append(row[same])
        impostor.append(row[~same])
    counts = np.bincount(labels)
    kept_counts = np.bincount(kept_labels, minlength=counts.size)
    all_genuine = int((counts * (counts - 1) // 2).sum())
    all_pairs = len(labels) * (len(labels) - 1) // 2
    scored_genuine = int((kept_counts * (kept_counts - 1) // 2).sum())
    scored_pairs = len(kept_labels) * (len(kept_labels) - 1) // 2
    return ScoreSet(
        np.concatenate(genuine) if genuine else np.empty(0),
        np.concatenate(impostor) if impostor else np.empty(0),
        genuine_unscored=all_genuine - scored_genuine,
        impostor_unscored=(all_pairs - all_genuine) - (scored_pairs - scored_genuine),
    )


# --- NUAA: ID-style print as the enrolled reference, live frames as probes -------------

REFERENCE_SESSION = "01"
FRONTAL_YAW_LIMIT = 0.10  # |yaw proxy| above this is not frontal (about 0.3 at a clear head turn)


@dataclass(frozen=True)
class ReferenceChoice:
    subject: str
    index: int  # row in the print table; -1 when no print frame of the subject yielded a face
    path: str
    sharpness: float
    yaw: float
    frontal_candidates: int


def select_references(frames: tuple[NuaaFrame, ...], table: FaceTable) -> dict[str, ReferenceChoice]:
    """Per subject, the enrolled reference: among its session-01 print frames with a face
    found, those with |yaw| <= FRONTAL_YAW_LIMIT (all of them if none is that frontal),
    the one whose aligned crop is sharpest (ties: lowest frame number).

    Session 01 is the still, frontal print recording; the print frames are used
    only here, never as probes.
    """
    choices: dict[str, ReferenceChoice] = {}
    for subject in sorted({f.subject for f in frames}):
        candidates = [
            i
            for i, f in enumerate(frames)
            if f.subject == subject and f.session == REFERENCE_SESSION and table.acquired[i]
        ]
        frontal = [i for i in candidates if abs(table.yaw[i]) <= FRONTAL_YAW_LIMIT]
        pool = frontal or candidates
        if not pool:
            choices[subject] = ReferenceChoice(subject, -1, "", float("nan"), float("nan"), 0)
            continue
        best = min(pool, key=lambda i: (-table.sharpness[i], frames[i].frame))
        choices[subject] = ReferenceChoice(
            subject, best, frames[best].path.name, float(table.sharpness[best]), float(table.yaw[best]), len(frontal)
        )
    return choices


@dataclass(frozen=True, eq=False)
class ProbeWindows:
    """Live probes: windows of k consecutive frames of one sequence (stride 1), embeddings averaged."""

    subjects: np.ndarray  # per window
    embeddings: np.ndarray  # (W, D) unit rows; zero rows where no frame of the window had a face
    acquired: np.ndarray  # bool per window
    frames_per_window: int


def live_windows(frames: tuple[NuaaFrame, ...], table: FaceTable, k: int, flip: bool) -> ProbeWindows:
    """All windows of k consecutive frames in each sequence, as the service fuses a burst:
    the mean of the frame embeddings, renormalised. Frames without a face are left
    out of a window's mean; a window with none is a failure to acquire.

    Overlapping windows (stride 1) keep the probe count near the frame count, so the
    impostor count and with it the lowest supported FMR stay the same for every k;
    neighbouring windows are of course strongly correlated.
    """
    if k < 1:
        raise ValueError("a window holds at least one frame")
    vectors = table.fused(flip)
    subjects, embeddings, acquired = [], [], []
    for members in group_sequences(frames).values():
        for start in range(max(1, len(members) - k + 1)):
            window = np.array(members[start : start + k])
            found = window[table.acquired[window]]
            subjects.append(frames[members[0]].subject)
            acquired.append(found.size > 0)
            embeddings.append(vectors[found].mean(axis=0) if found.size else np.zeros(vectors.shape[1], np.float32))
    stacked = l2_normalise(np.asarray(embeddings, dtype=np.float64))
    return ProbeWindows(np.asarray(subjects), stacked, np.asarray(acquired), k)


def id_vs_live(
    references: dict[str, ReferenceChoice], reference_table: FaceTable, probes: ProbeWindows, flip: bool
) -> ScoreSet:
    """Every probe window against every subject's reference: genuine when the subjects match."""
    genuine, impostor = [], []
    genuine_unscored = impostor_unscored = 0
    reference_vectors = reference_table.fused(flip).astype(np.float64)
    for subject, choice in references.items():
        same = probes.subjects == subject
        if choice.index < 0:
            genuine_unscored += int(same.sum())
            impostor_unscored += int((~same).sum())
            continue
        scores = probes.embeddings @ reference_vectors[choice.index]
        genuine.append(scores[same & probes.acquired])
        impostor.append(scores[~same & probes.acquired])
        genuine_unscored += int((same & ~probes.acquired).sum())
        impostor_unscored += int((~same & ~probes.acquired).sum())
    return ScoreSet(
        np.concatenate(genuine) if genuine else np.empty(0),
        np.concatenate(impostor) if impostor else np.empty(0),
        genuine_unscored=genuine_unscored,
        impostor_unscored=impostor_unscored,
    )


def live_vs_live_impostors(probes: ProbeWindows) -> np.ndarray:
    """Scores of every pair of single-frame live probes of different subjects.

    A diagnostic only: nine subjects give 36 subject pairs, so its extreme tail
    describes those few people rather than a population.
    """
    kept = probes.embeddings[probes.acquired]
    subjects = probes.subjects[probes.acquired]
    similarity = kept @ kept.T
    rows = [similarity[i, i + 1 :][subjects[i + 1 :] != subjects[i]] for i in range(len(kept) - 1)]
    return np.concatenate(rows) if rows else np.empty(0)
