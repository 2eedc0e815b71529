"""The connection front (idv/front.py) on real loopback sockets: caps, timeouts, the peer map, fds.

The server behind it is a plain TCP server on its own port that answers each connection with
the port it sees the connection come from and then echoes; clients connect from other
loopback source addresses (127.0.0.5, ...) as other hosts would. The node-level tests (a
real node under attack, a genuine client served meanwhile) are in
tests/security/test_hostile_peers.py.
"""

from __future__ import annotations

import os
import socket
import socketserver
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from idv.address_keys import address_key
from idv.front import ConnectionFront, FrontLimits, bind_listener
from idv.rpc.transport import LoopThread


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.server.accepted += 1  # type: ignore[attr-defined]
        self.request.sendall(f"{self.client_address[1]}\n".encode())
        while data := self.request.recv(1 << 20):
            self.request.sendall(data)


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    accepted = 0


class Fronted:
    def __init__(self, limits: FrontLimits):
        self.refusals: Counter[str] = Counter()
        self.backend = _EchoServer(("127.0.0.1", 0), _Echo)
        threading.Thread(target=self.backend.serve_forever, daemon=True).start()
        self.loop = LoopThread("test-front")
        self.front = ConnectionFront("test", limits, bind_listener("127.0.0.1", 0),
                                     lambda listener, cause: self.refusals.update([cause]))
        self.loop.call(self.front.start(self.backend.server_address[1]), timeout=5)

    def connect(self, source: str) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.front.port), timeout=5, source_address=(source, 0))

    def close(self) -> None:
        self.loop.call(self.front.close(), timeout=5)
        self.loop.close()
        self.backend.shutdown()
        self.backend.server_close()


@pytest.fixture()
def fronted(request) -> Iterator[Fronted]:
    # A long quiet_seconds unless a test asks otherwise: a loaded machine must not cut held connections.
    limits = getattr(request, "param", FrontLimits(connections_per_address=4, max_connections=10,
                                                   first_byte_seconds=1.0, quiet_seconds=30.0))
    made = Fronted(limits)
    yield made
    made.close()


def _served(sock: socket.socket) -> int:
    """Send a byte; the server port the backend saw (the echo server's first line), or raise if closed."""
    sock.sendall(b"x")
    seen = b""
    while b"\n" not in seen or not seen.endswith(b"x"):
        chunk = sock.recv(64)
        if not chunk:
            raise ConnectionResetError("closed")
        seen += chunk
    line, _, echoed = seen.partition(b"\n")
    assert echoed.endswith(b"x")
    return int(line)


def _echoes(sock: socket.socket) -> None:
    sock.sendall(b"y")
    assert sock.recv(1) == b"y"


def _closed_by_peer(sock: socket.socket, within: float = 3.0) -> bool:
    sock.settimeout(within)
    try:
        sock.sendall(b"x")
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_bytes_pass_unchanged_and_the_server_side_port_maps_to_the_real_client(fronted: Fronted) -> None:
    with fronted.connect("127.0.0.5") as sock:
        server_port = _served(sock)
        assert fronted.front.original_peer(server_port) == ("127.0.0.5", sock.getsockname()[1])
        payload = os.urandom(4 * 1024 * 1024)  # more than every buffer on the way: flow control both ways
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        received = bytearray()
        while len(received) < len(payload):
            received += sock.recv(1 << 20)
        sender.join()
        assert bytes(received) == payload
    # The entry leaves with the connection (a reused port must not name the old client).
    assert wait_for(lambda: fronted.front.original_peer(server_port) is None, 3)


def test_one_address_gets_its_cap_and_the_excess_is_refused_while_others_connect(fronted: Fronted) -> None:
    held = [fronted.connect("127.0.0.6") for _ in range(4)]
    try:
        for sock in held:
            _served(sock)
        for _ in range(6):  # the kernel accepts; the front resets them (on loopback maybe within connect)
            try:
                with fronted.connect("127.0.0.6") as sock:
                    assert _closed_by_peer(sock)
            except ConnectionResetError:
                pass
        assert fronted.refusals["CONNECTIONS_PER_ADDRESS"] == 6
        with fronted.connect("127.0.0.7") as other:  # another address is served meanwhile
            _served(other)
        for sock in held:  # and the held ones still work
            _echoes(sock)
    finally:
        for sock in held:
            sock.close()
    assert wait_for(lambda: fronted.front.open_connections == 0, 3)
    with fronted.connect("127.0.0.6") as again:  # closed ones free their slots
        _served(again)


