"""What a running handler can know and do about its job: :class:`JobContext`.

Fan-out and joins (docs/workflows.md): ``await ctx.spawn(...)`` / ``await ctx.map(...)`` submit
child jobs that record this job as their parent; ``return ctx.wait(then="handler")`` ends the
attempt with the job Waiting for them, holding no worker slot, and the last child's end queues
the continuation handler on this job's pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import numbers
import threading
from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from kubeworkers.errors import cap_text
from kubeworkers.protocol import JobMessage, Priority

#: Enqueues child messages on the worker's Redis (``kubeworkers.queue.enqueue_many``).
Spawner = Callable[[Sequence[JobMessage]], Awaitable[list[bool]]]


@dataclass(frozen=True)
class WaitForChildren:
    """What a handler returns to wait for its children: made by :meth:`JobContext.wait`."""

    then: str
    input: dict[str, Any]


class SpawnError(RuntimeError):
    """A child job cannot be submitted from here (no Redis, a sync or isolated handler)."""

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
        spawner: Spawner | None = None,
        run: int = 0,
    ) -> None:
        self.job_id = job_id
        self.uid = uid
        self.namespace = namespace
        self.pool = pool
        self.handler = handler
        #: 1 on the first run, 2 on the first retry, ...
        self.attempt = attempt
        self.max_attempts = max_attempts
        #: 0 on the job's first run, n after it was rerun n times (``kubeworkers jobs retry``);
        #: attempts count from 1 again in each run.
        self.run = run
        #: Name of the worker (pod) running this attempt.
        self.worker = worker
        self.enqueued_at = enqueued_at
        self._logger = logger
        self._loop = loop
        self._sink = progress_sink
        self._cancel = _Signal()
        self._soft = _Signal()
        self.last_progress: tuple[float, str | None] | None = None
        self._spawner = spawner
        self._spawned = 0

    # ------------------------------------------------------------------ fan-out and joins

    async def spawn(
        self,
        handler: str,
        input: BaseModel | dict[str, Any] | None = None,
        *,
        pool: str | None = None,
        key: str | None = None,
        priority: Priority | str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the child's timeout, as in submit
        max_attempts: int | None = None,
    ) -> str:
        """Submit one child job (``handler`` on ``pool``, this job's pool by default); its job id.

        The id is ``<this job's id>:<this handler>:<key>``, ``key`` the child's position among
        this attempt's spawns by default, so an attempt that runs again (a retry, a dead
        worker's job) submits the same children, which are not run twice.
        """
        [job_id] = await self.map(handler, [input], pool=pool, keys=None if key is None else [key],
                                  priority=priority, timeout=timeout, max_attempts=max_attempts)
        return job_id

    async def map(
        self,
        handler: str,
        inputs: Iterable[BaseModel | dict[str, Any] | None],
        *,
        pool: str | None = None,
        keys: Sequence[str] | None = None,
        priority: Priority | str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the child's timeout, as in submit
        max_attempts: int | None = None,
    ) -> list[str]:
        """Submit one child job per input, in one round trip; their job ids, in order."""
        if self._spawner is None or self._loop is None:
            raise SpawnError("child jobs can be submitted only by async handlers running in a worker "
                             "(not in run-local, a sync handler's thread or an isolated process)")
        if self.cancelled:
            raise asyncio.CancelledError("the job was cancelled; no children are submitted")
        values = [_input_of(value) for value in inputs]
        if keys is not None and len(keys) != len(values):
            raise ValueError(f"{len(keys)} keys for {len(values)} inputs")
        names = list(keys) if keys is not None else [str(self._spawned + i) for i in range(len(values))]
        self._spawned += len(values)
        msgs = [
            JobMessage(
                job_id=(child := f"{self.job_id}:{self.handler}:{name}"), uid=child, namespace=self.namespace,
                pool=pool or self.pool, handler=handler, input=value,
                priority=Priority(priority) if priority is not None else Priority.NORMAL,
                timeout_seconds=timeout, max_attempts=max_attempts, parent=self.job_id, parent_pool=self.pool,
            )
            for name, value in zip(names, values, strict=True)
        ]
        if msgs:
            await self._spawner(msgs)
        return [m.job_id for m in msgs]

    def wait(self, then: str, input: BaseModel | dict[str, Any] | None = None) -> WaitForChildren:
        """Return this from the handler to end the attempt and wait for the children without a slot.

        When the last child has finished, ``then`` (a handler of this job's pool) runs as the
        job's next attempt with input ``{"input": <input>, "counts": {...}, "children":
        [{"job_id", "pool", "state", "output", "error"}, ...]}`` (see
        :class:`kubeworkers.protocol.ChildrenDone`).
        """
        return WaitForChildren(then=then, input=_input_of(input))

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


def _input_of(value: BaseModel | dict[str, Any] | None) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return value
    raise TypeError(f"a child's input must be a pydantic model, a dict or None, not {type(value).__name__}")
