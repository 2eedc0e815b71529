"""Configuration, evidence and the PASS/FAIL rule of the liveness check.

Every cue must agree for a burst to pass (a conjunction): each one answers a
different attack, so a high score on one cannot buy back a failure on another.

* passive texture (both MiniFASNets): print and screen attacks;
* motion: a still repeated or re-encoded as a "burst";
* identity: a burst spliced from different people;
* planarity: a flat photo or screen moved in front of the camera.

The defaults are the values chosen in benchmarks/accuracy/liveness_eval.py on
../shared/testdata (numbers in benchmarks/results/liveness.json and
liveness/README.md). Which cue failed stays in the evidence, for audit and
benchmarks; it is never part of what a client is told.
"""

from __future__ import annotations

from dataclasses import dataclass

from liveness.motion import MotionEvidence
from liveness.planarity import PlanarityEvidence

MIN_BURST = 2
MAX_BURST = 8


@dataclass(frozen=True)
class LivenessConfig:
    # Passive: mean over the burst of each frame's mean P(real) from the two models.
    passive_enabled: bool = True
    passive_threshold: float = 0.119
    # Frames of the burst the passive models score, evenly spaced, first and last included.
    # Texture evidence is in every frame of an attack, and each frame costs ~6 ms (two models);
    # a burst mixing attack and other frames is left to the identity cue (see README).
    passive_frames: int = 2
    # Motion (liveness/motion.py): coarse change in grey levels and its low-pass share.
    motion_enabled: bool = True
    motion_min_change: float = 0.992
    motion_min_coherence: float = 0.065
    # Identity: the lowest cosine between any two embedded frames' embeddings, and the
    # face box's largest step between consecutive frames, in face sizes (liveness/identity.py):
    # a face does not move by its own size between two frames of one capture (measured on
    # head-turn challenge bursts: at most 0.37).
    identity_enabled: bool = True
    identity_threshold: float = 0.30
    identity_max_jump: float = 1.0
    # Planarity: judged only when the tracked face moved at least `planarity_min_movement`
    # (fraction of the inter-ocular distance); planar when residual/movement is below the ratio.
    planarity_enabled: bool = True
    planarity_min_movement: float = 0.05
    planarity_max_ratio: float = 0.04
    # A 1-frame burst cannot show motion or 3-D structure. Refused by default: allowing it
    # would let any still photo skip the motion cue. An operator may allow passive-only.
    allow_single_frame: bool = False

    def __post_init__(self) -> None:
        for name in ("passive_threshold", "planarity_max_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.identity_max_jump <= 0:
            raise ValueError(f"identity_max_jump must be positive, got {self.identity_max_jump}")
        if not -1.0 <= self.identity_threshold <= 1.0:
            raise ValueError(f"identity_threshold must be in [-1, 1], got {self.identity_threshold}")
        if self.passive_frames < 1:
            raise ValueError("passive_frames must be >= 1")
        if self.motion_min_change < 0 or self.planarity_min_movement < 0 or not 0 <= self.motion_min_coherence <= 1:
            raise ValueError("motion and planarity thresholds out of range")


@dataclass(frozen=True)
class CueVerdicts:
    """Per-cue outcome; None where the cue is disabled or could not be judged."""

    burst_length_ok: bool
    passive: bool | None
    motion: bool | None
    identity: bool | None
    planarity: bool | None


@dataclass(frozen=True)
class LivenessEvidence:
    """What the decision was based on. For audit and benchmarks only: never sent to clients."""

    frames: int
    passive_v2: tuple[float, ...]  # P(real) of each scored frame (see LivenessConfig.passive_frames)
    passive_v1se: tuple[float, ...]
    passive_score: float | None
    motion: MotionEvidence | None
    identity_min_cosine: float | None
    planarity: PlanarityEvidence | None
    track_jump: float | None = None  # largest face step between consecutive frames / face size

    @property
    def planarity_ratio(self) -> float | None:
        if self.planarity is None or self.planarity.tracks == 0 or self.planarity.movement <= 0:
            return None
        return self.planarity.residual / self.planarity.movement


@dataclass(frozen=True)
class LivenessDecision:
    passed: bool
    verdicts: CueVerdicts
    evidence: LivenessEvidence


def burst_length_ok(frames: int, config: LivenessConfig) -> bool:
    if MIN_BURST <= frames <= MAX_BURST:
        return True
    return frames == 1 and config.allow_single_frame and config.passive_enabled


def _judge_planarity(evidence: PlanarityEvidence, config: LivenessConfig) -> bool | None:
    """False when the face moved enough to tell and moved like a plane; None when it cannot tell."""
    if evidence.tracks == 0 or evidence.movement < config.planarity_min_movement:
        return None
    return evidence.residual / evidence.movement >= config.planarity_max_ratio


def judge(evidence: LivenessEvidence, config: LivenessConfig) -> CueVerdicts:
    """Each enabled cue's verdict from the measured values (a cue not measured is not judged).

    Kept apart from the measuring so calibration can re-judge stored evidence
    under other thresholds with exactly the rule the service applies.
    """

    def enabled(flag: bool, value: object, verdict: bool | None) -> bool | None:
        return verdict if flag and value is not None else None

    return CueVerdicts(
        burst_length_ok=burst_length_ok(evidence.frames, config),
        passive=enabled(
            config.passive_enabled,
            evidence.passive_score,
            evidence.passive_score is not None and evidence.passive_score >= config.passive_threshold,
        ),
        motion=enabled(
            config.motion_enabled,
            evidence.motion,
            evidence.motion is not None
            and evidence.motion.coarse_change >= config.motion_min_change
            and evidence.motion.coherence >= config.motion_min_coherence,
        ),
        identity=enabled(
            config.identity_enabled,
            evidence.identity_min_cosine,
            evidence.identity_min_cosine is not None and evidence.identity_min_cosine >= config.identity_threshold
            and (evidence.track_jump is None or evidence.track_jump <= config.identity_max_jump),
        ),
        planarity=(
            _judge_planarity(evidence.planarity, config)
            if config.planarity_enabled and evidence.planarity is not None
            else None
        ),
    )


def decide(verdicts: CueVerdicts) -> bool:
    """Pass only if the burst length is acceptable and no judged cue said no."""
    cues = (verdicts.passive, verdicts.motion, verdicts.identity, verdicts.planarity)
    return verdicts.burst_length_ok and all(v is not False for v in cues)
