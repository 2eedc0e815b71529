"""Decode cost of the worst frames the header walk lets through, and of the scan bomb it refuses (issue 16).

Every frame is within the node's default limits (512 KiB, 1920x1080 pixels, at most 16
JPEG scans) unless named "refused". Each is decoded by idv.imaging.decode_frame (the
node's own path) `--repeat` times; the median and the maximum are reported. Writes
benchmarks/results/decode_cost.json (or --out).

    .venv/bin/python benchmarks/security/decode_cost.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import struct
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from idv.errors import InvalidRequest  # noqa: E402
from idv.imaging import ImageLimits, decode_frame  # noqa: E402
from tests.security.h2_attacks import scan_bomb  # noqa: E402

LIMITS = ImageLimits()


def _noise(height: int, width: int, scale: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    small = rng.integers(0, 255, (max(1, height // scale), max(1, width // scale), 3)).astype(np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)


def _largest_jpeg(height: int, width: int, progressive: bool, sampling: int) -> bytes:
    """The noisiest image whose JPEG still fits max_bytes: most entropy-coded data per pixel."""
    best = b""
    for scale in (1, 2, 3, 4, 6, 8, 12, 16):
        for quality in (100, 95, 90, 80, 70, 50):
            params = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive),
                      cv2.IMWRITE_JPEG_SAMPLING_FACTOR, sampling]
            data = cv2.imencode(".jpg", _noise(height, width, scale), params)[1].tobytes()
            if len(data) <= LIMITS.max_bytes:
                if len(data) > len(best):
                    best = data
                break
    return best


def _extra_scans(data: bytes, total: int) -> bytes:
    """Repeat the last (AC refinement) scan header until the file has `total` scans."""
    last = data.rindex(b"\xff\xda")
    (length,) = struct.unpack(">H", data[last + 2 : last + 4])
    extra = max(0, total - data.count(b"\xff\xda"))
    return data[:-2] + data[last : last + 2 + length] * extra + b"\xff\xd9"


def _largest_png(height: int, width: int) -> bytes:
    best = b""
    for scale in (1, 2, 4, 8, 16, 32, 64):
        data = cv2.imencode(".png", _noise(height, width, scale))[1].tobytes()
        if len(data) <= LIMITS.max_bytes:
            return data
    return best


def frames() -> dict[str, bytes]:
    h, w = 1080, 1920
    progressive = _largest_jpeg(h, w, True, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444)
    return {
        "jpeg_baseline_444_1920x1080_max_bytes": _largest_jpeg(h, w, False, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444),
        "jpeg_progressive_444_1920x1080_max_bytes": progressive,
        "jpeg_progressive_444_1920x1080_16_scans": _extra_scans(progressive, LIMITS.max_scans),
        "jpeg_progressive_444_1440x1440_16_scans": _extra_scans(
            _largest_jpeg(1440, 1440, True, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444), LIMITS.max_scans),
        "png_1920x1080_max_bytes": _largest_png(h, w),
        "refused_scan_bomb_1920x1080": scan_bomb(),
    }


def measure(data: bytes, repeat: int, limits: ImageLimits) -> dict[str, object]:
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        try:
            decode_frame(data, limits)
        except InvalidRequest as refused:
            seconds.append(time.perf_counter() - started)
            result: dict[str, object] = {"refused": refused.reason}
            continue
        seconds.append(time.perf_counter() - started)
        result = {"refused": None}
    result.update(bytes=len(data), scans=data.count(b"\xff\xda") if data[:2] == b"\xff\xd8" else 0,
                  median_ms=round(statistics.median(seconds) * 1000, 1), max_ms=round(max(seconds) * 1000, 1))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "decode_cost.json")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    results = {name: measure(data, args.repeat, LIMITS) for name, data in frames().items()}
    # What the bomb would cost without the scan limit (decoded once: it takes seconds).
    unlimited = ImageLimits(max_scans=10**9)
    results["scan_bomb_if_it_were_decoded"] = measure(scan_bomb(), 1, unlimited)
    legal = [r["max_ms"] for name, r in results.items() if r["refused"] is None and "if_it_were" not in name]
    report = {"limits": {"max_bytes": LIMITS.max_bytes, "max_pixels": LIMITS.max_pixels, "max_scans": LIMITS.max_scans},
              "opencv": cv2.__version__, "cpu": platform.processor() or platform.machine(),
              "worst_legal_frame_max_ms": max(legal), "frames": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
