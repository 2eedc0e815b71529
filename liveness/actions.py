"""Active challenge actions: per-frame head/eye/mouth signals and an in-order check.

A challenge is a short, random sequence of actions (turn left, nod, ...). The
client captures a burst of frames while the person performs it; this module
turns each frame's FaceMesh landmarks into a few scalar signals, finds the
action *events* in the burst (excursions of a signal away from the person's own
baseline), and checks that the requested actions occur in the requested order.

Conventions (see liveness/ACTIONS.md for the measured numbers):

* Frames are the camera's native, un-mirrored images, as the detector and
  recognizer expect them. TURN_LEFT means the person turns their head to *their
  own* left. In an un-mirrored frame their left is on the image's right, so the
  nose moves towards larger x and `yaw` grows. A mirrored selfie preview shows
  the same movement as the face turning towards the screen's left, i.e. the
  same way the person moved, so an on-screen arrow pointing left is right for
  TURN_LEFT. A client that uploads its mirrored preview instead of the camera
  frames swaps left and right: it must not.
* NOD is the head tipping down (chin towards the chest) and back. Tipping the
  head back is not a nod: people do it when they open their mouth wide, so
  counting it would let OPEN_MOUTH satisfy NOD.
* Baselines come from the burst itself, since faces differ: the head pose
  baseline is the median of the first frames (the capture starts with the
  person facing the camera); the eye-openness baseline is the burst median
  (eyes are open most of the time); the mouth baseline is a low percentile
  (the mouth is closed at least some of the time).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from liveness.facemesh import FaceLandmarks

# FaceMesh 468-point indices. "Right"/"left" are the subject's own sides.
_RIGHT_EYE_OUTER, _LEFT_EYE_OUTER = 33, 263
_NOSE_TIP = 1
_FOREHEAD = 10  # top of the face oval: rigid, so the jaw does not move it
_UPPER_LIP, _LOWER_LIP = 13, 14  # inner lip midpoints
_MOUTH_RIGHT, _MOUTH_LEFT = 61, 291
# Eye-aspect-ratio points, in the usual p1..p6 order (corner, top, top, corner, bottom, bottom).
_RIGHT_EYE = (33, 160, 158, 133, 153, 144)
_LEFT_EYE = (362, 385, 387, 263, 373, 380)


class Action(StrEnum):
    TURN_LEFT = "TURN_LEFT"  # the person's own left; see the module docstring
    TURN_RIGHT = "TURN_RIGHT"
    NOD = "NOD"
    BLINK = "BLINK"
    OPEN_MOUTH = "OPEN_MOUTH"


@dataclass(frozen=True)
class FrameSignals:
    """Scalar signals of one frame. All NaN when no face was found.

    yaw: nose tip offset from the eye-corner midpoint along the eye line, over
      the eye-corner distance; > 0 when the person turns to their own left.
    pitch: depth of the nose tip minus depth of the forehead, over their image
      distance (a tangent-like measure); grows when the head tips down.
    eye_openness: eye aspect ratio, mean of both eyes.
    mouth_opening: inner-lip gap over mouth width.
    presence: FaceMesh face-presence probability.
    """

    frame_index: int
    yaw: float
    pitch: float
    eye_openness: float
    mouth_opening: float
    presence: float

    @property
    def face_found(self) -> bool:
        return not math.isnan(self.yaw)

    @classmethod
    def missing(cls, frame_index: int) -> FrameSignals:
        nan = float("nan")
        return cls(frame_index, nan, nan, nan, nan, 0.0)


def _eye_aspect_ratio(points: np.ndarray, idx: tuple[int, ...]) -> float:
    p = points[list(idx), :2]
    width = np.linalg.norm(p[0] - p[3])
    return float((np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])) / (2.0 * width))


def frame_signals(landmarks: FaceLandmarks, frame_index: int) -> FrameSignals:
    """Signals of one face from its FaceMesh landmarks (image pixel coordinates)."""
    points = landmarks.points.astype(np.float64)
    right, left = points[_RIGHT_EYE_OUTER, :2], points[_LEFT_EYE_OUTER, :2]
    eye_vec = left - right
    eye_dist = float(np.linalg.norm(eye_vec))
    # Measure along the eye line, so a head tilt (roll) is not read as a turn.
    along = eye_vec / eye_dist
    yaw = float(np.dot(points[_NOSE_TIP, :2] - (left + right) / 2.0, along) / eye_dist)
    nose, forehead = points[_NOSE_TIP], points[_FOREHEAD]
    pitch = float((nose[2] - forehead[2]) / np.linalg.norm(nose[:2] - forehead[:2]))
    ear = (_eye_aspect_ratio(points, _RIGHT_EYE) + _eye_aspect_ratio(points, _LEFT_EYE)) / 2.0
    mouth = float(
        np.linalg.norm(points[_UPPER_LIP, :2] - points[_LOWER_LIP, :2])
        / np.linalg.norm(points[_MOUTH_RIGHT, :2] - points[_MOUTH_LEFT, :2])
    )
    return FrameSignals(frame_index, yaw, pitch, ear, mouth, landmarks.presence)


@dataclass(frozen=True)
class ActionConfig:
    """Thresholds, measured on the shared live clips (liveness/ACTIONS.md).

    Deltas are against the burst's own baseline. An event starts when a signal
    passes its threshold and ends when it falls back below `release` times the
    threshold, so jitter around the threshold does not split one action in two.
    """

    turn_yaw_delta: float = 0.10
    nod_pitch_delta: float = 0.12
    blink_ratio: float = 0.70  # eye openness at or below this fraction of the baseline
    mouth_open_delta: float = 0.15
    release: float = 0.5
    baseline_frames: int = 3
    mouth_baseline_percentile: float = 20.0
    min_presence: float = 0.5
    min_face_fraction: float = 0.75
    # Off by default: with this model, eyes lowered while looking down read as
    # a blink and fast blinks fall between burst frames (ACTIONS.md: 4 of 5
    # blinks found, 1 of 6 blink-free segments accepted, a look-down). BLINK is
    # still detected when a challenge requests it.
    blink_in_challenges: bool = False
    # Issue 14, timing: evidence that the burst was made after the challenge existed. The capture
    # page shows prompt k of K from burst frame ceil(k*N/K) on (frames split evenly, in order); each
    # requested action must start inside its own prompt's frames, at least `prompt_lag_frames` after
    # the prompt appeared (nobody reacts within one frame interval, ~300 ms on the page), after the
    # previous action has ended (a return to neutral), and the same action must not already have
    # happened, for `early_min_frames` frames or more, before its prompt (a one-frame blip is jitter:
    # a person who talks opens the mouth for a frame). A video made beforehand does not know the
    # schedule: measured in benchmarks/results/attacks.json (liveness/ACTIONS.md, "Timing").
    timed: bool = True
    prompt_lag_frames: int = 1
    early_min_frames: int = 2

    def drawable_actions(self) -> tuple[Action, ...]:
        """The actions a challenge may be drawn from under this configuration."""
        return tuple(a for a in Action if self.blink_in_challenges or a is not Action.BLINK)


@dataclass(frozen=True)
class ActionEvent:
    """One occurrence of an action: burst positions (0-based, inclusive) and the peak delta."""

    action: Action
    start: int
    end: int
    peak: float


@dataclass(frozen=True)
class ActionResult:
    """Outcome of one challenge check.

    matched holds, per requested action, the event that satisfied it (None from
    the first unmatched one on). reason is "" on a pass, otherwise a short
    machine-readable cause: "no_face", "missing:<ACTION>" (not in its prompt's frames, or not
    after the previous action ended), "early:<ACTION>" (it happened before its prompt).
    """

    passed: bool
    requested: tuple[Action, ...]
    matched: tuple[ActionEvent | None, ...]
    events: tuple[ActionEvent, ...] = field(default=())
    reason: str = ""


def _runs(delta: np.ndarray, threshold: float, release: float) -> list[tuple[int, int, float]]:
    """(start, end, peak) of excursions of `delta` above `threshold`, with hysteresis; NaN frames are skipped."""
    runs: list[tuple[int, int, float]] = []
    start = -1
    peak = 0.0
    last = -1
    for i, value in enumerate(delta):
        if math.isnan(value):
            continue
        if start < 0:
            if value >= threshold:
                start, peak, last = i, value, i
        elif value >= threshold * release:
            peak, last = max(peak, value), i
        else:
            runs.append((start, last, peak))
            start = -1
    if start >= 0:
        runs.append((start, last, peak))
    return runs


def _nanmedian(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(np.median(finite)) if finite.size else float("nan")


def find_events(signals: Sequence[FrameSignals], config: ActionConfig) -> list[ActionEvent]:
    """Every action event in the burst, ordered by start."""
    usable = [s.face_found and s.presence >= config.min_presence for s in signals]

    def column(name: str) -> np.ndarray:
        return np.array([getattr(s, name) if ok else np.nan for s, ok in zip(signals, usable)], dtype=np.float64)

    yaw, pitch, ear, mouth = (column(n) for n in ("yaw", "pitch", "eye_openness", "mouth_opening"))
    first = [i for i, ok in enumerate(usable) if ok][: config.baseline_frames]
    if not first:
        return []
    yaw_base, pitch_base = _nanmedian(yaw[first]), _nanmedian(pitch[first])
    ear_base = _nanmedian(ear)
    mouth_base = float(np.nanpercentile(mouth, config.mouth_baseline_percentile))

    candidates: list[tuple[Action, np.ndarray, float]] = [
        (Action.TURN_LEFT, yaw - yaw_base, config.turn_yaw_delta),
        (Action.TURN_RIGHT, yaw_base - yaw, config.turn_yaw_delta),
        (Action.NOD, pitch - pitch_base, config.nod_pitch_delta),
        # Relative closure, so the threshold does not depend on eye shape.
        (Action.BLINK, 1.0 - ear / ear_base, 1.0 - config.blink_ratio),
        (Action.OPEN_MOUTH, mouth - mouth_base, config.mouth_open_delta),
    ]
    events = [
        ActionEvent(action, start, end, float(peak))
        for action, delta, threshold in candidates
        for start, end, peak in _runs(delta, threshold, config.release)
    ]
    return sorted(events, key=lambda e: (e.start, e.end))


def prompt_starts(frame_count: int, action_count: int) -> tuple[int, ...]:
    """The burst position where each prompt begins, plus the burst's end: the capture page's schedule
    (capture.js shows prompt floor(i*K/N) at frame i, so prompt k from frame ceil(k*N/K))."""
    return tuple(-(-k * frame_count // action_count) for k in range(action_count)) + (frame_count,)


def detect_actions(
    signals: Sequence[FrameSignals], requested: Sequence[Action], config: ActionConfig = ActionConfig()
) -> ActionResult:
    """Whether every requested action occurs in the burst, in the requested order (and, when
    config.timed, in its prompt's frames: see ActionConfig).

    Matching is greedy: each requested action takes the earliest event of that
    action that starts after the event matched to the previous one (timed: inside its prompt's
    frames and after the previous one ended). Greedy is optimal for in-order (subsequence)
    matching, so this never fails a burst that some other assignment would pass.
    """
    wanted = tuple(Action(a) for a in requested)
    usable = sum(1 for s in signals if s.face_found and s.presence >= config.min_presence)
    if not signals or usable < config.min_face_fraction * len(signals):
        return ActionResult(False, wanted, (None,) * len(wanted), (), "no_face")
    events = find_events(signals, config)
    starts = prompt_starts(len(signals), max(1, len(wanted)))
    matched: list[ActionEvent | None] = []
    after = -1
    for k, action in enumerate(wanted):
        if config.timed:
            low, high = starts[k] + config.prompt_lag_frames, starts[k + 1]
            hit = next((e for e in events if e.action is action and low <= e.start < high and e.start > after), None)
        else:
            hit = next((e for e in events if e.action is action and e.start > after), None)
        if hit is None:
            matched.extend([None] * (len(wanted) - len(matched)))
            return ActionResult(False, wanted, tuple(matched), tuple(events), f"missing:{action.value}")
        matched.append(hit)
        after = hit.end if config.timed else hit.start
    if config.timed:
        for hit in (m for m in matched if m is not None):  # every one is matched by now
            early = [e for e in events if e.action is hit.action and e.start < hit.start and e not in matched
                     and e.end - e.start + 1 >= config.early_min_frames]
            if early:
                return ActionResult(False, wanted, tuple(matched), tuple(events), f"early:{hit.action.value}")
    return ActionResult(True, wanted, tuple(matched), tuple(events), "")
