"""A long-running supervised task that failed and then runs again is reported well again.

Such a task (a worker's reader) has no ticks to say it works, so before, its failures were never
forgotten: after one Redis failover ``/healthz`` said "kw-reader: failing for 3600s (2 tries)"
for as long as the worker lived, and the next failure was logged as "still failing" since the
first one.
"""

from __future__ import annotations

import asyncio

import pytest
from kubeworkers import supervisor
from kubeworkers.supervisor import Supervisor


def _fatal(name: str, exc: BaseException) -> None:
    raise AssertionError(f"{name} was fatal: {exc!r}")


async def test_a_forever_task_that_runs_again_for_a_while_is_no_longer_reported_failing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(supervisor, "RECOVERED_AFTER", 0.2)
    s = Supervisor(_fatal)
    tries = 0
    running = asyncio.Event()

    async def body() -> None:
        nonlocal tries
        tries += 1
        if tries <= 2:
            raise ConnectionError("Redis went away")
        running.set()
        await asyncio.sleep(60)

    s.forever("reader", body)
    await asyncio.wait_for(running.wait(), 5)
    assert [line for line in s.report() if "reader" in line], "the failures were not reported while recent"
    await asyncio.sleep(0.4)
    try:
        assert s.report() == []
        assert s.health["reader"].failures == 0
    finally:
        await s.stop()


async def test_a_forever_task_that_keeps_failing_stays_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "RECOVERED_AFTER", 0.2)
    s = Supervisor(_fatal)

    async def body() -> None:
        await asyncio.sleep(0.01)
        raise ConnectionError("Redis went away")

    s.forever("reader", body)
    await asyncio.sleep(0.6)
    try:
        [line] = s.report()
        assert "reader: failing for" in line and "ConnectionError" in line
        assert s.health["reader"].failures >= 2
    finally:
        await s.stop()
