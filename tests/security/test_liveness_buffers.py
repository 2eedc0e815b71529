"""C3 for liveness too: the MiniFASNet patches and model inputs, the FaceMesh crops (and the
interpreter's own copy of its input), the motion and planarity arrays of a request are zeroed when
the call ends. Every array OpenCV and the liveness models see or produce during a Verify is recorded
(kept alive) and must read all zeros afterwards: one buffer left out of the request's list fails it."""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path

import numpy as np

import liveness.facemesh
import liveness.motion
import liveness.patches
import liveness.planarity
from idv.client import IdvClient
from idv.node import build_node
from tests.conftest import ID_SUBJECT_1
from tests.test_challenges import NAME, _plant, clip_frames

# Geometry (a 2x3 affine, a homography) is not image data; every pixel-derived buffer is bigger.
_MIN_ELEMENTS = 64


class Recorder:
    def __init__(self) -> None:
        self.arrays: list[tuple[str, np.ndarray]] = []

    def keep(self, where: str, value: object) -> None:
        if isinstance(value, np.ndarray) and value.size >= _MIN_ELEMENTS:
            self.arrays.append((where, value))
        elif isinstance(value, (tuple, list)):
            for item in value:
                self.keep(where, item)

    def cv2_proxy(self, module_name: str):
        import cv2

        recorder = self

        class Proxy(types.SimpleNamespace):
            def __getattr__(self, name: str):
                target = getattr(cv2, name)
                if not callable(target) or isinstance(target, type):
                    return target

                def call(*args, **kwargs):
                    result = target(*args, **kwargs)
                    for value in (*args, *kwargs.values(), result):
                        recorder.keep(f"{module_name}: cv2.{name}", value)
                    return result

                return call

        return Proxy()

    def session_proxy(self, name: str, session):
        recorder = self

        class Session:
            def run(self, outputs, feed):
                for value in feed.values():
                    recorder.keep(f"{name} input", value)
                result = session.run(outputs, feed)
                recorder.keep(f"{name} output", result)
                return result

            def __getattr__(self, attribute):
                return getattr(session, attribute)

        return Session()


def test_liveness_and_challenge_buffers_are_zeroed_after_the_call(node_settings, model_set, testdata: Path,
                                                                 monkeypatch) -> None:
    recorder = Recorder()
    for module in (liveness.motion, liveness.planarity, liveness.patches, liveness.facemesh):
        monkeypatch.setattr(module, "cv2", recorder.cv2_proxy(module.__name__))
    # The served models with their MiniFASNet sessions watched: inputs and outputs are recorded.
    watched = dataclasses.replace(model_set,
                                  minifasnet_v2=recorder.session_proxy("MiniFASNet V2", model_set.minifasnet_v2),
                                  minifasnet_v1se=recorder.session_proxy("MiniFASNet V1SE", model_set.minifasnet_v1se))
    node = build_node(node_settings)
    try:
        node.load(watched)
        frames = clip_frames(testdata, "live_d12.mp4", 20, 105)
        with IdvClient(f"127.0.0.1:{node.port}", retries=0) as client:
            client.enroll(ID_SUBJECT_1, NAME, clip_frames(testdata, "live_d12.mp4", 0, 0, 1))
            recorder.arrays.clear()  # the request under test starts here
            challenge = _plant(node, "anonymous", ID_SUBJECT_1, ("TURN_LEFT", "TURN_RIGHT"))
            assert client.verify(ID_SUBJECT_1, NAME, frames, "registration", challenge).reason == "VERIFIED"
        interpreter_inputs = model_set.facemesh.input_tensors()
    finally:
        node.stop(0)
    seen = {where.split(":")[0] for where, _ in recorder.arrays}
    # Every liveness stage ran and was watched (a test that watched nothing could not fail).
    assert {"liveness.motion", "liveness.planarity", "liveness.patches", "liveness.facemesh",
            "MiniFASNet V2 input", "MiniFASNet V1SE input"} <= seen, seen
    holding = sorted({where for where, array in recorder.arrays if np.any(array)})
    assert holding == [], f"buffers still holding probe data after the call: {holding}"
    # Every interpreter a frame may have run on (one per frame-pool thread) was overwritten.
    assert len(interpreter_inputs) == model_set.facemesh.instances
    assert not any(np.any(held) for held in interpreter_inputs), "a FaceMesh interpreter still holds a crop"
