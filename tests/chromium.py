"""Real headless Chromium (Debian's chromium + chromium-driver) with a fake camera fed from a Y4M file.

.ci/run installs both packages; a missing browser is a failure, never a skip.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def write_y4m(path: Path, frames: Iterable[np.ndarray], fps: int) -> int:
    """BGR frames (all one size, even width and height) as a 4:2:0 YUV4MPEG2 file; returns the frame count."""
    count = 0
    with path.open("wb") as out:
        for frame in frames:
            height, width = frame.shape[:2]
            if count == 0:
                out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
            out.write(b"FRAME\n")
            out.write(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())  # Y, then U, then V planes
            count += 1
    return count


def chromium_driver(fake_video: Path, width: int = 412, height: int = 860):
    """A Selenium-driven headless Chromium whose camera plays `fake_video` (looping) from its start."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        raise AssertionError(f"{missing} missing: apt-get install chromium chromium-driver (.ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-video-capture={fake_video}", f"--window-size={width},{height}",
                 "--lang=zh-CN"):
        options.add_argument(flag)
    service = Service(executable_path=str(CHROMEDRIVER))
    return webdriver.Chrome(options=options, service=service)

