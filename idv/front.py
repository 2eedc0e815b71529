"""The node's public ports: connections per address and in all, capped at accept (issue 16).

gRPC Python has no accept hook: without this, one address could open `max_connections`
idle connections and keep every new client out until gRPC reaped them. So the node owns
its public sockets here, and the servers (grpc.aio, and uvicorn for the device endpoint)
listen on private loopback ports behind them. For each accepted connection the front

* refuses it at once (closed with a reset, counted by cause) when its address already
  holds `connections_per_address` connections, or the port holds `max_connections`;
* waits for its first byte for at most `first_byte_seconds` (a connection that sends
  nothing never costs a second socket: the server connection is opened on the first byte);
* then splices bytes both ways to the server, unchanged: TLS stays end to end, the front
  never sees a key or a plaintext byte; flow control follows the slower side, so each
  direction buffers at most one read (256 KiB) plus the write high-water mark;
* closes it when no byte moved either way for `quiet_seconds` (a backstop: gRPC's keepalive
  pings a healthy connection every 60 s, so this never cuts one that answers).

The servers see every connection as coming from 127.0.0.1. The front keeps a map from the
local port of each server connection to the client's real (address, port); the intake
(idv/rpc/intake.py PeerAddresses) and the device endpoint resolve peers through it. The map is
written on the front's event loop and read from other threads: single dict operations under the
GIL, and an entry is written before the first client byte reaches the server, so no call can
be seen before its peer is known.

Per-address means per IPv4 address, and per /64 for IPv6 (one host usually holds a whole /64).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

from idv.address_keys import address_key, real_host

log = logging.getLogger("idv.front")

BACKEND_HOST = "127.0.0.1"  # where the front reaches its server (the server's private port)
_HIGH_WATER = 128 * 1024  # write buffer per direction before the other side's reading pauses
_ACCEPTS_PER_WAKEUP = 128  # then the loop serves the connections it has before accepting more


@dataclass(frozen=True)
class FrontLimits:
    connections_per_address: int = 32
    max_connections: int = 1024
    first_byte_seconds: float = 10.0
    quiet_seconds: float = 120.0


def bind_listener(host: str, port: int, backlog: int = 512) -> socket.socket:
    """A listening TCP socket on host:port (0: a free port), as the public side of a front."""
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((bare, port))
    except OSError:
        sock.close()
        raise
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


class _Connection(asyncio.Protocol):
    """The client side of one spliced connection; `_Server` is its server side."""

    def __init__(self, front: ConnectionFront, peer: tuple[str, int], key: str):
        self.front = front
        self.client: asyncio.Transport | None = None
        self.server: asyncio.Transport | None = None
        self.peer = peer
        self.key = key
        self.pending: list[bytes] = []  # client bytes received before the server connection is up
        self.connecting = False
        self.closed = False
        self.client_ended = False  # EOF seen from the client / from the server (half-closes)
        self.server_ended = False
        self.opened_at = 0.0
        self.last_activity = 0.0
        self.server_port = 0

    # --- client side ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.client = transport
        if self.closed:  # the front closed while the transport was being made
            transport.abort()
            return
        transport.set_write_buffer_limits(high=_HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.front.loop.time()
        if self.server is not None:
            self.server.write(data)
            return
        self.pending.append(data)
        if self.client is not None:
            self.client.pause_reading()  # nothing more until the server connection is up
        if not self.connecting:
            self.connecting = True
            self.front.loop.create_task(self._connect())

    def eof_received(self) -> bool:
        self.client_ended = True
        if self.server is not None and self.server.can_write_eof() and not self.server_ended:
            self.server.write_eof()  # half-close: the answer may still come
            return True
        self.close()  # not connected yet, or both sides have ended
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()

    def pause_writing(self) -> None:  # the client reads slower than the server answers
        if self.server is not None:
            self.server.pause_reading()

    def resume_writing(self) -> None:
        if self.server is not None and not self.closed:
            self.server.resume_reading()

    async def _connect(self) -> None:
        try:
            transport, _ = await self.front.loop.create_connection(lambda: _Server(self), BACKEND_HOST,
                                                                   self.front.backend_port)
        except OSError as exc:
            log.warning("server unreachable behind the front", extra={"port": self.front.backend_port,
                                                                      "error": type(exc).__name__})
            self.front.refused("SERVER_UNREACHABLE")
            self.close()
            return
        if self.closed:  # the client left (or the front closed) while connecting
            transport.abort()
            return
        self.server = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server_port = int(transport.get_extra_info("sockname")[1])
        self.front.peers[self.server_port] = self.peer  # before the first byte reaches the server
        transport.set_write_buffer_limits(high=_HIGH_WATER)
        pending, self.pending = self.pending, []
        transport.writelines(pending)
        if self.client is not None and not self.closed:
            self.client.resume_reading()

    # --- both ------------------------------------------------------------------------
    def close(self, abort: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        self.pending = []
        self.front.forget(self)
        for transport in (self.client, self.server):
            if transport is not None and not transport.is_closing():
                transport.abort() if abort else transport.close()


class _Server(asyncio.Protocol):
    def __init__(self, connection: _Connection):
        self.connection = connection

    def data_received(self, data: bytes) -> None:
        connection = self.connection
        connection.last_activity = connection.front.loop.time()
        if connection.client is not None:
            connection.client.write(data)

    def eof_received(self) -> bool:
        # The servers behind the front (gRPC, uvicorn) end a connection as a whole, never half: what is
        # buffered goes to the client, then both ends close (a client that never closes holds nothing).
        self.connection.server_ended = True
        self.connection.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.connection.close()

    def pause_writing(self) -> None:  # the server reads slower than the client sends
        if self.connection.client is not None:
            self.connection.client.pause_reading()

    def resume_writing(self) -> None:
        if self.connection.client is not None and not self.connection.closed:
            self.connection.client.resume_reading()


class ConnectionFront:
    """One public listening socket in front of one server's private loopback port.

    Runs on an event loop (`start`/`stop_accepting`/`close` are coroutines on it); `original_peer`
    and `open_connections` may be read from any thread."""

    def __init__(self, name: str, limits: FrontLimits, listener: socket.socket,
                 on_refused: Callable[[str, str], None] = lambda listener, cause: None):
        self.name = name
        self.limits = limits
        self.backend_port = 0  # the server's private loopback port, given to start()
        self.port = int(listener.getsockname()[1])
        self.peers: dict[int, tuple[str, int]] = {}  # server-connection local port -> client (address, port)
        self._listener = listener
        self._on_refused = on_refused
        self._connections: set[_Connection] = set()
        self._per_key: dict[str, int] = {}
        self._accepting = False
        self._sweeper: asyncio.Task | None = None
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set by start(), on its loop

    # --- read from any thread ------------------------------------------------------------
    def original_peer(self, server_port: int) -> tuple[str, int] | None:
        """The client (address, port) behind the server connection whose local port is `server_port`."""
        return self.peers.get(server_port)

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    # --- on the loop ---------------------------------------------------------------------
    async def start(self, backend_port: int) -> None:
        """Serve the public socket, splicing to 127.0.0.1:`backend_port`."""
        self.backend_port = backend_port
        self.loop = asyncio.get_running_loop()
        self._accepting = True
        self.loop.add_reader(self._listener.fileno(), self._accept)
        self._sweeper = self.loop.create_task(self._sweep())

    def _accept(self) -> None:
        """Accept what is pending; a refused connection is closed (reset) before anything else is made for it,
        so a flood holds no more than one descriptor at a time beyond the caps."""
        for _ in range(_ACCEPTS_PER_WAKEUP):
            try:
                sock, peername = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: stop accepting for a moment instead of spinning on the listener.
                    log.warning("accept failed; pausing accepts", extra={"port": self.port, "error": exc.strerror})
                    self.loop.remove_reader(self._listener.fileno())
                    self.loop.call_later(0.5, self._resume_accepting)
                return
            peer = (real_host(str(peername[0])), int(peername[1]))
            key = address_key(peer[0])
            cause = self._admit(key)
            if cause is not None:
                # A reset, not a FIN: the descriptor is freed now, not after a closing handshake.
                self.refused(cause)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
                continue
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a spliced write goes out at once
            except OSError:  # reset by the peer already (EINVAL on some systems): give the slot back
                self._release(key)
                sock.close()
                continue
            connection = _Connection(self, peer, key)
            connection.opened_at = connection.last_activity = self.loop.time()
            self._connections.add(connection)
            self.loop.create_task(self._serve(connection, sock))

    def _resume_accepting(self) -> None:
        if self._accepting:
            self.loop.add_reader(self._listener.fileno(), self._accept)

    async def _serve(self, connection: _Connection, sock: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: connection, sock)
        except OSError:
            sock.close()
            connection.close()

    def _admit(self, key: str) -> str | None:
        if len(self._connections) >= self.limits.max_connections:
            return "MAX_CONNECTIONS"
        count = self._per_key.get(key, 0)
        if count >= self.limits.connections_per_address:
            return "CONNECTIONS_PER_ADDRESS"
        self._per_key[key] = count + 1
        return None

    def _release(self, key: str) -> None:
        count = self._per_key.pop(key, 1) - 1
        if count > 0:
            self._per_key[key] = count

    def forget(self, connection: _Connection) -> None:
        if connection not in self._connections:
            return
        self._connections.discard(connection)
        self._release(connection.key)
        if connection.server_port and self.peers.get(connection.server_port) == connection.peer:
            del self.peers[connection.server_port]

    def refused(self, cause: str) -> None:
        self._on_refused(self.name, cause)

    async def _sweep(self) -> None:
        """Close connections silent since accept past first_byte_seconds, or quiet past quiet_seconds."""
        limits = self.limits
        interval = max(0.05, min(1.0, limits.first_byte_seconds / 4, limits.quiet_seconds / 4))
        while True:
            await asyncio.sleep(interval)
            now = self.loop.time()
            for connection in list(self._connections):
                if not connection.connecting and now - connection.opened_at >= limits.first_byte_seconds:
                    self.refused("SILENT_CONNECTION")
                    connection.close(abort=True)
                elif now - connection.last_activity >= limits.quiet_seconds:
                    self.refused("QUIET_CONNECTION")
                    connection.close(abort=True)

    async def stop_accepting(self) -> None:
        """No new connections; the open ones keep flowing (a draining server finishes its calls)."""
        if self._accepting:
            self._accepting = False
            self.loop.remove_reader(self._listener.fileno())
        self._listener.close()

    async def close(self) -> None:
        """Stop accepting and cut every connection still open."""
        await self.stop_accepting()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for connection in list(self._connections):
            connection.close(abort=True)
