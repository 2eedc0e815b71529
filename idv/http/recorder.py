"""Record mode (issue 14): the capture page saves each capture, labelled by the operator, so a site
can measure the light check on its own devices (`idv eval light DIR`).

THIS IS THE ONLY PLACE THE NODE WRITES FRAMES. The frames are biometric data of the person in
front of the camera: record mode is for an operator's calibration sessions with people who have
consented to it (and attack samples made for the purpose), is off by default, refused in
production mode and announced at start as a warning. Nothing else is kept: no ID number, no
name, no score; each capture is its frames, the light sequence the server issued for it, the
per-frame timestamps the page sent, the label the operator picked, and the coarse verdict.

Layout: `<record_dir>/<UTC time>-<random>/capture.json` plus `frame-NN.jpg`, directories 0700,
files 0600, each capture written to a temporary directory and renamed into place (a reader sees
whole captures only).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

RECORDING_VERSION = 1
# What the operator may say a capture is: a genuine person, or the presentation attack they staged.
LABELS = ("genuine", "print", "screen", "video", "synthetic", "mask")
GENUINE = "genuine"
MANIFEST = "capture.json"


class CaptureRecorder:
    def __init__(self, directory: Path):
        self._directory = directory

    @property
    def directory(self) -> Path:
        return self._directory

    def save(self, frames: Sequence[bytes | bytearray], timestamps_ms: Sequence[float],
             light: Sequence[tuple[str, int]], label: str, verdict: str, reason: str, purpose: str) -> Path:
        """Write one capture; returns its directory."""
        if label not in LABELS:
            raise ValueError(f"label {label!r} is not one of {LABELS}")
        self._directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(4)
        staging = self._directory / f".{name}.partial"
        staging.mkdir(mode=0o700)
        try:
            return self._fill(staging, name, frames, timestamps_ms, light, label, verdict, reason, purpose)
        except BaseException:
            # A failed save (disk full, permissions) must not leave frames behind in a hidden
            # directory that `idv eval light` skips and nothing else would ever delete.
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _fill(self, staging: Path, name: str, frames: Sequence[bytes | bytearray], timestamps_ms: Sequence[float],
              light: Sequence[tuple[str, int]], label: str, verdict: str, reason: str, purpose: str) -> Path:
        names = []
        for index, frame in enumerate(frames):
            names.append(f"frame-{index:02d}.jpg")
            _write_private(staging / names[-1], bytes(frame))
        manifest = {
            "version": RECORDING_VERSION,
            "label": label,
            "purpose": purpose,
            "light": [{"colour": colour, "duration_ms": int(duration)} for colour, duration in light],
            "timestamps_ms": [float(t) for t in timestamps_ms],
            "frames": names,
            "verdict": verdict,  # the node's coarse answer at the time, for comparison only
            "reason": reason,
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        _write_private(staging / MANIFEST, json.dumps(manifest, indent=1).encode())
        target = self._directory / name
        os.replace(staging, target)
        log.warning("record mode: capture saved", extra={"recording": name, "label": label})
        return target


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
