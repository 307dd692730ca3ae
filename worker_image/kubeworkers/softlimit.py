"""Telling a handler that its soft timeout has passed, so it can clean up before the hard one.

An ``async`` handler gets :class:`~kubeworkers.errors.SoftTimeout` raised at the ``await`` it is
suspended on, as Celery raises ``SoftTimeLimitExceeded`` into a task: asyncio can only *cancel*
a task, so the runner cancels it and :func:`interruptible`, which drives the handler's
coroutine, turns that one cancellation back into a ``SoftTimeout`` (and takes the cancellation
request back, so the task is not cancelled). A sync handler, which Python cannot interrupt,
sees ``ctx.soft_timed_out`` become true and ``ctx.wait_soft_timeout()`` return.

Used by the attempt runner and by the child process of a process-isolated handler alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar

from kubeworkers.context import JobContext
from kubeworkers.errors import SoftTimeout, job_error
from kubeworkers.protocol import JobError

T = TypeVar("T")


class SoftLimit:
    """The soft timeout of one attempt: :meth:`expire` when it passes, and the conversion of the
    cancellation it causes into a :class:`SoftTimeout`."""

    def __init__(self, seconds: float, ctx: JobContext | None, *, is_async: bool,
                 stopping: Callable[[], bool] = lambda: False) -> None:
        self.seconds = seconds
        self.ctx = ctx
        self.is_async = is_async
        #: True once the worker stops the handler for real (hard timeout, cancel): then a
        #: cancellation is that, never a soft timeout.
        self._stopping = stopping
        self._pending = False
        self.expired = False

    def arm(self, task: asyncio.Task[Any]) -> asyncio.TimerHandle:
        """Call :meth:`expire` on ``task`` after :attr:`seconds`; cancel the handle when the attempt ends."""
        return asyncio.get_running_loop().call_later(self.seconds, self.expire, task)

    def expire(self, task: asyncio.Task[Any]) -> None:
        if self.expired or task.done() or self._stopping():
            return
        self.expired = True
        if self.ctx is not None:
            self.ctx._mark_soft_timed_out()
        if self.is_async:
            self._pending = True
            task.cancel()

    def soften(self) -> SoftTimeout | None:
        """The :class:`SoftTimeout` to raise instead of the cancellation being delivered, or None
        when that cancellation is a real one."""
        if not self._pending:
            return None
        self._pending = False
        task = asyncio.current_task()
        if self._stopping() or task is None:
            return None
        task.uncancel()
        return SoftTimeout(f"the soft timeout of {self.seconds:g}s has passed")


class _Interruptible:
    """Awaits a coroutine step by step, so that an exception can be thrown into it at the
    ``await`` it is suspended on."""

    __slots__ = ("_coro", "_limit")

    def __init__(self, coro: Coroutine[Any, Any, Any], limit: SoftLimit) -> None:
        self._coro = coro
        self._limit = limit

    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self._coro
        to_send: Any = None
        to_throw: BaseException | None = None
        while True:
            try:
                if to_throw is not None:
                    exc, to_throw = to_throw, None
                    yielded = coro.throw(exc)
                else:
                    yielded = coro.send(to_send)
            except StopIteration as stop:
                return stop.value
            try:
                to_send = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except asyncio.CancelledError as exc:
                to_throw = self._limit.soften() or exc
            except BaseException as exc:
                to_throw = exc


async def interruptible(coro: Coroutine[Any, Any, T], limit: SoftLimit) -> T:
    """Await ``coro``; when ``limit`` expires, ``coro`` gets :class:`SoftTimeout` where it waits."""
    result: T = await _Interruptible(coro, limit)
    return result


def uncaught_error(limit: SoftLimit, attempt: int, exc: SoftTimeout) -> JobError:
    """How an attempt whose handler let its :class:`SoftTimeout` escape ends: a ``Timeout``."""
    return JobError(type="Timeout", retryable=True, traceback=job_error(exc).traceback, message=(
        f"the soft timeout of {limit.seconds:g}s passed and the handler did not catch SoftTimeout "
        f"(attempt {attempt})"))
