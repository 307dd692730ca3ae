"""Waiting for a condition: the one polling helper of hack/ and tests/.

``wait_for`` polls a function until it returns something truthy and returns that
value, or raises :class:`TimeoutError` naming what it waited for. ``wait_for_async``
is the same loop for coroutines (the predicate may be sync or async), so that a
test on an event loop never blocks it. Both share :class:`Deadline`.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError, TimeoutError):
    """The condition did not hold in time. An AssertionError too, so pytest reports it as a failed check."""


class Deadline:
    """``timeout`` seconds from now on the monotonic clock; ``check`` raises once it has passed."""

    def __init__(self, timeout: float, what: str) -> None:
        self.timeout = timeout
        self.what = what
        self.at = time.monotonic() + timeout

    def passed(self) -> bool:
        return time.monotonic() > self.at

    def fail(self, last: object = None) -> WaitTimeout:
        detail = "" if last in (None, False) else f" (last value: {last!r})"
        return WaitTimeout(f"timed out after {self.timeout:g}s waiting for {self.what}{detail}")


def wait_for(
    condition: Callable[[], T | None], timeout: float = 90, what: str = "condition", every: float = 0.3
) -> T:
    """Call ``condition`` every ``every`` seconds until it returns a truthy value; return that value."""
    deadline = Deadline(timeout, what)
    while True:
        value = condition()
        if value:
            return value
        if deadline.passed():
            raise deadline.fail(value)
        time.sleep(every)


async def wait_for_async(
    condition: Callable[[], T | Awaitable[T | None] | None],
    timeout: float = 30,  # noqa: ASYNC109  (the same signature as wait_for, on purpose)
    what: str = "condition",
    every: float = 0.02,
) -> T:
    """:func:`wait_for` for a running event loop; ``condition`` may return an awaitable."""
    deadline = Deadline(timeout, what)
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if deadline.passed():
            raise deadline.fail(value)
        await asyncio.sleep(every)
