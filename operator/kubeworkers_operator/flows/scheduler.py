"""The operator's periodic chores: one list, one small scheduler, each chore on its own clock.

Every periodic thing the operator does is a :class:`Chore` in the one list
:func:`kubeworkers_operator.lifecycle.chores` builds: a name, an interval, and an
async function owned (and tested) by the module the chore belongs to. Each chore
runs in a task of its own, so a slow one (a resync of many Jobs, a sweep of a big
Redis) delays only itself, never the TTL deletions or the pending retries. A chore
that raises is counted, its last error kept, and run again after its interval; it
never stops the scheduler or another chore.

Liveness asks :meth:`ChoreScheduler.alive`: every chore's task still runs. It does
*not* ask that every chore finished within some time, so a long chore never gets
the operator restarted; how long each takes is in its :class:`ChoreStats` and in
the metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Chore:
    """One periodic task of the operator."""

    name: str
    """Names it in logs and metrics (``chore`` label)."""
    interval: float
    """Seconds from the end of one run to the start of the next; the first run waits one interval."""
    run: Callable[[], Awaitable[object]]
    """The work; its return value is ignored, an exception is counted and logged."""
    wakeup: Wakeup | None = None
    """Lets the chore run before its interval is up: at a time it names, or at once when poked."""


class Wakeup:
    """An earlier start for one chore: :meth:`at` a wall-clock time, or :meth:`poke` for now.

    The chore's loop waits for whichever comes first, the chore's interval or this; a
    time set before the wait is kept until the next run starts. The Schedule chore sets
    the next slot's time after every pass, so it wakes at that slot rather than polling.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._poked = asyncio.Event()
        self._at: float | None = None

    def poke(self) -> None:
        """Run the chore now (several pokes before it runs make one run)."""
        self._poked.set()

    def at(self, when: float) -> None:
        """Run the chore no later than unix time ``when`` (the earliest of several wins)."""
        self._at = when if self._at is None else min(self._at, when)

    async def wait(self, longest: float) -> None:
        """Sleep until poked, until the time set with :meth:`at`, or ``longest`` seconds."""
        timeout = longest if self._at is None else max(0.0, min(longest, self._at - self._clock()))
        try:
            await asyncio.wait_for(self._poked.wait(), timeout)
        except TimeoutError:
            pass
        self._poked.clear()
        self._at = None


@dataclass
class ChoreStats:
    """What one chore has done so far."""

    runs: int = 0
    failures: int = 0
    last_error: str | None = None
    """``repr`` of the last failure's exception (kept after later successes; compare ``failures``)."""
    last_duration: float | None = None
    """Seconds the last finished run took."""
    running_since: float | None = None
    """Monotonic time the current run started; None between runs."""


#: Called after every run: (chore name, seconds it took, the exception or None).
RunObserver = Callable[[str, float, BaseException | None], None]


class ChoreScheduler:
    """Runs each :class:`Chore` in its own task, forever, until :meth:`stop`."""

    def __init__(
        self, chores: Iterable[Chore], *, observe: RunObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.chores = list(chores)
        names = [chore.name for chore in self.chores]
        if len(set(names)) != len(names):
            raise ValueError(f"chore names must be unique: {names}")
        self.stats = {chore.name: ChoreStats() for chore in self.chores}
        self._observe = observe
        self._clock = clock
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop(chore), name=f"chore-{chore.name}") for chore in self.chores]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def alive(self) -> bool:
        """Every chore's task is running (a chore in the middle of a long run counts as alive)."""
        return bool(self._tasks) and all(not task.done() for task in self._tasks)

    async def _loop(self, chore: Chore) -> None:
        while True:
            if chore.wakeup is None:
                await asyncio.sleep(chore.interval)
            else:
                await chore.wakeup.wait(chore.interval)
            await self.run_once(chore)

    async def run_once(self, chore: Chore) -> None:
        """Run ``chore`` once with its accounting; never raises (but for cancellation)."""
        stats = self.stats[chore.name]
        started = self._clock()
        stats.running_since = started
        error: BaseException | None = None
        try:
            await chore.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = exc
            stats.failures += 1
            stats.last_error = repr(exc)
            logger.exception("chore %s failed (it runs again in %.0f s)", chore.name, chore.interval)
        finally:
            stats.running_since = None
        stats.runs += 1
        stats.last_duration = self._clock() - started
        if self._observe is not None:
            self._observe(chore.name, stats.last_duration, error)
