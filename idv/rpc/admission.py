"""Admission to the node's compute pool, on the grpc.aio event loop.

At most `max_in_flight` expensive requests are admitted (the rest get RESOURCE_EXHAUSTED at
once); of those, at most `compute_slots` run the models at a time on the node's compute
pool, the others wait (without a thread) within their own deadline. A slot is freed when
the work really stops, not when its caller leaves: a cancelled call keeps its slot until
the pipeline notices the cancellation at its next stage (Budget), so the pool is never
oversubscribed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TypeVar

from idv.errors import DeadlineExceeded, Overloaded

T = TypeVar("T")


class Admission:
    def __init__(self, max_in_flight: int, compute_slots: int, pool: Executor):
        self._max_in_flight = max_in_flight
        self._compute_slots = compute_slots
        self._pool = pool
        self._compute: asyncio.Semaphore | None = None  # made on the loop that uses it
        self.in_flight = 0  # read by the metrics thread: a plain int, written on the loop only

    async def run(self, deadline_seconds: float, work: Callable[[], T], cancelled: threading.Event) -> T:
        """Run `work` on the compute pool; sets `cancelled` if the caller leaves while it runs."""
        if self.in_flight >= self._max_in_flight:
            raise Overloaded("the node is at capacity; retry with backoff")
        if self._compute is None:
            self._compute = asyncio.Semaphore(self._compute_slots)
        compute = self._compute
        self.in_flight += 1
        handed_off = False
        try:
            try:
                await asyncio.wait_for(compute.acquire(), timeout=max(deadline_seconds, 0.0))
            except asyncio.TimeoutError:
                raise DeadlineExceeded("deadline exceeded while queued for a worker") from None
            try:
                future = self._pool.submit(work)
            except BaseException:
                compute.release()
                raise
            handed_off = True
            loop = asyncio.get_running_loop()
            future.add_done_callback(lambda _: self._finish_from_pool(loop, compute))
            try:
                return await asyncio.wrap_future(future)
            except asyncio.CancelledError:
                cancelled.set()  # the pipeline stops at its next stage and frees the slot
                raise
        finally:
            if not handed_off:
                self.in_flight -= 1

    def _finish_from_pool(self, loop: asyncio.AbstractEventLoop, compute: asyncio.Semaphore) -> None:
        try:
            loop.call_soon_threadsafe(self._finished, compute)
        except RuntimeError:  # the loop closed (node stopped): nothing is left to admit
            pass

    def _finished(self, compute: asyncio.Semaphore) -> None:
        compute.release()
        self.in_flight -= 1
