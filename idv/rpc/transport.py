"""The grpc.aio server on an event loop thread the node owns, driven from synchronous code.

Why aio (issue 16): the synchronous server gives every call a worker thread from the
moment its HEADERS arrive, so twelve streams that never send a body froze the node. On
grpc.aio a call waiting for its body is a suspended coroutine; threads are spent only on
compute (the node's pool, see idv/rpc/admission.py). The node's public surface stays
synchronous (`build_node`, `Node.load`, `Node.stop`): the loop runs on its own thread and
the synchronous side submits coroutines to it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import grpc

T = TypeVar("T")


class LoopThread:
    """An asyncio event loop running on a daemon thread until `close`."""

    def __init__(self, name: str):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def on_loop(self) -> bool:
        return threading.current_thread() is self._thread

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coroutine` on the loop and wait for its result (never from the loop thread itself)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()


class SyncHealth:
    """The aio health servicer behind the synchronous `set(service, status)` NodeState calls from any thread."""

    def __init__(self, servicer: Any, loop: LoopThread):
        self._servicer = servicer
        self._loop = loop

    def set(self, service: str, status: int) -> None:
        if self._loop.loop.is_closed():
            return
        if self._loop.on_loop():
            self._loop.loop.create_task(self._servicer.set(service, status))
            return
        try:
            self._loop.call(self._servicer.set(service, status), timeout=5)
        except (concurrent.futures.TimeoutError, RuntimeError):  # stopping: the server is going away anyway
            pass


class AioServer:
    """What the node holds of its server: the port, and a synchronous stop."""

    def __init__(self, loop: LoopThread, server: grpc.aio.Server, compute_pool: concurrent.futures.Executor):
        self._loop = loop
        self._server = server
        self._compute_pool = compute_pool

    def stop(self, grace: float | None) -> None:
        """Refuse new calls, let in-flight ones finish within `grace`, cancel the rest (their pipeline
        stops at its next stage), wait for the compute pool to drain, then end the loop."""
        if not self._loop.loop.is_closed():
            self._loop.call(self._server.stop(grace))
        self._compute_pool.shutdown(wait=True)
        self._loop.close()
