"""The light challenge: does the face reflect the colours the screen flashed, in order and on time?

The server draws a secret sequence of screen colours and durations; the capture page shows
them full-screen while it captures, and stamps each frame with its time relative to the
sequence start. Light from the screen reaches the face (about 30-50 cm away) and much less
the background behind it, so a real face in front of that screen changes colour with each
flash; a video made beforehand, an injected recording or an animation driven by someone
elsewhere cannot follow a sequence it did not know.

Measured per frame, on chromaticity rather than brightness (auto-exposure rescales
brightness; auto-white-balance multiplies every channel by a gain, which cancels in a
difference of log channel ratios between two regions of the same frame):

    chroma_t = [log(R/G), log(B/G)] of the face's skin region
             - [log(R/G), log(B/G)] of the reference region (the frame outside the face)

Each palette colour pushes skin chroma in its own direction (red: +R/G, blue: +B/G, ...). The
expected signal is that direction for the colour on screen at each frame's time (frames just
after a change are left out: the screen and the camera's exposure straddle two colours). The
measured series is detrended (a slow AWB or exposure drift, a head moving into shade) and
compared with the expected one by normalised cross-correlation over a small latency window
(the camera delivers a frame some tens of milliseconds after the light fell on the sensor).
The check passes when the correlation AND the response amplitude (the regression slope of
measured on expected chroma, in log-chroma units) are high enough: a correlation without
amplitude is noise that happened to line up; an amplitude without correlation is a face
changing colour for another reason.

No idv imports: callers pass frames, boxes, landmarks and timestamps; nothing is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# Screen colours (sRGB, 0-1) with distinct chromaticity; white and black are left out (no chroma).
PALETTE: dict[str, tuple[float, float, float]] = {
    "RED": (1.0, 0.0, 0.0),
    "GREEN": (0.0, 1.0, 0.0),
    "BLUE": (0.0, 0.0, 1.0),
    "YELLOW": (1.0, 1.0, 0.0),
    "MAGENTA": (1.0, 0.0, 1.0),
    "CYAN": (0.0, 1.0, 1.0),
}


@dataclass(frozen=True)
class LightStep:
    colour: str  # a PALETTE name
    duration_ms: int


@dataclass(frozen=True)
class LightConfig:
    min_flashes: int = 6
    max_flashes: int = 10
    min_duration_ms: int = 250
    max_duration_ms: int = 400
    # Frames this soon after a colour change are not used (screen refresh + exposure straddling).
    settle_ms: float = 80.0
    # The camera's delivery latency searched for the best alignment (ms, from 0 up to this).
    max_latency_ms: float = 200.0
    latency_step_ms: float = 20.0
    # At least this many usable frames inside the sequence, and every colour seen at least once...
    min_frames: int = 10
    # Pass thresholds. FROM SIMULATION (benchmarks/accuracy/light_sim.py, calibration clips) until
    # field recordings exist: see benchmarks/README.md, "Light challenge".
    min_correlation: float = 0.42
    # A physical floor set a priori, not tuned: a 0.3% change of skin chroma per unit of expected direction.
    min_amplitude: float = 0.003

    def problems(self) -> list[str]:
        problems: list[str] = []
        if not (2 <= self.min_flashes <= self.max_flashes <= 20):
            problems.append("light: 2 <= min_flashes <= max_flashes <= 20")
        if not (100 <= self.min_duration_ms <= self.max_duration_ms <= 2000):
            problems.append("light: 100 <= min_duration_ms <= max_duration_ms <= 2000")
        if not (-1 < self.min_correlation < 1) or self.min_amplitude < 0:
            problems.append("light: min_correlation in (-1, 1), min_amplitude >= 0")
        return problems


@dataclass(frozen=True)
class LightEvidence:
    """For the audit only: never returned to a caller."""

    correlation: float
    amplitude: float
    latency_ms: float
    frames_used: int
    passed: bool


def draw_sequence(config: LightConfig, randbelow: Callable[[int], int]) -> tuple[LightStep, ...]:
    """A random sequence (pass `secrets.randbelow`); consecutive colours differ."""
    names = sorted(PALETTE)
    count = config.min_flashes + randbelow(config.max_flashes - config.min_flashes + 1)
    steps: list[LightStep] = []
    while len(steps) < count:
        colour = names[randbelow(len(names))]
        if steps and steps[-1].colour == colour:
            continue
        duration = config.min_duration_ms + randbelow(config.max_duration_ms - config.min_duration_ms + 1)
        steps.append(LightStep(colour, duration))
    return tuple(steps)


def sequence_duration_ms(sequence: Sequence[LightStep]) -> float:
    return float(sum(step.duration_ms for step in sequence))


def expected_direction(colour: str) -> np.ndarray:
    """The unit direction in (log R/G, log B/G) a flash of this colour pushes skin chroma."""
    r, g, b = PALETTE[colour]
    direction = np.array([r - g, b - g], dtype=np.float64)
    norm = float(np.linalg.norm(direction))
    return direction / norm if norm > 0 else direction


def _mean_rgb(pixels: np.ndarray) -> np.ndarray:
    return pixels.reshape(-1, 3).astype(np.float64).mean(axis=0)[::-1]  # BGR -> RGB


def frame_chroma(frame_bgr: np.ndarray, box_xywh: tuple[float, float, float, float],
                 landmarks: np.ndarray) -> np.ndarray:
    """Skin-minus-reference log-chroma of one frame: [dlog(R/G), dlog(B/G)].

    Skin: the region between the eyes and the mouth corners (cheeks and nose: no hair, no
    eyes, little beard), from the 5 landmarks. Reference: the frame outside the face box
    widened by half (background, far from the screen).
    """
    height, width = frame_bgr.shape[:2]
    points = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    eyes, mouth = points[:2], points[3:5]
    left = int(max(min(eyes[:, 0].min(), mouth[:, 0].min()), 0))
    right = int(min(max(eyes[:, 0].max(), mouth[:, 0].max()), width - 1)) + 1
    top = int(max(eyes[:, 1].mean(), 0))
    bottom = int(min(mouth[:, 1].mean(), height - 1)) + 1
    if right - left < 4 or bottom - top < 4:
        raise ValueError("the face's skin region is too small")
    skin = _mean_rgb(frame_bgr[top:bottom, left:right])
    x, y, w, h = box_xywh
    mask = np.ones((height, width), dtype=bool)
    mask[max(int(y - h / 2), 0):min(int(y + 1.5 * h), height), max(int(x - w / 2), 0):min(int(x + 1.5 * w), width)] = False
    if mask.sum() < 0.05 * height * width:  # the face fills the frame: use the outer border
        mask[:] = False
        border = max(height, width) // 20 + 1
        mask[:border, :] = mask[-border:, :] = True
    reference = frame_bgr[mask].astype(np.float64).mean(axis=0)[::-1]
    skin, reference = np.maximum(skin, 1.0), np.maximum(reference, 1.0)
    return np.array([np.log(skin[0] / skin[1]) - np.log(reference[0] / reference[1]),
                     np.log(skin[2] / skin[1]) - np.log(reference[2] / reference[1])])


def expected_signal(timestamps_ms: np.ndarray, sequence: Sequence[LightStep], latency_ms: float,
                    settle_ms: float) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: the expected chroma direction (zero outside the sequence), and whether the frame
    is usable (not within settle_ms after a change of colour, light seen `latency_ms` late)."""
    starts = np.cumsum([0.0] + [float(s.duration_ms) for s in sequence])
    seen_at = np.asarray(timestamps_ms, dtype=np.float64) - latency_ms
    expected = np.zeros((len(seen_at), 2))
    usable = np.ones(len(seen_at), dtype=bool)
    for index, t in enumerate(seen_at):
        since_change = t - starts[np.searchsorted(starts, t, side="right") - 1] if t >= 0 else -t
        if 0 <= t < starts[-1]:
            step = int(np.searchsorted(starts, t, side="right") - 1)
            expected[index] = expected_direction(sequence[step].colour)
        elif t >= starts[-1]:
            since_change = t - starts[-1]
        if 0 <= since_change < settle_ms and t >= 0:
            usable[index] = False
    return expected, usable


