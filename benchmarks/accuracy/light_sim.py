"""The light challenge, measured honestly without real flash captures: a physical simulation on real clips.

No public data set of captures under a flashing screen exists here, so the screen's light is
added to real live clips (../shared/testdata/video: real people moving, talking, turning):

  * reflected light: in linear RGB, the face (a soft ellipse on the detected face box; 6% of
    it spills onto the background) gains `level x face brightness x skin albedo x screen colour`.
    `level` is the reflected light of a full-white screen as a fraction of the face's ambient
    brightness: level = E_screen / E_ambient, with E_screen ~ L x A / d^2 (screen luminance
    L cd/m^2, area A m^2, distance d m). A 6" phone (A ~ 0.0094 m^2) at full brightness
    (500 cd/m^2) 30 cm from the face gives ~52 lux: 10% of a 500-lux office, 3% of a
    bright window-lit room (1500 lux), 50% of a dim room (100 lux). Skin albedo per capture:
    a random skin tone (R > G > B, light to dark).
  * the camera: the screen's colour at exposure time (a 33 ms exposure straddles changes),
    a delivery latency of 30-120 ms, auto-exposure rescaling brightness toward its target
    with a lag, auto-white-balance gains drifting slowly and reacting to the frame's mean
    colour with a lag, Poisson-Gaussian sensor noise, 8-bit sRGB, JPEG (quality 60-90).
  * timing as the capture page does it: 24 frames, the first ones before the sequence starts
    (unlit baseline), per-frame timestamps with jitter.

Attacks (must fail): the same clips processed the same way WITHOUT reflections (a recording or
an injected video: it cannot follow a sequence it does not know); reflections of ANOTHER random
sequence (a capture made for another challenge); the issued sequence SHIFTED in time by 0.5-1.5
flashes (a relay that reacts too late).

Clips are split by a hash of their name into calibration and report halves: the thresholds are
chosen on calibration clips only (highest attack correlation there + margin), BPCER/APCER are
reported on the report clips. Writes benchmarks/results/light_sim.json.

    python benchmarks/accuracy/light_sim.py [--captures 4]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import secrets
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from idv.face.detector import YuNetDetector  # noqa: E402
from idv.models.manifest import load_manifest  # noqa: E402
from idv.models.pull import pull_models  # noqa: E402
from idv.models.runtime import RuntimeOptions, open_session  # noqa: E402
from liveness.light import PALETTE, LightConfig, LightStep, analyse, draw_sequence, frame_chroma  # noqa: E402

log = logging.getLogger("light_sim")
FRAMES = 24
BASELINE_MS = 400.0
TAIL_MS = 200.0
CLIPS = ["live_d0.mp4", "live_d3.mp4", "live_d6.mp4", "live_d9.mp4", "live_d10.mp4", "live_d12.mp4",
         "live_d14.mp4", "replay_pair_real.webm"]
LEVELS = [0.005, 0.01, 0.02, 0.03, 0.04, 0.06, 0.08, 0.12]


@dataclasses.dataclass(frozen=True)
class Camera:
    name: str
    read_noise: float  # linear units (0-1)
    shot_noise: float  # variance per unit of signal
    jpeg_quality: tuple[int, int]
    awb_drift: float  # per-channel gain wander over the capture (fraction)
    awb_reaction: float  # share of the frame's colour cast the AWB removes (lagged)
    ae_reaction: float  # share of a brightness change the auto-exposure removes (lagged)


CAMERAS = [
    Camera("good", 0.004, 0.0005, (80, 91), 0.02, 0.3, 0.5),
    Camera("harsh", 0.012, 0.002, (60, 71), 0.06, 0.6, 0.8),
]


def half(name: str) -> str:
    return "calibration" if hashlib.sha256(name.encode()).digest()[0] % 2 == 0 else "report"


def to_linear(image: np.ndarray) -> np.ndarray:
    return (image.astype(np.float32) / 255.0) ** 2.2


def to_srgb(linear: np.ndarray) -> np.ndarray:
    return (np.clip(linear, 0, 1) ** (1 / 2.2) * 255.0 + 0.5).astype(np.uint8)


def screen_at(t: float, sequence: tuple[LightStep, ...]) -> np.ndarray:
    """The screen's linear RGB at time t (ms from the sequence start): black outside the sequence."""
    if t < 0:
        return np.zeros(3)
    start = 0.0
    for step in sequence:
        if t < start + step.duration_ms:
            return np.array(PALETTE[step.colour], dtype=np.float64)
        start += step.duration_ms
    return np.zeros(3)


def face_mask(shape: tuple[int, int], box: tuple[float, float, float, float]) -> np.ndarray:
    h, w = shape
    x, y, bw, bh = box
    mask = np.zeros((h, w), np.float32)
    cv2.ellipse(mask, (int(x + bw / 2), int(y + bh / 2)), (int(bw * 0.55), int(bh * 0.65)), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), max(bw, bh) * 0.08)
    return np.maximum(mask, 0.06)  # a little light reaches the background too


