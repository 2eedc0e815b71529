"""Run the device endpoint's ASGI app with uvicorn on a thread beside the gRPC server.

The socket is bound by the node before the models load (like the gRPC port), so the port,
and with it the capture URL, is known at once; port 0 picks a free port (tests).

Given a connection front (idv/front.py), the public port is the front's: it caps connections
per address and in all, and uvicorn listens on a private loopback port behind it. The app then
sees every client as 127.0.0.1; `_RealClient` puts the client's own address (from the front's
map, by the splice connection's port) back into the ASGI scope, so per-address rate limits count
real devices.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from idv.front import BACKEND_HOST, ConnectionFront
from idv.rpc.transport import LoopThread

log = logging.getLogger("idv.http")


@dataclass(frozen=True)
class DeviceServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    # The gRPC server's certificate and key: TLS on the device port too (no client certificates:
    # phones and kiosks authenticate with the capture token).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None


class _RealClient:
    """ASGI middleware: the client address of a fronted connection is the front's client, not 127.0.0.1."""

    def __init__(self, app, front: ConnectionFront):
        self._app = app
        self._front = front

    async def __call__(self, scope, receive, send):
        client = scope.get("client")
        if client is not None and client[0] == BACKEND_HOST:
            original = self._front.original_peer(int(client[1]))
            if original is not None:
                scope = {**scope, "client": original}
        await self._app(scope, receive, send)


class DeviceServer:
    def __init__(self, config: DeviceServerConfig, front: ConnectionFront | None = None,
                 front_loop: LoopThread | None = None):
        host, port = (BACKEND_HOST, 0) if front is not None else (config.host, config.port)
        family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host.strip("[]"), port))
        except OSError as exc:
            self._socket.close()
            raise OSError(f"cannot listen on {host}:{port} for devices: {exc}") from None
        self._socket.listen(128)
        self._front = front
        self._front_loop = front_loop
        if front is not None and front_loop is not None:
            # Accepting now: connections wait in the private socket's backlog until uvicorn serves.
            front_loop.call(front.start(self._socket.getsockname()[1]), timeout=10)
            self.port = front.port
        else:
            self.port = self._socket.getsockname()[1]
        self.tls = config.tls_cert_file is not None
        self._config = config
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self, app) -> None:
        config = self._config
        if self._front is not None:
            app = _RealClient(app, self._front)
        self._server = uvicorn.Server(uvicorn.Config(
            app, log_config=None, access_log=False,  # an access log would hold client addresses and paths
            proxy_headers=False,  # X-Forwarded-For from a device must not pick its rate-limit bucket
            server_header=False, date_header=False, timeout_keep_alive=5, limit_concurrency=64,
            ssl_certfile=str(config.tls_cert_file) if config.tls_cert_file else None,
            ssl_keyfile=str(config.tls_key_file) if config.tls_key_file else None,
        ))
        server = self._server
        self._thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[self._socket])),
                                        name="idv-device-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._call_front("stop_accepting")
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self.close()

    def close(self) -> None:
        self._call_front("close")
        self._socket.close()

    def _call_front(self, action: str) -> None:
        if self._front is not None and self._front_loop is not None and not self._front_loop.loop.is_closed():
            self._front_loop.call(getattr(self._front, action)(), timeout=10)
