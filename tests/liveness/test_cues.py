"""The cues and the decision rule on synthetic input (no models, fast)."""

from __future__ import annotations

import numpy as np
import pytest

from liveness import CueVerdicts, LivenessConfig, LivenessEvidence, MotionEvidence, PlanarityEvidence, judge
from liveness.decision import decide
from liveness.identity import min_pairwise_cosine
from liveness.motion import measure_motion

BOX = (100.0, 80.0, 120.0, 150.0)
LANDMARKS = np.array([[140, 130], [180, 130], [160, 160], [145, 190], [175, 190]], dtype=np.float64)


def _textured(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(60, 190, (30, 40, 3), dtype=np.uint8)  # no clipping of added noise
    import cv2

    return cv2.resize(base, (640, 480), interpolation=cv2.INTER_CUBIC)


def test_identical_frames_show_no_motion() -> None:
    frame = _textured()
    evidence = measure_motion([frame] * 4, [BOX] * 4, [LANDMARKS] * 4)
    assert evidence == MotionEvidence(0.0, 0.0, 0.0)


def test_added_noise_is_incoherent_and_a_shift_is_coherent() -> None:
    frame = _textured()
    rng = np.random.default_rng(1)
    noisy = [np.clip(frame + rng.normal(0, 6, frame.shape), 0, 255).astype(np.uint8) for _ in range(4)]
    noise = measure_motion([frame, *noisy], [BOX] * 5, [LANDMARKS] * 5)
    shifted = [np.roll(frame, k, axis=1) for k in (0, 2, 4, 6, 8)]
    shift = measure_motion(shifted, [BOX] * 5, [LANDMARKS] * 5)
    assert noise.coherence < 0.06 < shift.coherence
    assert shift.coarse_change > noise.coarse_change


def test_min_pairwise_cosine() -> None:
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    assert min_pairwise_cosine([a]) == 1.0
    assert min_pairwise_cosine([a, a, b]) == pytest.approx(0.0)


def _evidence(**overrides) -> LivenessEvidence:  # noqa: ANN003
    values = dict(
        frames=5,
        passive_v2=(0.9,) * 5,
        passive_v1se=(0.9,) * 5,
        passive_score=0.9,
        motion=MotionEvidence(coarse_change=5.0, coherence=0.5, landmark=0.2),
        identity_min_cosine=0.8,
        planarity=PlanarityEvidence(movement=0.3, residual=0.05, tracks=50),
    )
    values.update(overrides)
    return LivenessEvidence(**values)


def test_a_live_looking_burst_passes_and_every_cue_can_veto() -> None:
    config = LivenessConfig()
    assert decide(judge(_evidence(), config))
    vetoes = {
        "passive": _evidence(passive_score=0.0),
        "motion": _evidence(motion=MotionEvidence(0.0, 0.0, 0.0)),
        "identity": _evidence(identity_min_cosine=0.0),
        "planarity": _evidence(planarity=PlanarityEvidence(movement=0.5, residual=0.0, tracks=50)),
    }
    for cue, evidence in vetoes.items():
        verdicts = judge(evidence, config)
        assert getattr(verdicts, cue) is False and not decide(verdicts), cue


def test_planarity_is_not_judged_without_movement() -> None:
    still = _evidence(planarity=PlanarityEvidence(movement=0.0, residual=0.0, tracks=50))
    assert judge(still, LivenessConfig()).planarity is None
    untracked = _evidence(planarity=PlanarityEvidence(movement=0.0, residual=0.0, tracks=0))
    assert judge(untracked, LivenessConfig()).planarity is None


def test_disabled_cues_are_not_judged() -> None:
    config = LivenessConfig(
        passive_enabled=False, motion_enabled=False, identity_enabled=False, planarity_enabled=False
    )
    assert judge(_evidence(passive_score=0.0), config) == CueVerdicts(True, None, None, None, None)


def test_burst_length_policy() -> None:
    assert not judge(_evidence(frames=1), LivenessConfig()).burst_length_ok
    assert judge(_evidence(frames=1), LivenessConfig(allow_single_frame=True)).burst_length_ok
    assert not judge(_evidence(frames=1), LivenessConfig(allow_single_frame=True, passive_enabled=False)).burst_length_ok
    assert not judge(_evidence(frames=9), LivenessConfig()).burst_length_ok


def test_config_rejects_out_of_range_thresholds() -> None:
    with pytest.raises(ValueError):
        LivenessConfig(passive_threshold=1.5)
