"""Several reference photos are compared as one fused template (issue 15)."""

from __future__ import annotations

import numpy as np
import pytest

from idv.face.reference_fusion import fuse_references
from idv.pipeline import Budget
from idv.service import EnrollCommand, VerifyCommand
from idv.verdicts import Purpose, TrueReason
from tests.conftest import ID_SUBJECT_1, nuaa_frames, nuaa_sequences


def test_one_template_is_compared_as_is_and_several_as_their_renormalised_mean() -> None:
    one = np.array([[0.6, 0.8]], dtype=np.float32)
    assert fuse_references(one) is one
    two = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    fused = fuse_references(two)
    assert fused.shape == (1, 2) and np.allclose(fused, [[2**-0.5, 2**-0.5]])
    assert np.isclose(np.linalg.norm(fused), 1.0)
    with pytest.raises(ValueError):
        fuse_references(np.zeros((0, 128), dtype=np.float32))


def test_a_score_against_m_references_is_one_comparison_not_the_best_of_m() -> None:
    # An impostor probe close to one of three unrelated references: max-over-m would pass it at
    # 0.99; the fused template gives it one chance, scored against the mean (about 0.7).
    rng = np.random.default_rng(15)
    references = rng.standard_normal((3, 128)).astype(np.float32)
    references /= np.linalg.norm(references, axis=1, keepdims=True)
    probe = references[0] * 0.9 + 0.1 * references[1]
    probe /= np.linalg.norm(probe)
    best_of_m = float(np.max(references @ probe))
    fused = float((fuse_references(references) @ probe)[0])
    assert best_of_m > 0.9 and fused < best_of_m - 0.2


def test_genuine_subject_passes_with_three_enrolled_photos(node_settings, assemble, testdata) -> None:
    service = assemble(node_settings).service
    prints = nuaa_frames(testdata, "print", "0001")
    references = tuple(p.read_bytes() for p in (prints[0], prints[len(prints) // 2], prints[-1]))
    service.enroll(EnrollCommand(ID_SUBJECT_1, "张三", references), Budget(30))
    sequence = next(iter(nuaa_sequences(testdata, "live", "0001").values()))
    burst = tuple(p.read_bytes() for p in sequence[:15:3])
    outcome = service.verify(VerifyCommand(ID_SUBJECT_1, "张三", Purpose.CHECK_IN, burst), Budget(30))
    assert outcome.true_reason is TrueReason.VERIFIED
