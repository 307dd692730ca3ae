"""What a running handler can know and do about its job: :class:`JobContext`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import numbers
import threading
from collections.abc import Callable, Generator
from typing import Any

from kubeworkers.errors import cap_text

#: Receives (fraction, message) on the worker's event loop; writes record and event.
ProgressSink = Callable[[float, "str | None"], None]


class _Done:
    """An awaitable that is already complete: ``await ctx.progress(...)`` never waits on Redis."""

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield


class _Signal:
    """A flag a handler may poll or (on a thread) wait for; its Event is made only when waited on."""

    __slots__ = ("_event", "is_set")

    def __init__(self) -> None:
        self.is_set = False
        self._event: threading.Event | None = None

    def set(self) -> None:
        self.is_set = True
        if self._event is not None:
            self._event.set()

    def wait(self, timeout: float | None) -> bool:
        if self._event is None:
            self._event = threading.Event()
            if self.is_set:
                self._event.set()
        return self._event.wait(timeout)


class JobContext:
    """The job a handler is running: ids, attempt, logger, progress reports and cancellation.

    Pass it by annotating a handler parameter with ``JobContext``. ``progress``
    may be called (and awaited) from ``async`` handlers and called from
    thread-pool (sync) handlers alike.
    """

    def __init__(
        self,
        *,
        job_id: str,
        uid: str,
        namespace: str,
        pool: str,
        handler: str,
        attempt: int,
        max_attempts: int,
        worker: str,
        enqueued_at: float,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        progress_sink: ProgressSink | None = None,
    ) -> None:
        self.job_id = job_id
        self.uid = uid
        self.namespace = namespace
        self.pool = pool
        self.handler = handler
        #: 1 on the first run, 2 on the first retry, ...
        self.attempt = attempt
        self.max_attempts = max_attempts
        #: Name of the worker (pod) running this attempt.
        self.worker = worker
        self.enqueued_at = enqueued_at
        self._logger = logger
        self._loop = loop
        self._sink = progress_sink
        self._cancel = _Signal()
        self._soft = _Signal()
        self.last_progress: tuple[float, str | None] | None = None

    @property
    def logger(self) -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
        """A logger whose records carry this job's id, handler and attempt."""
        if self._logger is None:
            # Built on first use: most handlers never log, and a busy worker runs thousands of jobs.
            self._logger = logging.LoggerAdapter(
                logging.getLogger(f"kubeworkers.handler.{self.handler}"),
                {"job_id": self.job_id, "handler": self.handler, "attempt": self.attempt},
            )
        return self._logger

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts

    @property
    def cancelled(self) -> bool:
        """True once the job has been cancelled; long sync handlers should poll it and return."""
        return self._cancel.is_set

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Block (a sync handler's thread) until the job is cancelled or ``timeout`` passes."""
        return self._cancel.wait(timeout)

    def _mark_cancelled(self) -> None:
        self._cancel.set()

    @property
    def soft_timed_out(self) -> bool:
        """True once the attempt's soft timeout has passed: wrap up and return before the hard one."""
        return self._soft.is_set

    def wait_soft_timeout(self, timeout: float | None = None) -> bool:
        """Block (a sync handler's thread) until the soft timeout passes or ``timeout`` does; True for the first."""
        return self._soft.wait(timeout)

    def _mark_soft_timed_out(self) -> None:
        self._soft.set()

    def progress(self, fraction: float, message: str | None = None) -> _Done:
        """Report progress (``fraction`` is clamped to 0..1) with an optional message.

        The update is written to the job record and the events stream in the
        worker's next batch; the returned awaitable is already complete. A fraction
        that is not a number (or is NaN) or a message that is not text raises here, in
        the handler, where the mistake is; a message over the limit is cut (visibly).
        """
        if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or math.isnan(fraction):
            raise TypeError(f"progress must be a number from 0 to 1, not {fraction!r}")
        if message is not None and not isinstance(message, str):
            raise TypeError(f"a progress message must be text (str) or None, not {type(message).__name__}")
        fraction = min(1.0, max(0.0, float(fraction)))
        if message is not None:
            message = cap_text(message)
        self.last_progress = (fraction, message)
        sink, loop = self._sink, self._loop
        if sink is not None and loop is not None:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                sink(fraction, message)
            else:
                # A sync handler's thread; it may outlive its job, and the worker (a closed loop).
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(sink, fraction, message)
        return _Done()
