"""MediaPipe FaceMesh (face_landmark.tflite) on the LiteRT interpreter.

The model sees a square crop around a detected face: the detector's box grown
1.5x about its centre, squared on its longer side, zero-padded where it leaves
the image, resized to 192x192, RGB scaled to [0, 1]. It returns 468 (x, y, z)
points in that crop's pixels and a face-presence logit. We map the points back
to image pixels so every signal computed from them is in one coordinate frame.

The library takes the model's bytes: the caller (idv.models.litert) reads the
file and checks its pinned SHA-256 on those very bytes; the thread count is
always explicit. Faces come in as detector boxes (x, y, w, h) in pixels.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
from ai_edge_litert.interpreter import Interpreter

from liveness.scratch import Scratch, own

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


class FaceMeshLoadError(RuntimeError):
    """The model bytes are not a FaceMesh graph with the expected inputs and outputs."""


Box = tuple[float, float, float, float]  # x, y, width, height in image pixels


class FaceMesh:
    """A loaded FaceMesh model on one or more interpreters.

    An interpreter is not re-entrant, so each call borrows one for its duration; with as many
    interpreters as the frame pool has threads, a challenge burst's frames run side by side
    (one interpreter: calls are serialised). Every interpreter holds the same model bytes and
    the same thread count, so which one a frame gets does not change its output (checked at load,
    idv/models/model_set.py).
    """

    def __init__(self, interpreters: Sequence[Interpreter], fingerprint: str):
        if not interpreters:
            raise ValueError("FaceMesh needs at least one interpreter")
        first = interpreters[0]
        self._input_index = first.get_input_details()[0]["index"]
        outputs = {d["name"]: d["index"] for d in first.get_output_details()}
        self._landmarks_index = outputs["conv2d_21"]
        self._presence_index = outputs["conv2d_31"]
        self._interpreters = tuple(interpreters)
        # FIFO: consecutive calls take the interpreters in turn (load-time warm-up reaches each).
        self._idle: queue.Queue[Interpreter] = queue.Queue()
        self._inspecting = threading.Lock()  # two `input_tensors` at once would each hold part of the queue
        for interpreter in self._interpreters:
            self._idle.put(interpreter)
        self.fingerprint = fingerprint

    @property
    def instances(self) -> int:
        return len(self._interpreters)

    @contextmanager
    def _borrowed(self) -> Iterator[Interpreter]:
        interpreter = self._idle.get()
        try:
            yield interpreter
        finally:
            self._idle.put(interpreter)

    @staticmethod
    def crop_transform(box: Box) -> np.ndarray:
        """2x3 affine from image pixels to the 192x192 model crop."""
        x, y, width, height = box
        side = max(width, height) * CROP_SCALE
        cx = x + width / 2.0
        cy = y + height / 2.0
        scale = INPUT_SIZE / side
        return np.array(
            [[scale, 0.0, (side / 2.0 - cx) * scale], [0.0, scale, (side / 2.0 - cy) * scale]], dtype=np.float64
        )

    def landmarks(self, image_bgr: np.ndarray, box: Box, scratch: Scratch | None = None) -> FaceLandmarks:
        """468 landmarks of the face in `box`, in `image_bgr` pixel coordinates. With `scratch`, the
        crop, the model input and the interpreter's copy of it are the caller's to zero."""
        transform = self.crop_transform(box)
        # warpAffine crops, scales and zero-pads the border in one resampling step.
        crop = own(scratch, cv2.warpAffine(
            image_bgr,
            transform,
            (INPUT_SIZE, INPUT_SIZE),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0),
        ))
        rgb = own(scratch, cv2.cvtColor(crop, cv2.COLOR_BGR2RGB))
        scaled = own(scratch, rgb.astype(np.float32))
        scaled /= 255.0
        blob = scaled[np.newaxis]
        with self._borrowed() as interpreter:
            try:
                interpreter.set_tensor(self._input_index, blob)
                interpreter.invoke()
                raw = interpreter.get_tensor(self._landmarks_index).reshape(NUM_LANDMARKS, 3).astype(np.float64)
                logit = float(interpreter.get_tensor(self._presence_index).reshape(-1)[0])
            finally:
                if scratch is not None:  # the interpreter keeps its own copy of the input: overwrite it, whatever happened
                    blob.fill(0)
                    interpreter.set_tensor(self._input_index, blob)
        scale = transform[0, 0]
        points = np.empty_like(raw)
        points[:, 0] = (raw[:, 0] - transform[0, 2]) / scale
        points[:, 1] = (raw[:, 1] - transform[1, 2]) / scale
        points[:, 2] = raw[:, 2] / scale
        presence = 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, logit))))
        return FaceLandmarks(points=points.astype(np.float32), presence=presence)

    def input_tensors(self) -> list[np.ndarray]:
        """A copy of what each interpreter holds as its input now (to check that no crop outlives a
        call); waits for every call in progress to end."""
        with self._inspecting:
            borrowed = [self._idle.get() for _ in self._interpreters]
            try:
                return [np.array(interpreter.get_tensor(self._input_index)) for interpreter in borrowed]
            finally:
                for interpreter in borrowed:
                    self._idle.put(interpreter)


def _check_contract(interpreter: Interpreter, inputs: dict[str, tuple], outputs: dict[str, tuple]) -> None:
    for kind, details, expected in (
        ("input", interpreter.get_input_details(), inputs),
        ("output", interpreter.get_output_details(), outputs),
    ):
        actual = {d["name"]: tuple(int(v) for v in d["shape"]) for d in details}
        if set(actual) != set(expected):
            raise FaceMeshLoadError(f"{kind}s are {sorted(actual)}, expected {sorted(expected)}")
        for name, shape in expected.items():
            if actual[name] != tuple(shape):
                raise FaceMeshLoadError(f"{kind} {name} has shape {actual[name]}, expected {tuple(shape)}")


def open_facemesh(model_bytes: bytes, fingerprint: str, inputs: dict[str, tuple], outputs: dict[str, tuple],
                  num_threads: int = 1, instances: int = 1) -> FaceMesh:
    """A FaceMesh on `model_bytes` (already verified by the caller), with its contract checked.

    num_threads defaults to 1: the model runs in a few milliseconds, and the server already
    runs frames on a pool of its own. `instances`: how many calls may run at once (one
    interpreter each; the server gives one per frame-pool thread).
    """
    if instances < 1:
        raise ValueError("FaceMesh needs at least one interpreter")
    interpreters = []
    for _ in range(instances):
        try:
            interpreter = Interpreter(model_content=model_bytes, num_threads=num_threads)
            interpreter.allocate_tensors()
        except Exception as exc:  # LiteRT raises ValueError/RuntimeError for bad flatbuffers
            raise FaceMeshLoadError(f"not a loadable LiteRT model: {exc}") from exc
        _check_contract(interpreter, inputs, outputs)
        interpreters.append(interpreter)
    return FaceMesh(interpreters, fingerprint)
