"""Adapter from the pipeline's observations to the `liveness` library (passive + multi-frame cues)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from idv.config import Settings
from idv.models.manifest import Manifest
from idv.models.runtime import RuntimeOptions, open_session
from liveness import MAX_BURST, MIN_BURST, FaceObservation, LivenessChecker, LivenessConfig


class LibraryLivenessGate:
    def __init__(self, checker: LivenessChecker):
        self._checker = checker

    @property
    def min_frames(self) -> int:
        """Shorter bursts cannot pass, so Verify refuses them before decoding (FRAME_COUNT)."""
        return 1 if self._checker.config.allow_single_frame else MIN_BURST

    def is_live(self, observations: Sequence) -> bool:
        # Challenge bursts carry up to 24 frames; the multi-frame cues were calibrated on
        # bursts of at most MAX_BURST, so judge an evenly spread subset of that size that
        # keeps every embedded frame (the identity cue compares those).
        track = [o.face.box_xywh for o in observations]  # every frame: continuity is judged on the whole capture
        if len(observations) > MAX_BURST:
            embedded = [i for i, o in enumerate(observations) if o.embedding is not None]
            spread = np.linspace(0, len(observations) - 1, MAX_BURST).round().astype(int).tolist()
            picks = sorted(set(embedded) | set(spread))
            while len(picks) > MAX_BURST:  # drop spread picks nearest a kept neighbour, never an embedded one
                droppable = [p for p in picks if p not in embedded]
                gaps = {p: min(abs(p - q) for q in picks if q != p) for p in droppable}
                picks.remove(min(droppable, key=lambda p: gaps[p]))
            observations = [observations[i] for i in picks]
        return self._checker.check([
            FaceObservation(o.frame_bgr, o.face.box_xywh, o.face.landmarks, o.embedding) for o in observations
        ], track).passed


def build_liveness_gate(manifest: Manifest, settings: Settings) -> LibraryLivenessGate:
    options = RuntimeOptions(intra_op_threads=settings.intra_op_threads)
    v2 = open_session(manifest.entry("minifasnet_v2"), settings.model_dir, options)
    v1se = open_session(manifest.entry("minifasnet_v1se"), settings.model_dir, options)
    config = LivenessConfig(allow_single_frame=settings.liveness_allow_single_frame)
    return LibraryLivenessGate(LivenessChecker(v2.session, v1se.session, config))
