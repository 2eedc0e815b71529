"""Liveness (presentation-attack detection) for a burst of face frames.

Knows frames, face boxes, landmarks and embeddings computed by the caller; no
identities, no transport. Public API:

    checker = LivenessChecker(v2_session, v1se_session, LivenessConfig())
    decision = checker.check([FaceObservation(frame, box, landmarks, embedding), ...])
    decision.passed            # the only thing a client may learn (as LIVENESS_FAILED)
    decision.evidence          # per-cue values, for audit and benchmarks

See liveness/README.md for the cues and what each was measured to do.
"""

from liveness.checker import FaceObservation, LivenessChecker
from liveness.decision import (
    MAX_BURST,
    MIN_BURST,
    CueVerdicts,
    judge,
    LivenessConfig,
    LivenessDecision,
    LivenessEvidence,
)
from liveness.motion import MotionEvidence
from liveness.planarity import PlanarityEvidence

__all__ = [
    "MAX_BURST",
    "MIN_BURST",
    "CueVerdicts",
    "FaceObservation",
    "LivenessChecker",
    "LivenessConfig",
    "LivenessDecision",
    "LivenessEvidence",
    "judge",
    "MotionEvidence",
    "PlanarityEvidence",
]