def test_total_cap_refuses_beyond_max_connections(fronted: Fronted) -> None:
    held = [fronted.connect(f"127.0.1.{i // 4 + 1}") for i in range(10)]
    try:
        for sock in held:
            _served(sock)
        try:
            with fronted.connect("127.0.2.1") as late:
                assert _closed_by_peer(late)
        except ConnectionResetError:  # on loopback the reset may already fail the connect
            pass
        assert fronted.refusals["MAX_CONNECTIONS"] == 1, fronted.refusals
    finally:
        for sock in held:
            sock.close()


def test_silent_connections_are_closed_without_reaching_the_server(fronted: Fronted) -> None:
    silent = [fronted.connect("127.0.0.8") for _ in range(4)]
    started = time.monotonic()
    try:
        assert all(_closed_by_peer_without_sending(sock, 4.0) for sock in silent)
        took = time.monotonic() - started
        assert 0.9 <= took < 3.0, took  # first_byte_seconds is 1 s (the sweep runs every 0.25 s)
        assert fronted.backend.accepted == 0  # no server connection was opened for them
        assert fronted.refusals["SILENT_CONNECTION"] == 4
    finally:
        for sock in silent:
            sock.close()


@pytest.mark.parametrize("fronted", [FrontLimits(4, 10, first_byte_seconds=1.0, quiet_seconds=1.5)], indirect=True)
def test_quiet_connections_are_closed_after_quiet_seconds(fronted: Fronted) -> None:
    with fronted.connect("127.0.0.9") as sock:
        _served(sock)
        started = time.monotonic()
        assert _closed_by_peer_without_sending(sock, 4.0)
        assert 1.4 <= time.monotonic() - started < 3.5
    assert fronted.refusals["QUIET_CONNECTION"] == 1


def test_a_flood_keeps_descriptors_bounded(fronted: Fronted) -> None:
    baseline = _fds()
    flood: list[socket.socket] = []
    peak = baseline
    failed = 0
    try:
        for i in range(200):
            try:
                sock = fronted.connect(f"127.0.3.{i % 5 + 1}")
            except OSError:  # reset by the front within connect
                failed += 1
                continue
            try:
                sock.sendall(b"x")
            except OSError:
                pass
            flood.append(sock)
            peak = max(peak, _fds())
        # This process holds both ends: the 200 client sockets, plus what the front and the server keep
        # (at most max_connections x 3: accepted, spliced, and the server's accepted end).
        assert peak - baseline <= 200 + 10 * 3 + 8, (baseline, peak)
        refused = fronted.refusals["CONNECTIONS_PER_ADDRESS"] + fronted.refusals["MAX_CONNECTIONS"]
        assert wait_for(lambda: fronted.refusals["CONNECTIONS_PER_ADDRESS"] + fronted.refusals["MAX_CONNECTIONS"]
                        == 190, 3), (refused, failed)
    finally:
        for sock in flood:
            sock.close()
    assert wait_for(lambda: _fds() - baseline <= 4, 5), (_fds(), baseline)


def test_addresses_are_counted_per_ipv4_address_and_per_ipv6_64() -> None:
    assert address_key("203.0.113.7") == "203.0.113.7"
    assert address_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")


def _closed_by_peer_without_sending(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_grpc_intake_counts_an_ipv6_client_per_64_as_the_front_does() -> None:
    """Rotating addresses inside one /64 must not buy fresh stream slots at the gRPC intake."""
    from idv.rpc.intake import IntakeLimits, PeerAddresses, PeerIntake

    fronted = {40001: ("2001:db8:1:2::1", 5000), 40002: ("2001:db8:1:2:ffff::9", 5001),
               40003: ("2001:db8:1:3::1", 5002)}
    addresses = PeerAddresses(fronted.get)
    assert addresses.of("ipv4:127.0.0.1:40001") == addresses.of("ipv4:127.0.0.1:40002") == "2001:db8:1:2::/64"
    assert addresses.of("ipv4:127.0.0.1:40003") == "2001:db8:1:3::/64"
    assert PeerAddresses().of("ipv6:[2001:db8:1:2::7]:1234") == "2001:db8:1:2::/64"
    assert PeerAddresses().of("ipv6:[::ffff:203.0.113.7]:1234") == "203.0.113.7"
    intake = PeerIntake(IntakeLimits(max_streams_per_peer=2), addresses)
    assert intake.open_stream(addresses.of("ipv4:127.0.0.1:40001"))
    assert intake.open_stream(addresses.of("ipv4:127.0.0.1:40002"))
    assert not intake.open_stream(addresses.of("ipv6:[2001:db8:1:2::abcd]:9"))  # same /64: refused
    assert intake.open_stream(addresses.of("ipv4:127.0.0.1:40003"))  # another /64: its own slots
