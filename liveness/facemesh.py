"""MediaPipe FaceMesh (face_landmark.tflite) on the LiteRT interpreter.

The model sees a square crop around a detected face: the detector's box grown
1.5x about its centre, squared on its longer side, zero-padded where it leaves
the image, resized to 192x192, RGB scaled to [0, 1]. It returns 468 (x, y, z)
points in that crop's pixels and a face-presence logit. We map the points back
to image pixels so every signal computed from them is in one coordinate frame.

idv.models.runtime only opens onnxruntime sessions, so this module has its own
loader with the same rule: the SHA-256 is checked on the very bytes handed to
the interpreter, and the thread count is always explicit.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from ai_edge_litert.interpreter import Interpreter

from idv.face.types import FaceDetection
from idv.models.manifest import ModelEntry
from idv.models.runtime import ModelLoadError

INPUT_SIZE = 192
NUM_LANDMARKS = 468
CROP_SCALE = 1.5


@dataclass(frozen=True, eq=False)
class FaceLandmarks:
    """FaceMesh output for one face.

    points: (468, 3) float32; x, y in image pixels, z in the same pixel scale
    (relative depth, smaller is nearer the camera). presence: sigmoid of the
    model's face-presence logit, in [0, 1].
    """

    points: np.ndarray
    presence: float


class FaceMesh:
    """A loaded FaceMesh model. One instance per thread: the interpreter is not re-entrant."""

    def __init__(self, interpreter: Interpreter, entry: ModelEntry):
        self._interpreter = interpreter
        self._input_index = interpreter.get_input_details()[0]["index"]
        outputs = {d["name"]: d["index"] for d in interpreter.get_output_details()}
        self._landmarks_index = outputs["conv2d_21"]
        self._presence_index = outputs["conv2d_31"]
        self.entry = entry

    @property
    def fingerprint(self) -> str:
        return f"{self.entry.name}:{self.entry.sha256[:16]}"

    @staticmethod
    def crop_transform(detection: FaceDetection) -> np.ndarray:
        """2x3 affine from image pixels to the 192x192 model crop."""
        side = max(detection.width, detection.height) * CROP_SCALE
        cx = detection.x + detection.width / 2.0
        cy = detection.y + detection.height / 2.0
        scale = INPUT_SIZE / side
        return np.array(
            [[scale, 0.0, (side / 2.0 - cx) * scale], [0.0, scale, (side / 2.0 - cy) * scale]], dtype=np.float64
        )

    def landmarks(self, image_bgr: np.ndarray, detection: FaceDetection) -> FaceLandmarks:
        """468 landmarks of the face in `detection`, in `image_bgr` pixel coordinates."""
        transform = self.crop_transform(detection)
        # warpAffine crops, scales and zero-pads the border in one resampling step.
        crop = cv2.warpAffine(
            image_bgr,
            transform,
            (INPUT_SIZE, INPUT_SIZE),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0),
        )
        blob = (cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0)[np.newaxis]
        self._interpreter.set_tensor(self._input_index, blob)
        self._interpreter.invoke()
        raw = self._interpreter.get_tensor(self._landmarks_index).reshape(NUM_LANDMARKS, 3).astype(np.float64)
        logit = float(self._interpreter.get_tensor(self._presence_index).reshape(-1)[0])
        scale = transform[0, 0]
        points = np.empty_like(raw)
        points[:, 0] = (raw[:, 0] - transform[0, 2]) / scale
        points[:, 1] = (raw[:, 1] - transform[1, 2]) / scale
        points[:, 2] = raw[:, 2] / scale
        presence = 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, logit))))
        return FaceLandmarks(points=points.astype(np.float32), presence=presence)


def _check_contract(entry: ModelEntry, interpreter: Interpreter) -> None:
    if entry.contract is None:
        return
    for kind, details, expected in (
        ("input", interpreter.get_input_details(), entry.contract.inputs),
        ("output", interpreter.get_output_details(), entry.contract.outputs),
    ):
        actual = {d["name"]: tuple(int(v) for v in d["shape"]) for d in details}
        if set(actual) != set(expected):
            raise ModelLoadError(f"{entry.name}: {kind}s are {sorted(actual)}, expected {sorted(expected)}")
        for name, shape in expected.items():
            if actual[name] != tuple(shape):
                raise ModelLoadError(f"{entry.name}: {kind} {name} has shape {actual[name]}, expected {tuple(shape)}")


def load_facemesh(entry: ModelEntry, model_dir: Path, num_threads: int = 1) -> FaceMesh:
    """Load `entry` from `model_dir` after checking its SHA-256 and contract.

    num_threads defaults to 1: the model runs in about a millisecond, and the
    server already runs one pipeline per worker thread.
    """
    path = model_dir / entry.file
    if not path.is_file():
        raise ModelLoadError(
            f"model file {path} is missing; run `idv models pull` (with IDV_MODEL_MIRROR for an offline mirror)"
        )
    # Hash the very bytes we load, so the file cannot change between check and use.
    model_bytes = path.read_bytes()
    actual = hashlib.sha256(model_bytes).hexdigest()
    if actual != entry.sha256:
        raise ModelLoadError(
            f"model file {path} has SHA-256 {actual}, pinned {entry.sha256}: it was altered; refusing it"
        )
    try:
        interpreter = Interpreter(model_content=model_bytes, num_threads=num_threads)
        interpreter.allocate_tensors()
    except Exception as exc:  # LiteRT raises ValueError/RuntimeError for bad flatbuffers
        raise ModelLoadError(f"model file {path} could not be loaded by LiteRT: {exc}") from exc
    _check_contract(entry, interpreter)
    return FaceMesh(interpreter, entry)
