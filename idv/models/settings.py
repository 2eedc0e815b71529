"""The `[models]` settings section: which models the node loads, from where, at which level."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

SECURITY_LEVELS = ("fmr_1e-3", "fmr_1e-4", "fmr_1e-5")


def default_model_dir() -> Path:
    return Path(platformdirs.user_cache_dir("idv")) / "models"


@dataclass(frozen=True)
class ModelSettings:
    dir: Path = field(default_factory=default_model_dir)
    mirror: Path | None = None
    manifest: Path | None = None  # None: the manifest shipped in the package
    pack: str = "permissive"
    # An insightface SCRFD detector instead of the pack's (licensed by the operator, e.g. buffalo_l).
    detector_file: Path | None = None
    detector_sha256: str = ""
    detector_score_threshold: float = 0.6
    # Detection runs on a copy scaled so a face of quality.min_face_size pixels is this many
    # pixels (dynamic-input YuNet). At or above min_face_size: full size, the fixed graph's scale
    # (the default). Below it (e.g. 24) every frame's subject is re-detected on a window of the
    # full-size canvas: boxes and landmarks within about a pixel of full size, cheaper only when
    # faces are small in the frame (distant subjects); for webcam-distance faces the window is
    # most of the frame and it costs more than full size: idv/face/detector.py and
    # benchmarks/results/detection_scale_liveness.json.
    detection_face_px: float = 60.0
    # An insightface ArcFace-format recognizer instead of the pack's (licensed by the operator).
    recognizer_file: Path | None = None
    recognizer_sha256: str = ""
    recognizer_threshold: float = 0.0
    # Never left to onnxruntime's default (one thread per core per session).
    intra_op_threads: int = 1
    # Operating point from the manifest's calibrated thresholds.
    security_level: str = "fmr_1e-4"
    # Per-level thresholds written by `idv eval calibrate DIR --write`; when the file holds the
    # configured level for the loaded recognizer, the node uses it instead of the manifest's.
    # None: <store.data_dir>/site_thresholds.toml.
    site_thresholds_file: Path | None = None

    def problems(self) -> list[str]:
        problems: list[str] = []
        if self.intra_op_threads < 1:
            problems.append("models.intra_op_threads must be at least 1")
        if not (8 <= self.detection_face_px <= 640):
            problems.append("models.detection_face_px must be in [8, 640]")
        if self.security_level not in SECURITY_LEVELS:
            problems.append(f"models.security_level must be one of {', '.join(SECURITY_LEVELS)}, "
                            f"not {self.security_level!r}")
        if self.detector_file is not None and not self.detector_sha256:
            problems.append("models.detector_file needs models.detector_sha256")
        if self.recognizer_file is not None and (not self.recognizer_sha256 or self.recognizer_threshold <= 0):
            problems.append("models.recognizer_file needs recognizer_sha256 and a calibrated recognizer_threshold")
        return problems