@dataclasses.dataclass(frozen=True, eq=False)
class Prepared:
    """A capture's frames in linear light with their face masks, computed once for every condition."""

    linears: list[np.ndarray]
    masks: list[np.ndarray]
    face_levels: list[float]


def prepare(frames: list[np.ndarray], boxes: list) -> Prepared:
    linears = [to_linear(frame) for frame in frames]
    masks = [face_mask(frame.shape[:2], box) for frame, box in zip(frames, boxes)]
    levels = [float((lin.mean(axis=2) * m).sum() / m.sum()) for lin, m in zip(linears, masks)]
    return Prepared(linears, masks, levels)


def simulate(prepared: Prepared, times: np.ndarray, light: tuple[LightStep, ...] | None,
             level: float, albedo: np.ndarray, camera: Camera, rng: np.random.Generator,
             shift_ms: float = 0.0) -> list[np.ndarray]:
    latency = rng.uniform(30, 120)
    gains = np.ones(3)
    exposure = 1.0
    awb_walk = np.ones(3)
    out = []
    last_t = None
    for linear, mask, face_level, t in zip(prepared.linears, prepared.masks, prepared.face_levels, times):
        if light is not None and level > 0:
            seen = t - latency - shift_ms
            screen = np.mean([screen_at(seen - k * 11.0, light) for k in range(3)], axis=0)  # 33 ms exposure
            added = level * face_level * (albedo / albedo.mean()) * screen
            linear = linear + mask[..., None] * added[None, None, ::-1].astype(np.float32)  # RGB -> BGR order
        # Camera control with a lag (time constant ~300 ms).
        step = 1.0 if last_t is None else 1 - np.exp(-(t - last_t) / 300.0)
        last_t = t
        mean_bgr = linear.reshape(-1, 3).mean(axis=0) + 1e-6
        target_gains = (mean_bgr.mean() / mean_bgr) ** camera.awb_reaction
        gains = gains + step * (target_gains - gains)
        target_exposure = (0.18 / max(float(mean_bgr.mean()), 1e-3)) ** camera.ae_reaction
        exposure = exposure + step * (target_exposure - exposure)
        awb_walk = awb_walk * np.exp(rng.normal(0, camera.awb_drift / 4, 3))
        linear = linear * (gains * awb_walk * exposure / (0.18 / max(face_level, 1e-3)) ** camera.ae_reaction)[None, None, :]
        noise = rng.normal(0, 1, linear.shape).astype(np.float32)
        linear = linear + noise * np.sqrt(camera.read_noise ** 2 + camera.shot_noise * np.clip(linear, 0, 1))
        quality = int(rng.integers(*camera.jpeg_quality))
        encoded = cv2.imencode(".jpg", to_srgb(linear), [cv2.IMWRITE_JPEG_QUALITY, quality])[1]
        out.append(cv2.imdecode(encoded, cv2.IMREAD_COLOR))
    return out


def clip_frames(path: Path, limit_s: float = 15.0) -> tuple[list[np.ndarray], float]:
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    frames = []
    while len(frames) < limit_s * fps:
        ok, frame = capture.read()
        if not ok:
            break
        scale = 360.0 / max(frame.shape[:2])
        frames.append(cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else frame)
    capture.release()
    return frames, fps


