"""One way to run a piece of a request's work, with or without a thread pool."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any


def run_on(executor: Executor | None, fn: Callable[..., Any], *args: Any) -> Future:
    """`fn(*args)` as a task on `executor`, or (None) run now as a finished future, so the caller
    collects results and errors the same way on both paths."""
    if executor is not None:
        return executor.submit(fn, *args)
    future: Future = Future()
    try:
        future.set_result(fn(*args))
    except BaseException as error:  # noqa: BLE001 (re-raised by result())
        future.set_exception(error)
    return future
