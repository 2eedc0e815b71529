"""Active challenge actions on the shared real clips (see benchmarks/accuracy/action_segments.toml)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import cv2
import numpy as np
import pytest

from idv.face.detector import YuNetDetector
from idv.models.manifest import load_manifest
from idv.models.runtime import ModelLoadError, RuntimeOptions, open_session
from liveness.actions import Action, ActionConfig, FrameSignals, detect_actions
from idv.models.litert import load_facemesh
from liveness.video_signals import iter_video_frames, signals_for_frame

REPO = Path(__file__).resolve().parents[2]
from tests.conftest import SHARED  # noqa: E402  (IDV_SHARED_DIR or ../shared beside the repository)

VIDEOS = SHARED / "testdata" / "video"
SEGMENTS_FILE = REPO / "benchmarks" / "accuracy" / "action_segments.toml"
BURST = 24

with SEGMENTS_FILE.open("rb") as _fh:
    SEGMENTS = {s["id"]: s for s in tomllib.load(_fh)["segments"]}

# BLINK is measured but not trusted (liveness/ACTIONS.md): only the clear blinks
# are asserted here, and the look-down that the model reads as a blink is excluded.
CLEAR_BLINKS = ("d14_blink", "d10_blink_a", "d10_blink_b")
KNOWN_BLINK_FALSE_ACCEPT = {("d3_nod_b", Action.BLINK)}


@pytest.fixture(scope="module")
def models(model_dir):
    cache = model_dir
    manifest = load_manifest()
    detector = YuNetDetector(open_session(manifest.entry("yunet"), cache, RuntimeOptions()))
    facemesh = load_facemesh(manifest.entry("facemesh"), cache, num_threads=1)
    return manifest, cache, detector, facemesh


def _burst_indices(start: int, end: int) -> set[int]:
    return set(np.round(np.linspace(start, end, min(BURST, end - start + 1))).astype(int).tolist())


@pytest.fixture(scope="module")
def bursts(models):
    """Per segment: (signals, frames) of its burst. Only burst frames go through the models."""
    _, _, detector, facemesh = models
    wanted: dict[str, dict[int, list[str]]] = {}
    for seg in SEGMENTS.values():
        for i in _burst_indices(seg["start"], seg["end"]):
            wanted.setdefault(seg["clip"], {}).setdefault(i, []).append(seg["id"])
    out: dict[str, tuple[list[FrameSignals], list[np.ndarray]]] = {s: ([], []) for s in SEGMENTS}
    for clip, frames in wanted.items():
        last = max(frames)
        for index, frame in iter_video_frames(VIDEOS / clip):
            if index in frames:
                signals = signals_for_frame(frame, index, detector, facemesh)
                for seg_id in frames[index]:
                    out[seg_id][0].append(signals)
                    out[seg_id][1].append(frame)
            if index >= last:
                break
    return out


def _signals(bursts, seg_id: str) -> list[FrameSignals]:
    return bursts[seg_id][0]


NON_BLINK_CASES = [
    (seg_id, Action(a))
    for seg_id, seg in SEGMENTS.items()
    for a in seg["actions"]
    if a != "BLINK"
]
ABSENT_CASES = [
    (seg_id, Action(a))
    for seg_id, seg in SEGMENTS.items()
    for a in seg["absent"]
    if (seg_id, Action(a)) not in KNOWN_BLINK_FALSE_ACCEPT
]


@pytest.mark.parametrize(("seg_id", "action"), NON_BLINK_CASES + [(s, Action.BLINK) for s in CLEAR_BLINKS])
def test_performed_action_satisfies_challenge(bursts, seg_id, action):
    result = detect_actions(_signals(bursts, seg_id), [action])
    assert result.passed, (seg_id, action, result.reason)


@pytest.mark.parametrize(("seg_id", "action"), ABSENT_CASES)
def test_action_not_performed_fails_challenge(bursts, seg_id, action):
    result = detect_actions(_signals(bursts, seg_id), [action])
    assert not result.passed
    assert result.reason == f"missing:{action.value}"


def test_two_action_challenge_with_one_missing_fails(bursts):
    # Performed TURN_LEFT, challenge asks TURN_LEFT then NOD.
    result = detect_actions(_signals(bursts, "d12_turn_left_a"), [Action.TURN_LEFT, Action.NOD])
    assert not result.passed and result.reason == "missing:NOD"
    assert result.matched[0] is not None and result.matched[0].action is Action.TURN_LEFT


@pytest.mark.parametrize(
    ("seg_id", "first", "second"),
    [("d12_left_then_right", Action.TURN_LEFT, Action.TURN_RIGHT), ("d3_nod_then_open_mouth", Action.NOD, Action.OPEN_MOUTH)],
)
def test_order_matters(bursts, seg_id, first, second):
    signals = _signals(bursts, seg_id)
    forward = detect_actions(signals, [first, second])
    assert forward.passed
    assert forward.matched[0].start < forward.matched[1].start
    assert not detect_actions(signals, [second, first]).passed


def test_still_burst_fails_every_challenge(bursts):
    signals = _signals(bursts, "d10_still")
    for action in Action:
        assert not detect_actions(signals, [action]).passed, action
    assert not detect_actions(signals, [Action.TURN_LEFT, Action.NOD]).passed


def test_one_frame_repeated_fails_every_challenge(bursts):
    # A held-up photo: the same frame over the whole burst.
    frozen = [_signals(bursts, "d12_turn_left_a")[0]] * BURST
    for action in Action:
        assert not detect_actions(frozen, [action]).passed, action


def test_mirrored_frames_swap_left_and_right(bursts, models):
    """The convention is for un-mirrored camera frames; a mirrored upload reads as the opposite turn."""
    _, _, detector, facemesh = models
    frames = bursts["d12_turn_left_a"][1]
    mirrored = [signals_for_frame(cv2.flip(f, 1), i, detector, facemesh) for i, f in enumerate(frames)]
    assert detect_actions(_signals(bursts, "d12_turn_left_a"), [Action.TURN_LEFT]).passed
    assert detect_actions(mirrored, [Action.TURN_RIGHT]).passed
    assert not detect_actions(mirrored, [Action.TURN_LEFT]).passed


def test_burst_without_faces_fails():
    signals = [FrameSignals.missing(i) for i in range(BURST)]
    result = detect_actions(signals, [Action.TURN_LEFT])
    assert not result.passed and result.reason == "no_face"
    assert not detect_actions([], [Action.NOD]).passed


def test_blink_kept_out_of_challenge_draws_by_default():
    assert Action.BLINK not in ActionConfig().drawable_actions()
    assert Action.BLINK in ActionConfig(blink_in_challenges=True).drawable_actions()


def test_altered_tflite_is_refused(models, tmp_path):
    manifest, cache, _, _ = models
    entry = manifest.entry("facemesh")
    data = bytearray((cache / entry.file).read_bytes())
    data[len(data) // 2] ^= 0x01
    (tmp_path / entry.file).write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="SHA-256"):
        load_facemesh(entry, tmp_path)
    with pytest.raises(ModelLoadError, match="missing"):
        load_facemesh(entry, tmp_path / "nowhere")


# ---------------------------------------------------------------- timing (issue 14)
# The rule's logic on constructed signals (the thresholds come from the real clips above): a burst
# of 24 frames, 3 prompts of 8 frames each (the capture page's schedule), neutral except where set.
def _timed(**events: list[int]) -> list[FrameSignals]:
    """events: yaw_left / nod / mouth -> the burst frames where that signal is well past its threshold."""
    frames = []
    for i in range(24):
        yaw = 0.3 if i in events.get("yaw_left", []) else 0.0
        pitch = 0.3 if i in events.get("nod", []) else 0.0
        mouth = 0.4 if i in events.get("mouth", []) else 0.05
        frames.append(FrameSignals(i, yaw, pitch, 0.3, mouth, 1.0))
    return frames


NOD_MOUTH_LEFT = [Action.NOD, Action.OPEN_MOUTH, Action.TURN_LEFT]


def test_each_action_in_its_own_prompt_passes():
    result = detect_actions(_timed(nod=[3, 4, 5], mouth=[10, 11, 12], yaw_left=[18, 19, 20]), NOD_MOUTH_LEFT)
    assert result.passed, result.reason


def test_an_action_outside_its_prompt_fails():
    # The mouth opens in the third prompt's frames, not the second's.
    result = detect_actions(_timed(nod=[3, 4], mouth=[17, 18], yaw_left=[20, 21]), NOD_MOUTH_LEFT)
    assert (result.passed, result.reason) == (False, "missing:OPEN_MOUTH")
    # Untimed (before issue 14) the same burst passed: order alone says nothing about when.
    assert detect_actions(_timed(nod=[3, 4], mouth=[17, 18], yaw_left=[20, 21]), NOD_MOUTH_LEFT,
                          ActionConfig(timed=False)).passed


def test_an_action_already_done_before_its_prompt_fails_a_one_frame_blip_does_not():
    done_early = _timed(nod=[3, 4], mouth=[5, 6, 10, 11], yaw_left=[18, 19])  # a talking head's mouth
    assert detect_actions(done_early, NOD_MOUTH_LEFT).reason == "early:OPEN_MOUTH"
    blip = _timed(nod=[3, 4], mouth=[6, 10, 11], yaw_left=[18, 19])
    assert detect_actions(blip, NOD_MOUTH_LEFT).passed


def test_an_action_at_the_instant_its_prompt_appears_fails():
    # Frame 16 is captured as the third prompt appears: nobody has turned by then.
    assert detect_actions(_timed(nod=[3, 4], mouth=[10, 11], yaw_left=[16, 17]), NOD_MOUTH_LEFT).reason \
        == "missing:TURN_LEFT"
    assert detect_actions(_timed(nod=[3, 4], mouth=[10, 11], yaw_left=[17, 18]), NOD_MOUTH_LEFT).passed


def test_the_next_action_must_follow_a_return_to_neutral():
    # Still nodding (frames 3-11) when the mouth opens at 10: one movement, not two answers.
    result = detect_actions(_timed(nod=list(range(3, 12)), mouth=[10, 11, 12], yaw_left=[18, 19]), NOD_MOUTH_LEFT)
    assert result.reason == "missing:OPEN_MOUTH"


def test_prompt_starts_follow_the_capture_page():
    from liveness.actions import prompt_starts

    assert prompt_starts(24, 3) == (0, 8, 16, 24)
    assert prompt_starts(24, 2) == (0, 12, 24)
    assert prompt_starts(20, 3) == (0, 7, 14, 20)  # capture.js: prompt floor(i * 3 / 20) at frame i
