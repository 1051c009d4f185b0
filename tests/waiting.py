"""Waiting in tests for something another thread or process does (a run's state, a file)."""

from __future__ import annotations

import time
from typing import Callable


def wait(pred: Callable[[], object], timeout: float = 120.0, every: float = 0.02) -> bool:
    """Poll ``pred`` until it is true (True) or ``timeout`` seconds have passed (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(every)
    return False
