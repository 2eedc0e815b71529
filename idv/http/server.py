"""Run the device endpoint's ASGI app with uvicorn on a thread beside the gRPC server.

The socket is bound by the node before the models load (like the gRPC port), so the port,
and with it the capture URL, is known at once; port 0 picks a free port (tests).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import uvicorn

log = logging.getLogger("idv.http")


@dataclass(frozen=True)
class DeviceServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    # The gRPC server's certificate and key: TLS on the device port too (no client certificates:
    # phones and kiosks authenticate with the capture token).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None


class DeviceServer:
    def __init__(self, config: DeviceServerConfig):
        family = socket.AF_INET6 if ":" in config.host.strip("[]") else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((config.host.strip("[]"), config.port))
        except OSError as exc:
            self._socket.close()
            raise OSError(f"cannot listen on {config.host}:{config.port} for devices: {exc}") from None
        self._socket.listen(128)
        self.port = self._socket.getsockname()[1]
        self.tls = config.tls_cert_file is not None
        self._config = config
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self, app) -> None:
        config = self._config
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
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self.close()

    def close(self) -> None:
        self._socket.close()
