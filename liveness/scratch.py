"""Request-owned buffers: every array a liveness step derives from the frames is handed to the
caller's `scratch` list, so the caller can zero it when the request ends (nothing of the probe
outlives the call). `None`: the caller does not track buffers (tools, benchmarks)."""

from __future__ import annotations

from typing import TypeVar

import numpy as np

Scratch = list  # list[np.ndarray], owned by one request

A = TypeVar("A")


def own(scratch: Scratch | None, array: A) -> A:
    """Record `array` (if it is one) as the request's, and return it unchanged."""
    if scratch is not None and isinstance(array, np.ndarray):
        scratch.append(array)
    return array
