"""Hostile gRPC peers made of raw HTTP/2 frames (the `h2` library), for tests and benchmarks/security.

Each attacker connects from its own loopback source address (127.0.0.2, ...), so the node
sees it as another peer than the genuine client on 127.0.0.1, as on a real network.
A pump thread per connection answers the node's PINGs and SETTINGS (as a real, patient
attacker would) and feeds request bytes as HTTP/2 flow control allows.
"""

from __future__ import annotations

import re
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

import cv2
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import numpy as np

VERIFY_PATH = "/idv.v1.IdentityVerification/Verify"


@dataclass
class StreamState:
    to_send: memoryview = memoryview(b"")  # shared between streams: never copied per stream
    sent: int = 0
    ended: bool = False  # the node answered (trailers) or reset it
    status: str | None = None


@dataclass
class RawConnection:
    """One TCP connection speaking HTTP/2 to the node, driven by its own pump thread."""

    host: str
    port: int
    source: str = "127.0.0.2"
    streams: dict[int, StreamState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sock = socket.create_connection((self.host, self.port), timeout=5, source_address=(self.source, 0))
        self.sock.setblocking(False)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.h2.initiate_connection()
        self._lock = threading.Lock()
        self.closed = False
        self._stop = threading.Event()
        self._flush()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def open_stream(self, path: str = VERIFY_PATH, metadata: tuple[tuple[str, str], ...] = (),
                    body: bytes = b"") -> int | None:
        """HEADERS (no END_STREAM) and then as much of `body` as flow control lets through, never its end.

        Pass the same `body` object to many streams: it is referenced, not copied."""
        headers = [(":method", "POST"), (":scheme", "http"), (":path", path),
                   (":authority", f"{self.host}:{self.port}"), ("content-type", "application/grpc"),
                   ("te", "trailers"), *metadata]
        with self._lock:
            if self.closed:
                return None
            try:
                stream_id = self.h2.get_next_available_stream_id()
                self.h2.send_headers(stream_id, headers, end_stream=False)
            except (h2.exceptions.ProtocolError, h2.exceptions.TooManyStreamsError):
                return None
            self.streams[stream_id] = StreamState(to_send=memoryview(body))
            self._feed()
            self._flush()
        return stream_id

    def open_streams(self) -> int:
        with self._lock:
            return sum(1 for s in self.streams.values() if not s.ended)

    def bytes_sent(self) -> int:
        with self._lock:
            return sum(s.sent for s in self.streams.values())

    def _feed(self) -> None:
        for stream_id, state in self.streams.items():
            if state.ended or state.sent >= len(state.to_send):
                continue
            try:
                window = min(self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size)
            except (h2.exceptions.StreamClosedError, h2.exceptions.NoSuchStreamError):
                state.ended = True
                continue
            while window > 0 and state.sent < len(state.to_send):
                chunk = bytes(state.to_send[state.sent : state.sent + window])  # one frame's worth
                self.h2.send_data(stream_id, chunk, end_stream=False)
                state.sent += len(chunk)
                window = min(self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size)

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        while data and not self.closed:
            try:
                sent = self.sock.send(data)
                data = data[sent:]
            except BlockingIOError:
                select.select([], [self.sock], [], 0.5)
            except OSError:
                self.closed = True

    def _pump(self) -> None:
        while not self._stop.is_set() and not self.closed:
            readable, _, _ = select.select([self.sock], [], [], 0.2)
            if not readable:
                continue
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            with self._lock:
                if not data:
                    self.closed = True
                    for state in self.streams.values():
                        state.ended = True
                    return
                try:
                    events = self.h2.receive_data(data)
                except h2.exceptions.ProtocolError:
                    self.closed = True
                    return
                for event in events:
                    ended = isinstance(event, h2.events.StreamEnded | h2.events.StreamReset)
                    if ended and event.stream_id in self.streams:
                        self.streams[event.stream_id].ended = True
                    elif isinstance(event, h2.events.TrailersReceived | h2.events.ResponseReceived):
                        status = dict(event.headers).get("grpc-status")
                        if status is not None and event.stream_id in self.streams:
                            self.streams[event.stream_id].status = status
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        self.closed = True
                    elif isinstance(event, h2.events.DataReceived):
                        self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                self._feed()  # WINDOW_UPDATEs may have opened room for more body bytes
                self._flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        try:
            self.sock.close()
        except OSError:
            pass


def grpc_message_prefix(declared_length: int) -> bytes:
    """gRPC length-prefixed message header: uncompressed, `declared_length` bytes follow."""
    return struct.pack(">BI", 0, declared_length)


def partial_body(declared_length: int, fraction: float = 0.9) -> bytes:
    """The first `fraction` of a request that declares `declared_length` bytes (the rest never comes).

    Make it once and share it between streams (a 12 MiB body per stream would exhaust the attacker first)."""
    return grpc_message_prefix(declared_length) + b"\x0a" * int(declared_length * fraction)


def idle_connections(host: str, port: int, count: int, source: str = "127.0.0.3",
                     preface: bool = True) -> list[socket.socket]:
    """TCP connections that send the HTTP/2 preface (or nothing) and then stay silent."""
    opened = []
    for _ in range(count):
        try:
            sock = socket.create_connection((host, port), timeout=2, source_address=(source, 0))
        except OSError:
            continue
        if preface:
            try:
                sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            except OSError:
                pass
        opened.append(sock)
    return opened


def scan_bomb(target_bytes: int = 500 * 1024, width: int = 1920, height: int = 1080) -> bytes:
    """A progressive JPEG whose last scan header is repeated until the file is `target_bytes` long.

    Every repeat is a legal SOS segment with empty entropy data: the decoder warns, then walks the
    whole coefficient buffer again for each one (about 0.25 ms per scan at 1920x1080).
    """
    rng = np.random.default_rng(0)
    image = cv2.resize(rng.integers(0, 255, (height // 8, width // 8, 3)).astype(np.uint8), (width, height))
    data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 50, cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    last = [m.start() for m in re.finditer(rb"\xff\xda", data)][-1]
    (length,) = struct.unpack(">H", data[last + 2 : last + 4])
    scan = data[last : last + 2 + length]
    repeats = max(0, (target_bytes - len(data)) // len(scan))
    return data[:-2] + scan * repeats + b"\xff\xd9"


def process_rss_bytes(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def process_fds(pid: int) -> int:
    import os

    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_until(predicate, seconds: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