def _detrended(values: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Each column minus its least-squares line over time (slow drift out, flashes kept)."""
    design = np.stack([np.ones_like(times), (times - times.mean()) / max(float(np.ptp(times)), 1.0)], axis=1)
    coefficients, *_ = np.linalg.lstsq(design, values, rcond=None)
    return values - design @ coefficients


def analyse(chroma: np.ndarray, timestamps_ms: Sequence[float], sequence: Sequence[LightStep],
            config: LightConfig) -> LightEvidence:
    """Does the chroma series (one row per frame, from `frame_chroma`) follow the sequence?"""
    chroma = np.asarray(chroma, dtype=np.float64).reshape(-1, 2)
    times = np.asarray(timestamps_ms, dtype=np.float64)
    if len(times) != len(chroma) or len(times) < 3 or not sequence:
        return LightEvidence(0.0, 0.0, 0.0, 0, False)
    best = LightEvidence(-1.0, 0.0, 0.0, 0, False)
    latencies = np.arange(0.0, config.max_latency_ms + 1e-9, config.latency_step_ms)
    for latency in latencies:
        expected, usable = expected_signal(times, sequence, float(latency), config.settle_ms)
        inside = usable & (np.abs(expected).sum(axis=1) > 0)
        if inside.sum() < config.min_frames:
            continue
        measured = _detrended(chroma[usable], times[usable])
        target = _detrended(expected[usable], times[usable])
        denominator = float(np.sqrt((measured ** 2).sum() * (target ** 2).sum()))
        if denominator <= 0:
            continue
        correlation = float((measured * target).sum() / denominator)
        amplitude = float((measured * target).sum() / max(float((target ** 2).sum()), 1e-12))
        if correlation > best.correlation:
            best = LightEvidence(correlation, amplitude, float(latency), int(usable.sum()), False)
    passed = best.correlation >= config.min_correlation and best.amplitude >= config.min_amplitude
    return LightEvidence(round(best.correlation, 4), round(best.amplitude, 5), best.latency_ms, best.frames_used,
                         passed)
