"""The upload's body: one capture, parsed from a bounded buffer the caller zeroes afterwards.

Wire format (what the reference page sends; `Content-Type: application/vnd.idv.capture`):

    {"timestamps_ms": [t0, t1, ...], "sizes": [n0, n1, ...]}\\n<JPEG 0><JPEG 1>...

One JSON header line (capture times in milliseconds on the device's monotonic clock, and
the byte length of each JPEG), then the JPEG bytes back to back. An attested terminal (issue 14)
adds `"terminal_id": "...", "signature": "<base64 Ed25519 signature>"` to the header: the
signature covers the capture token, the session's purpose, every frame's SHA-256 and the
timestamps (idv.security.terminals). Record mode (operators only) adds `"record_label"`. Not multipart: multipart
parsers spill large parts to temporary files, and a probe frame must never reach a disk.
Each frame is handed on as its own bytearray so it can be overwritten after the decision.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass

from idv.errors import InvalidRequest
from idv.security.terminals import TerminalAttestation

MEDIA_TYPE = "application/vnd.idv.capture"
_MAX_HEADER_BYTES = 16 * 1024


@dataclass(frozen=True)
class CaptureLimits:
    max_frames: int = 24
    max_frame_bytes: int = 512 * 1024
    # A steady capture: consecutive frames at least this far apart, the whole capture at most this long.
    min_interval_ms: float = 20.0
    max_span_ms: float = 60_000.0


@dataclass(frozen=True, eq=False, repr=False)
class Capture:
    frames: tuple[bytearray, ...]
    timestamps_ms: tuple[float, ...]
    attestation: TerminalAttestation | None = None  # an attested terminal's id and signature
    record_label: str = ""  # record mode only (idv.http.recorder): what the operator says this capture is

    def zero(self) -> None:
        for frame in self.frames:
            frame[:] = bytes(len(frame))


def parse_capture(body: bytearray, limits: CaptureLimits) -> Capture:
    """Frames and timestamps, or InvalidRequest with a stable reason. Never echoes the content."""
    newline = body.find(b"\n", 0, _MAX_HEADER_BYTES)
    if newline < 0:
        raise InvalidRequest("the upload must start with a JSON header line", "CAPTURE_FORMAT")
    try:
        header = json.loads(bytes(body[:newline]))
        if not isinstance(header, dict) or not isinstance(header["sizes"], list) \
                or not isinstance(header["timestamps_ms"], list):
            raise TypeError("header shape")
        sizes = [int(n) for n in header["sizes"]]
        stamps = [float(t) for t in header["timestamps_ms"]]
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError):
        raise InvalidRequest("the header must hold integer sizes and numeric timestamps_ms", "CAPTURE_FORMAT") from None
    attestation = _attestation(header)
    label = header.get("record_label", "")
    if not isinstance(label, str) or len(label) > 32:
        raise InvalidRequest("record_label must be a short string", "CAPTURE_FORMAT")
    if not all(math.isfinite(t) for t in stamps):
        raise InvalidRequest("timestamps_ms must be finite numbers", "CAPTURE_FORMAT")
    if not 1 <= len(sizes) <= limits.max_frames or len(stamps) != len(sizes):
        raise InvalidRequest(f"send 1 to {limits.max_frames} frames, each with one timestamp", "FRAME_COUNT")
    if any(n < 1 or n > limits.max_frame_bytes for n in sizes):
        raise InvalidRequest(f"each frame must be 1 to {limits.max_frame_bytes} bytes", "FRAME_TOO_LARGE")
    if sum(sizes) != len(body) - newline - 1:
        raise InvalidRequest("the frame sizes do not add up to the body", "CAPTURE_FORMAT")
    steps = [b - a for a, b in zip(stamps, stamps[1:])]
    if any(step < limits.min_interval_ms for step in steps) or (stamps and stamps[-1] - stamps[0] > limits.max_span_ms):
        raise InvalidRequest("frames must be captured in order at a steady rate", "CAPTURE_TIMING")
    frames = []
    offset = newline + 1
    for size in sizes:
        frames.append(body[offset:offset + size])  # a bytearray copy, zeroed by Capture.zero
        offset += size
    return Capture(tuple(frames), tuple(stamps), attestation, label)


def _attestation(header: dict) -> TerminalAttestation | None:
    terminal_id, signature = header.get("terminal_id", ""), header.get("signature", "")
    if not terminal_id and not signature:
        return None
    if not isinstance(terminal_id, str) or not isinstance(signature, str) or len(signature) > 256:
        raise InvalidRequest("terminal_id and signature must be strings (signature in base64)", "CAPTURE_FORMAT")
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("signature must be base64", "CAPTURE_FORMAT") from None
    return TerminalAttestation(terminal_id, raw)