def random_albedo(rng: np.random.Generator) -> np.ndarray:
    """Skin reflectance (R, G, B): light to dark tones, always R > G > B."""
    darkness = rng.uniform(0, 1)
    return np.array([0.62 - 0.35 * darkness, 0.45 - 0.30 * darkness, 0.36 - 0.26 * darkness])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("IDV_SHARED_DIR", REPO.parent / "shared")))
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "idv" / "models")
    parser.add_argument("--captures", type=int, default=4, help="captures per clip and condition")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "light_sim.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    manifest = load_manifest()
    pull_models(manifest, ["yunet"], args.cache, mirror=Path(os.environ.get("IDV_MODEL_MIRROR", args.shared / "models")),
                allow_network=False)
    detector = YuNetDetector(open_session(manifest.entry("yunet"), args.cache, RuntimeOptions(intra_op_threads=1)))
    rng = np.random.default_rng(args.seed)
    config = LightConfig()
    draw = lambda n: int(rng.integers(n))  # noqa: E731  (reproducible here; the server uses secrets)

    rows = []
    for clip in CLIPS:
        frames, fps = clip_frames(args.shared / "testdata" / "video" / clip)
        split = half(clip)
        for capture in range(args.captures):
            sequence = draw_sequence(config, draw)
            total = BASELINE_MS + sum(s.duration_ms for s in sequence) + TAIL_MS
            interval = total / FRAMES
            times = -BASELINE_MS + np.arange(FRAMES) * interval + rng.normal(0, 8, FRAMES)
            times = np.maximum.accumulate(times)
            start = int(rng.integers(0, max(len(frames) - int(total / 1000 * fps) - 2, 1)))
            picked = [frames[min(start + int((t + BASELINE_MS) / 1000 * fps), len(frames) - 1)] for t in times]
            boxes, marks = [], []
            for frame in picked:
                faces = detector.detect(frame)
                if not faces:
                    break
                face = max(faces, key=lambda f: f.width * f.height)
                boxes.append(face.box_xywh)
                marks.append(face.landmarks)
            if len(boxes) < len(picked):
                continue  # the pipeline would answer NO_FACE
            albedo = random_albedo(rng)
            prepared = prepare(picked, boxes)

            def measure(captured: list[np.ndarray]) -> dict:
                chroma = np.array([frame_chroma(f, b, m) for f, b, m in zip(captured, boxes, marks)])
                evidence = analyse(chroma, times, sequence, config)
                return {"correlation": evidence.correlation, "amplitude": evidence.amplitude}

            for camera in CAMERAS:
                for level in LEVELS:
                    result = measure(simulate(prepared, times, sequence, level, albedo, camera, rng))
                    rows.append({"clip": clip, "split": split, "kind": "genuine", "camera": camera.name,
                                 "level": level, **result})
                attack_level = 0.06
                attacks = {
                    "no_reflection": simulate(prepared, times, None, 0.0, albedo, camera, rng),
                    "other_sequence": simulate(prepared, times, draw_sequence(config, draw), attack_level,
                                               albedo, camera, rng),
                    # Beyond the camera latency the check tolerates (max_latency_ms): a shift inside it
                    # cannot be told from a slow camera, by construction.
                    "shifted": simulate(prepared, times, sequence, attack_level, albedo, camera, rng,
                                        shift_ms=config.max_latency_ms + float(rng.uniform(100, 600))),
                }
                for kind, captured in attacks.items():
                    rows.append({"clip": clip, "split": split, "kind": kind, "camera": camera.name,
                                 "level": attack_level if kind != "no_reflection" else 0.0, **measure(captured)})
        log.info("%s (%s): %d rows so far", clip, split, len(rows))

    # The correlation threshold is chosen on calibration clips only: the highest attack correlation
    # there plus a margin. The amplitude floor is physical, set a priori (a 0.3% change of skin
    # chroma), not tuned. Report clips are judged with exactly these.
    calibration_attacks = [r for r in rows if r["split"] == "calibration" and r["kind"] != "genuine"]
    chosen_correlation = round(max(r["correlation"] for r in calibration_attacks) + 0.05, 2)
    chosen_amplitude = config.min_amplitude

    def passes(r: dict, correlation: float = chosen_correlation, amplitude: float = chosen_amplitude) -> bool:
        return r["correlation"] >= correlation and r["amplitude"] >= amplitude

    report: dict = {
        "what": "light challenge on simulated screen reflections added to real live clips (see the script's docstring)",
        "thresholds_chosen_on_calibration": {"min_correlation": chosen_correlation, "min_amplitude": chosen_amplitude},
        "thresholds_shipped_at_run_time": {"min_correlation": config.min_correlation,
                                           "min_amplitude": config.min_amplitude},
        "clips": {split: sorted({r["clip"] for r in rows if r["split"] == split}) for split in ("calibration", "report")},
        "bpcer_by_level": {},
        "apcer": {},
        "weakest_level_bpcer_le_5pct": {},
    }
    for split in ("calibration", "report"):
        for camera in CAMERAS:
            table = {}
            for level in LEVELS:
                group = [r for r in rows if r["split"] == split and r["kind"] == "genuine" and r["camera"] == camera.name
                         and r["level"] == level]
                failing = sum(not passes(r) for r in group)
                table[f"{level * 100:g}%"] = {"captures": len(group), "failing": failing,
                                              "bpcer": round(failing / len(group), 4) if group else None,
                                              "median_correlation": round(float(np.median([r["correlation"] for r in group])), 3)
                                              if group else None}
            report["bpcer_by_level"][f"{split}/{camera.name}"] = table
            weakest = next((level for level in LEVELS
                            if table[f"{level * 100:g}%"]["bpcer"] is not None and table[f"{level * 100:g}%"]["bpcer"] <= 0.05
                            and all(table[f"{h * 100:g}%"]["bpcer"] <= 0.05 for h in LEVELS if h >= level)), None)
            report["weakest_level_bpcer_le_5pct"][f"{split}/{camera.name}"] = (
                f"{weakest * 100:g}% of face brightness" if weakest is not None else "none in the grid")
        for kind in ("no_reflection", "other_sequence", "shifted"):
            group = [r for r in rows if r["split"] == split and r["kind"] == kind]
            accepted = sum(passes(r) for r in group)
            report["apcer"][f"{split}/{kind}"] = {"attacks": len(group), "accepted": accepted,
                                                  "apcer": round(accepted / len(group), 4) if group else None,
                                                  "max_correlation": round(max(r["correlation"] for r in group), 3)
                                                  if group else None}
    report["failing_genuine_at_6pct_and_above"] = [
        {k: r[k] for k in ("clip", "split", "camera", "level", "correlation", "amplitude")}
        for r in rows if r["kind"] == "genuine" and r["level"] >= 0.06 and not passes(r)]
    if (chosen_correlation, chosen_amplitude) != (config.min_correlation, config.min_amplitude):
        log.warning("liveness.light.LightConfig ships other thresholds than chosen here: update it")
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    log.info(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
