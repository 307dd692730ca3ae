"""Supervision of a worker's long-lived tasks: each survives any error, restarts with backoff, and says how it is.

A helper loop that lets an exception escape ends for good, silently (``READONLY`` after a
failover, ``OOM``, a bug), and one that retries at once floods the log while Redis is away.
Under a :class:`Supervisor` a periodic task (:meth:`Supervisor.every`) or a long-running one
(:meth:`Supervisor.forever`) that fails is logged once, then again only every
:data:`LOG_EVERY` seconds while it keeps failing, retried with a doubling delay up to
:data:`MAX_BACKOFF`, and reported by :meth:`Supervisor.report` (which ``/healthz`` shows).
A periodic task whose tries lose their worth when late (the heartbeat: a renewal later than the
lease renews nothing) is retried at its own interval instead (``backoff=False``), so it renews
within an interval of Redis coming back, however long Redis was away.

``MemoryError``, and any ``BaseException`` that is not a cancellation, is fatal: a process
that hit it can no longer be trusted to serve, so the supervisor hands it to ``on_fatal`` (the
worker then drains and exits non-zero, and Kubernetes restarts the pod).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger("kubeworkers.worker")

#: Longest delay between two tries of a failing task. Short, because it is also how late a
#: worker notices that Redis is back (at 5 s the first job after a 7 s outage finished 4.3 s
#: after the return); one try per second per task is nothing to a Redis that is starting.
MAX_BACKOFF = 1.0
#: A task that keeps failing is logged again after this many seconds.
LOG_EVERY = 30.0
#: First delay before a long-running task that failed is started again.
FIRST_RESTART = 0.1
#: A long-running task started again after failures that then runs this long works again: its
#: failures are forgotten (it has no ticks to say so), so ``/healthz`` no longer reports it failing
#: and its next failure starts a new count.
RECOVERED_AFTER = 5.0


def _honour_cancel() -> None:
    """Raise the cancellation of the current task if one is pending that its body swallowed.

    Code under a task may turn a cancellation into another exception or drop it (a Redis
    client's timeout racing the cancel, a ``suppress`` around an await): the task then goes on
    as if never told, and whoever awaits it after cancelling it waits for ever (a worker whose
    drain waited on its heartbeat did). ``Task.cancelling()`` still counts the request.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


@dataclass
class Health:
    """How one supervised task is doing."""

    name: str
    #: Failures in a row (0: it works).
    failures: int = 0
    failing_since: float = 0.0
    last_error: str = ""
    last_logged: float = 0.0

    def describe(self, now: float) -> str:
        return (f"{self.name}: failing for {now - self.failing_since:.0f}s ({self.failures} tries): "
                f"{self.last_error}")


def _describe(exc: BaseException) -> str:
    try:
        return f"{type(exc).__name__}: {exc}"[:500]
    except Exception:
        return type(exc).__name__


class Supervisor:
    """Runs and watches the named long-lived tasks of one worker."""

    def __init__(
        self,
        on_fatal: Callable[[str, BaseException], None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.on_fatal = on_fatal
        self.clock = clock
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.health: dict[str, Health] = {}
        #: Tasks that ended because they were done (not because they failed or were cancelled).
        self._finished: set[str] = set()

    def every(
        self, name: str, interval: Callable[[], float], tick: Callable[[], Awaitable[object]],
        *, backoff: bool = True,
    ) -> asyncio.Task[None]:
        """Run ``tick`` every ``interval()`` seconds; while it fails, back off (or, with
        ``backoff=False``, keep trying every ``interval()`` seconds)."""
        return self._start(name, self._every(self._health(name), interval, tick, backoff))

    def forever(
        self, name: str, body: Callable[[], Awaitable[object]], *, done: Callable[[], bool] = lambda: False
    ) -> asyncio.Task[None]:
        """Run ``body`` and run it again whenever it fails (or returns before ``done()``)."""
        return self._start(name, self._forever(self._health(name), body, done))

    def dead(self) -> list[str]:
        """Names of tasks that are no longer running though they should be."""
        return [name for name, task in self.tasks.items() if task.done() and name not in self._finished]

    def report(self) -> list[str]:
        """One line per task that is failing or dead."""
        now = self.clock()
        lines = [f"{name}: not running" for name in self.dead()]
        lines += [h.describe(now) for h in self.health.values() if h.failures]
        return lines

    async def stop(self, within: float = 5.0) -> list[str]:
        """Cancel every task; returns the names of those that did not stop ``within`` seconds."""
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        if not tasks:
            return []
        _, stuck = await asyncio.wait(tasks, timeout=within)
        return [t.get_name() for t in stuck]

    # ------------------------------------------------------------------ inside

    def _health(self, name: str) -> Health:
        health = self.health[name] = Health(name)
        return health

    def _start(self, name: str, coro: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self.tasks[name] = task
        return task

    async def _every(
        self, h: Health, interval: Callable[[], float], tick: Callable[[], Awaitable[object]], backoff: bool
    ) -> None:
        delay = interval()
        while True:
            _honour_cancel()
            await asyncio.sleep(delay)
            try:
                await tick()
                _honour_cancel()
            except asyncio.CancelledError:
                raise
            except MemoryError as exc:
                self.on_fatal(h.name, exc)
                return
            except Exception as exc:
                delay = self._failed(h, exc, interval())
                if not backoff:
                    delay = interval()
            except BaseException as exc:
                self.on_fatal(h.name, exc)
                return
            else:
                self._ok(h)
                delay = interval()

    async def _forever(self, h: Health, body: Callable[[], Awaitable[object]], done: Callable[[], bool]) -> None:
        while True:
            recovered = asyncio.get_running_loop().call_later(RECOVERED_AFTER, self._ok, h) if h.failures else None
            try:
                _honour_cancel()
                try:
                    await body()
                finally:
                    if recovered is not None:
                        recovered.cancel()
                _honour_cancel()
                if done():
                    self._finished.add(h.name)
                    return
                raise RuntimeError("returned while it should run on")
            except asyncio.CancelledError:
                if done():
                    self._finished.add(h.name)
                raise
            except MemoryError as exc:
                self.on_fatal(h.name, exc)
                return
            except Exception as exc:
                await asyncio.sleep(self._failed(h, exc, FIRST_RESTART))
            except BaseException as exc:
                self.on_fatal(h.name, exc)
                return

    def _failed(self, h: Health, exc: Exception, base: float) -> float:
        """Record a failure; the delay before the next try."""
        now = self.clock()
        h.failures += 1
        h.last_error = _describe(exc)
        if h.failures == 1:
            h.failing_since = h.last_logged = now
            log.warning(f"{h.name} failed, retrying with backoff: {h.last_error}")
        elif now - h.last_logged >= LOG_EVERY:
            h.last_logged = now
            log.warning(f"{h.name} still failing: {h.describe(now)}")
        return float(min(MAX_BACKOFF, max(base, FIRST_RESTART) * 2 ** min(h.failures - 1, 16)))

    def _ok(self, h: Health) -> None:
        if h.failures:
            log.info(f"{h.name} works again after {h.failures} failure(s)")
            h.failures = 0
            h.last_error = ""
