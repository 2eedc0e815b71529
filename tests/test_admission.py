"""Admission to the compute pool (idv/rpc/admission.py): shed, queue within the deadline, free on real stop."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from idv.errors import DeadlineExceeded, Overloaded
from idv.rpc.admission import Admission


def test_over_capacity_is_refused_queued_work_respects_its_deadline_and_slots_free_on_real_stop() -> None:
    pool = ThreadPoolExecutor(max_workers=1)
    admission = Admission(max_in_flight=2, pool=pool)
    release = threading.Event()

    async def scenario() -> None:
        busy = asyncio.ensure_future(admission.run(5.0, lambda: release.wait(5) and "done", threading.Event()))
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(admission.run(0.1, lambda: "late", threading.Event()))
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded):  # two admitted: the third is shed at once
            await admission.run(5.0, lambda: "shed", threading.Event())
        await asyncio.sleep(0.2)
        release.set()
        assert await busy == "done"
        with pytest.raises(DeadlineExceeded):  # reached the worker after its deadline: not started
            await queued
        # A caller that leaves sets the cancellation flag; its slot stays taken until the work stops.
        stop = threading.Event()
        seen = threading.Event()

        def cancellable() -> str:
            seen.set()
            stop.wait(5)
            return "stopped"

        cancelled = threading.Event()
        leaving = asyncio.ensure_future(admission.run(5.0, cancellable, cancelled))
        await asyncio.get_running_loop().run_in_executor(None, seen.wait, 5)
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        assert cancelled.is_set() and admission.in_flight == 1
        stop.set()

    asyncio.run(scenario())
    deadline = time.monotonic() + 5
    while admission.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert admission.in_flight == 0
    assert admission.run_sync(1.0, lambda: 42) == 42  # the same admission from a plain thread
    pool.shutdown()
