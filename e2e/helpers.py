"""Polling helpers for e2e tests: wait on a predicate, never sleep blindly."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 60, interval: float = 0.5, message: str = "",
             explain: Callable[[], object] | None = None) -> T:
    """Call `predicate` until it returns something truthy; return that value or fail with `message`
    and, when given, what `explain()` says about the state at the deadline."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the object may not exist yet
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            if explain is not None:
                try:
                    detail += f"; at the deadline: {explain()}"
                except Exception as exc:  # the explanation must never hide the timeout
                    detail += f"; explain failed: {exc}"
            raise AssertionError(f"timed out after {timeout:.0f}s: {message or predicate}{detail}")
        time.sleep(interval)
