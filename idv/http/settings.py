"""The `[device]` settings section: the HTTP(S) endpoint capture devices talk to."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DeviceSettings:
    # The capture page and the upload, on their own port (e.g. 8080; 0 picks a free port; -1,
    # the default, turns them and CreateSession off). TLS with serving.tls_cert_file/tls_key_file.
    host: str = "127.0.0.1"
    port: int = -1
    # Base of capture_url as devices reach this node (e.g. https://idv.example.com:8443);
    # empty: http(s)://host:<bound port>.
    public_url: str = ""
    # Origins allowed to upload cross-origin (scheme://host[:port], TOML list or comma-separated); empty: none.
    allowed_origins: tuple[str, ...] = ()
    max_body_bytes: int = 8 * 1024 * 1024
    requests_per_minute: int = 30  # per client address
    # RECORD MODE (issue 14; operators calibrating the light check on their own devices): a directory
    # where the device endpoint SAVES EVERY CAPTURE (frames: biometric data, collected only with the
    # people's consent), labelled on the capture page; `idv eval light DIR` measures them. Unset: off,
    # the default. Refused in production mode; a warning at start says it is on.
    record_dir: Path | None = None

    @property
    def enabled(self) -> bool:
        return self.port >= 0

    @property
    def origins(self) -> tuple[str, ...]:
        return tuple(o.strip().rstrip("/") for o in self.allowed_origins if o.strip())

    def problems(self) -> list[str]:
        problems: list[str] = []
        if not self.enabled:
            if self.record_dir is not None:
                problems.append("device.record_dir (record mode) needs the device endpoint (device.port)")
            return problems
        if not (0 <= self.port <= 65535):
            problems.append(f"device.port {self.port} is not a TCP port")
        if self.public_url and not re.fullmatch(r"https?://[^\s/#?]+/?", self.public_url):
            problems.append("device.public_url must be scheme://host[:port]")
        if any(not re.fullmatch(r"https?://[^\s/#?,]+", o) for o in self.origins):
            problems.append("device.allowed_origins must list scheme://host[:port] origins")
        if self.requests_per_minute < 1:
            problems.append("device.requests_per_minute must be at least 1")
        return problems
