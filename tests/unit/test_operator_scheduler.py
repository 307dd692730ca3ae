"""The periodic chores: one list, each on its own clock; a slow or failing chore harms no other."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
from kubeworkers_operator import lifecycle
from kubeworkers_operator.flows import orphans, schedules
from kubeworkers_operator.flows.scheduler import Chore, ChoreScheduler, Wakeup
from kubeworkers_operator.settings import OperatorSettings


async def test_a_slow_chore_does_not_starve_the_others() -> None:
    never = asyncio.Event()
    quick_runs = 0
    quick_ran_five_times = asyncio.Event()

    async def quick() -> None:
        nonlocal quick_runs
        quick_runs += 1
        if quick_runs == 5:
            quick_ran_five_times.set()

    scheduler = ChoreScheduler([Chore("slow", 0, never.wait), Chore("quick", 0, quick)])
    scheduler.start()
    try:
        await quick_ran_five_times.wait()
        assert scheduler.stats["slow"].running_since is not None  # still in its first run
        assert scheduler.stats["slow"].runs == 0
        assert scheduler.alive()
    finally:
        await scheduler.stop()


async def test_a_failing_chore_is_counted_with_its_last_error_and_runs_again() -> None:
    calls = 0
    seen: list[tuple[str, BaseException | None]] = []
    three_runs = asyncio.Event()

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("redis went away")

    def observe(name: str, _seconds: float, error: BaseException | None) -> None:
        seen.append((name, error))
        if len(seen) == 3:
            three_runs.set()

    scheduler = ChoreScheduler([Chore("flaky", 0, flaky)], observe=observe)
    scheduler.start()
    try:
        await three_runs.wait()
        stats = scheduler.stats["flaky"]
        assert stats.failures == 1
        assert stats.last_error is not None and "redis went away" in stats.last_error
        assert isinstance(seen[0][1], ConnectionError) and seen[1] == ("flaky", None)
        assert scheduler.alive()
    finally:
        await scheduler.stop()
    assert not scheduler.alive()


def test_chore_names_are_unique() -> None:
    async def nothing() -> None: ...

    with pytest.raises(ValueError, match="unique"):
        ChoreScheduler([Chore("a", 1, nothing), Chore("a", 2, nothing)])


def test_every_periodic_thing_the_operator_does_is_one_list_on_the_settings_intervals() -> None:
    settings = OperatorSettings(resync_interval_seconds=61, pending_retry_seconds=11, orphan_sweep_seconds=301)
    rt: Any = SimpleNamespace(settings=settings, redis=object())
    chores = {chore.name: chore for chore in lifecycle.chores(rt, controllers=object())}  # type: ignore[arg-type]
    intervals = {name: chore.interval for name, chore in chores.items()}
    # The orphan sweep runs in bounded turns; a pass over every record starts every --orphan-sweep-interval.
    assert chores["orphan-sweep"].run.args[1].period_seconds == 301  # type: ignore[attr-defined]
    assert intervals == {
        "schedules": schedules.PASS_SECONDS,
        "ttl-deletion": 1.0,
        "pending-retry": 11,
        "pool-resync": 11,
        "record-resync": 61,
        "orphan-sweep": orphans.TURN_SECONDS,
        "events-trim": 30.0,
        "queue-positions": 5.0,
        "redis-master": 1.0,
    }


async def test_a_chore_running_past_the_stall_window_keeps_the_operator_live(monkeypatch: pytest.MonkeyPatch) -> None:
    started, never = asyncio.Event(), asyncio.Event()

    async def endless_sweep() -> None:
        started.set()
        await never.wait()

    scheduler = ChoreScheduler([Chore("orphan-sweep", 0, endless_sweep)])
    scheduler.start()
    await started.wait()
    later = time.time() + 10 * lifecycle.STALL_SECONDS
    monkeypatch.setattr(lifecycle.time, "time", lambda: later)
    sync = SimpleNamespace(consumer_turned_at=later)  # the consumer turned just now
    work = lifecycle.LeaderWork(sync=sync, chores=scheduler, controllers=None)  # type: ignore[arg-type]
    bg = lifecycle.Background(rt=None, health=None, work=work)  # type: ignore[arg-type]
    try:
        assert bg.healthy()
        sync.consumer_turned_at = later - 2 * lifecycle.STALL_SECONDS  # the consumer is stuck: restart
        assert not bg.healthy()
        bg.work = None  # a standby runs no consumer: idle is healthy
        assert bg.healthy()
    finally:
        await scheduler.stop()


async def test_a_chore_with_a_wakeup_runs_at_the_time_it_names_not_after_its_interval() -> None:
    ran = asyncio.Event()
    wakeup = Wakeup()

    async def run() -> None:
        ran.set()

    wakeup.at(time.time())  # due now; the interval alone would wait an hour
    scheduler = ChoreScheduler([Chore("timed", 3600, run, wakeup)])
    scheduler.start()
    try:
        await asyncio.wait_for(ran.wait(), 30)
        ran.clear()
        wakeup.poke()
        await asyncio.wait_for(ran.wait(), 30)
        assert scheduler.stats["timed"].runs == 2
    finally:
        await scheduler.stop()
