"""Readiness: a background probe that pings the stores a verdict depends on.

After `failures` consecutive failed pings health turns NOT_SERVING (a load balancer
stops sending traffic here); at the first answer it turns SERVING again, without a
restart. Requests that arrive meanwhile still fail closed on their own (UNAVAILABLE).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

log = logging.getLogger("idv.node")


class ReadinessProbe:
    def __init__(self, pings: Sequence[Callable[[], None]], interval_seconds: float, failures: int,
                 on_ready: Callable[[], None], on_not_ready: Callable[[], None]):
        self._pings = tuple(pings)
        self._interval = interval_seconds
        self._failures = failures
        self._on_ready = on_ready
        self._on_not_ready = on_not_ready
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ready = True
        self._consecutive = 0

    def check(self) -> bool:
        """One probe round; returns the readiness after it."""
        try:
            for ping in self._pings:
                ping()
        except Exception as exc:  # any failure to answer is a failure: StoreUnavailable, closed, ...
            self._consecutive += 1
            if self.ready and self._consecutive >= self._failures:
                self.ready = False
                log.warning("store not answering: NOT_SERVING",
                            extra={"failures": self._consecutive, "error_reason": getattr(exc, "reason", type(exc).__name__)})
                self._on_not_ready()
            return self.ready
        self._consecutive = 0
        if not self.ready:
            self.ready = True
            log.info("store answers again: SERVING")
            self._on_ready()
        return self.ready

    def start(self) -> None:
        def run() -> None:
            while not self._stop.wait(self._interval):
                self.check()

        self._thread = threading.Thread(target=run, name="idv-readiness", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
