"""Admission to the node's compute pool, usable from any thread or event loop.

At most `max_in_flight` expensive requests are admitted (the rest get RESOURCE_EXHAUSTED at
once); admitted work queues on the compute pool, whose `worker_threads` threads are the only
ones that run requests. Work that reaches a thread after its deadline is not started
(DEADLINE_EXCEEDED). A slot is freed when the work really stops, not when its caller
leaves: a cancelled call keeps its slot until the pipeline notices the cancellation at its
next stage (Budget), so the pool is never oversubscribed.

The count is guarded by a lock, not by an asyncio primitive, so one Admission serves the
gRPC event loop (`run`) and another front end on its own loop or threads (`run` / `run_sync`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import TypeVar

from idv.errors import DeadlineExceeded, Overloaded

T = TypeVar("T")


class Admission:
    def __init__(self, max_in_flight: int, pool: Executor):
        self._max_in_flight = max_in_flight
        self._pool = pool
        self._lock = threading.Lock()
        self.in_flight = 0

    def _submit(self, deadline_seconds: float, work: Callable[[], T]) -> Future:
        with self._lock:
            if self.in_flight >= self._max_in_flight:
                raise Overloaded("the node is at capacity; retry with backoff")
            self.in_flight += 1
        start_by = time.monotonic() + max(deadline_seconds, 0.0)

        def guarded() -> T:
            if time.monotonic() >= start_by:
                raise DeadlineExceeded("deadline exceeded while queued for a worker")
            return work()

        try:
            future = self._pool.submit(guarded)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(lambda _: self._release())  # also when cancelled before it started
        return future

    def _release(self) -> None:
        with self._lock:
            self.in_flight -= 1

    async def run(self, deadline_seconds: float, work: Callable[[], T], cancelled: threading.Event) -> T:
        """Run `work` on the compute pool; sets `cancelled` if the caller leaves while it runs."""
        future = self._submit(deadline_seconds, work)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            cancelled.set()  # not started: it never will; running: the pipeline stops at its next stage
            future.cancel()
            raise

    def run_sync(self, deadline_seconds: float, work: Callable[[], T]) -> T:
        """The same from a thread that may block (it waits; the work runs on the pool)."""
        return self._submit(deadline_seconds, work).result()
