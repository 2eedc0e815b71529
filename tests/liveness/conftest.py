"""Real models pulled from the shared mirror, and bursts cut from the shared data."""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from idv.face.detector import YuNetDetector
from idv.face.embedder import SFaceEmbedder, align_face
from idv.models.manifest import load_manifest
from idv.models.runtime import LoadedModel, RuntimeOptions, open_session
from liveness import FaceObservation

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("IDV_SHARED_DIR", REPO.parent / "shared"))
MODELS = ("yunet", "sface_fp32", "minifasnet_v2", "minifasnet_v1se")
_NUAA_NAME = re.compile(r"^(\d{4}_\d{2}_\d{2}_\d{2})_(\d+)\.jpg$")


def _require_shared() -> None:
    if not (SHARED / "models").is_dir() or not (SHARED / "testdata").is_dir():
        pytest.fail(f"shared models/testdata not found at {SHARED} (set IDV_SHARED_DIR)")


@pytest.fixture(scope="session")
def shared() -> Path:
    _require_shared()
    return SHARED


@pytest.fixture(scope="session")
def models(model_dir: Path) -> dict[str, LoadedModel]:
    manifest = load_manifest()
    return {name: open_session(manifest.entry(name), model_dir, RuntimeOptions()) for name in MODELS}


@dataclass
class Observer:
    detector: YuNetDetector
    embedder: SFaceEmbedder

    def observe(self, frames: list[np.ndarray]) -> list[FaceObservation]:
        observations = []
        for frame in frames:
            faces = self.detector.detect(frame)
            assert faces, "no face detected in a test frame"
            face = max(faces, key=lambda f: f.width * f.height)
            embedding = self.embedder.embed([align_face(frame, face)])[0]
            observations.append(FaceObservation(frame, face.box_xywh, face.landmarks, embedding))
        return observations


@pytest.fixture(scope="session")
def observer(models: dict[str, LoadedModel]) -> Observer:
    return Observer(YuNetDetector(models["yunet"]), SFaceEmbedder(models["sface_fp32"]))


def nuaa_sequences(shared: Path, kind: str) -> dict[str, list[Path]]:
    sequences: dict[str, list[tuple[int, Path]]] = defaultdict(list)
    for path in (shared / "testdata" / "nuaa" / kind).glob("*/*.jpg"):
        if match := _NUAA_NAME.match(path.name):
            sequences[match.group(1)].append((int(match.group(2)), path))
    return {key: [p for _, p in sorted(v)] for key, v in sorted(sequences.items())}


def nuaa_burst(paths: list[Path], start: int, length: int = 5) -> list[np.ndarray]:
    return [cv2.imread(str(p)) for p in paths[start : start + length]]


def video_burst(path: Path, start_frame: int, length: int = 5, step: int = 3) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames, index = [], 0
    try:
        while len(frames) < length:
            ok, frame = capture.read()
            if not ok:
                break
            if index >= start_frame and (index - start_frame) % step == 0:
                frames.append(frame)
            index += 1
    finally:
        capture.release()
    assert len(frames) == length, f"{path.name} is too short"
    return frames
