"""Frame bursts cut from ../shared/testdata for liveness calibration and tests.

A Verify request carries a burst of 2..8 frames taken over about half a
second. Bursts are cut to match:

* NUAA (training split): a sequence is the frames sharing `ID_glasses_pos_session`;
  consecutive listed frames (every second camera frame) form non-overlapping bursts.
  live/ -> bona fide; print/ -> species "print".
* replay/: face crops of a phone-screen replay (fake/, species "screen") and the
  same people live (real/). The crops are tight, so each is padded onto a neutral
  canvas before detection (measured: the detector misses most unpadded crops);
  that padding is the same for both classes.
* video/: clips decoded with cv2.VideoCapture; every third frame (about 100 ms
  at 30 fps). live_d*.mp4 and replay_pair_real.webm -> bona fide;
  replay_pair_screen.webm -> species "screen".
* "still": one frame of a bona fide burst repeated: byte-identical, re-encoded as
  JPEG, with added noise, or with brightness varied per copy (the cheapest fake bursts).

Subjects are used for the held-out split: NUAA subject id, "replay" for the
replay crops, the clip name for videos (the replay pair clips split in two halves
in time, `_a` and `_b`, because there is only one screen clip).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

BONA_FIDE = "bona_fide"
BURST_LEN = 5
VIDEO_STEP = 3
_NUAA_NAME = re.compile(r"^(\d{4})_(\d{2})_(\d{2})_(\d{2})_(\d+)\.jpg$")


@dataclass(frozen=True, eq=False)
class Burst:
    name: str
    species: str  # BONA_FIDE | print | screen | still
    subject: str
    source: str  # nuaa | replay | video | still
    frames: tuple[np.ndarray, ...]


def nuaa_sequences(root: Path, kind: str) -> dict[str, list[Path]]:
    sequences: dict[str, list[tuple[int, Path]]] = defaultdict(list)
    for path in (root / "nuaa" / kind).glob("*/*.jpg"):
        match = _NUAA_NAME.match(path.name)
        if match:
            sequences["_".join(match.groups()[:4])].append((int(match.group(5)), path))
    return {key: [p for _, p in sorted(frames)] for key, frames in sorted(sequences.items())}


def nuaa_bursts(root: Path, kind: str, burst_len: int = BURST_LEN) -> Iterator[Burst]:
    species = BONA_FIDE if kind == "live" else "print"
    for key, paths in nuaa_sequences(root, kind).items():
        for start in range(0, len(paths) - burst_len + 1, burst_len):
            frames = tuple(cv2.imread(str(p)) for p in paths[start : start + burst_len])
            yield Burst(f"nuaa/{kind}/{key}@{start}", species, key[:4], "nuaa", frames)


def pad_crop(crop: np.ndarray) -> np.ndarray:
    """A tight face crop centred on a mid-grey canvas twice its size."""
    h, w = crop.shape[:2]
    canvas = np.full((2 * h, 2 * w, 3), 127, dtype=np.uint8)
    canvas[h // 2 : h // 2 + h, w // 2 : w // 2 + w] = crop
    return canvas


def replay_bursts(root: Path, kind: str, burst_len: int = BURST_LEN) -> Iterator[Burst]:
    species = BONA_FIDE if kind == "real" else "screen"
    paths = sorted((root / "replay" / kind).glob("*.png"), key=lambda p: int(p.stem))
    for start in range(0, len(paths) - burst_len + 1, burst_len):
        crops = [cv2.imread(str(p)) for p in paths[start : start + burst_len]]
        # A burst is one camera's frames: bring the crops to one size before padding.
        h, w = crops[0].shape[:2]
        frames = tuple(pad_crop(cv2.resize(c, (w, h), interpolation=cv2.INTER_AREA)) for c in crops)
        yield Burst(f"replay/{kind}@{start}", species, "replay", "replay", frames)


def video_frames(path: Path, step: int = VIDEO_STEP, limit: int = 400) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    index = 0
    try:
        while len(frames) < limit:
            ok, frame = capture.read()
            if not ok:
                break
            if index % step == 0:
                frames.append(frame)
            index += 1
    finally:
        capture.release()
    return frames


def video_bursts(root: Path, burst_len: int = BURST_LEN) -> Iterator[Burst]:
    for path in sorted((root / "video").iterdir()):
        if path.suffix not in {".mp4", ".webm"}:
            continue
        species = "screen" if "screen" in path.stem else BONA_FIDE
        frames = video_frames(path)
        for start in range(0, len(frames) - burst_len + 1, burst_len):
            subject = path.stem
            if path.stem.startswith("replay_pair"):
                # The only screen clip (and its live twin): first half and second half are kept
                # apart so one can calibrate while the other is held out.
                subject += "_a" if start < len(frames) // 2 else "_b"
            yield Burst(f"video/{path.name}@{start}", species, subject, "video", tuple(frames[start : start + burst_len]))


def _reencode(image: np.ndarray, rng: np.random.Generator, noise: float, quality: tuple[int, int]) -> np.ndarray:
    noisy = np.clip(image.astype(np.float32) + rng.normal(0, noise, image.shape), 0, 255).astype(np.uint8)
    _, jpeg = cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(*quality))])
    return cv2.imdecode(jpeg, cv2.IMREAD_COLOR)


def _relit(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    gain, offset = rng.uniform(0.85, 1.15), rng.uniform(-12, 12)
    return np.clip(image.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)


def still_bursts(bona_fide: list[Burst], seed: int = 0, burst_len: int = BURST_LEN) -> Iterator[Burst]:
    """For each bona fide burst, its first frame repeated: byte-identical; re-encoded per copy
    (JPEG quality 60..95, faint noise); with strong added noise (sigma 6) per copy; and with
    its brightness and contrast changed per copy."""
    rng = np.random.default_rng(seed)
    for burst in bona_fide:
        still = burst.frames[0]
        variants = {
            "exact": (still,) * burst_len,
            "reencoded": tuple(_reencode(still, rng, 1.5, (60, 96)) for _ in range(burst_len)),
            "noisy": tuple(_reencode(still, rng, 6.0, (85, 96)) for _ in range(burst_len)),
            "brightness": tuple(_reencode(_relit(still, rng), rng, 1.5, (80, 96)) for _ in range(burst_len)),
        }
        for variant, frames in variants.items():
            yield Burst(f"still-{variant}/{burst.name}", "still", burst.subject, "still", frames)


def all_bursts(root: Path) -> list[Burst]:
    bursts = [
        *nuaa_bursts(root, "live"),
        *nuaa_bursts(root, "print"),
        *replay_bursts(root, "real"),
        *replay_bursts(root, "fake"),
        *video_bursts(root),
    ]
    bona_fide = [b for b in bursts if b.species == BONA_FIDE]
    return bursts + list(still_bursts(bona_fide))
