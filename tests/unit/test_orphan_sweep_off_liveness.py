"""A long orphan-sweep turn never fails the operator's liveness (it used to share the housekeeping
loop /healthz watched, and a sweep of a big Redis restarted the operator)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

from kubeworkers_operator import lifecycle
from kubeworkers_operator.flows.scheduler import Chore, ChoreScheduler


async def test_a_sweep_stuck_far_past_the_stall_window_keeps_the_operator_healthy() -> None:
    now = [0.0]
    stuck = asyncio.Event()

    async def endless_sweep() -> None:
        stuck.set()
        await asyncio.Event().wait()  # a turn that never ends

    async def quick() -> None:
        return None

    scheduler = ChoreScheduler([Chore("orphan-sweep", 0.0, endless_sweep), Chore("ttl-deletion", 0.01, quick)],
                               clock=lambda: now[0])
    scheduler.start()
    sync: Any = SimpleNamespace(consumer_turned_at=time.time())
    bg = lifecycle.Background(rt=None, sync=sync, chores=scheduler, controllers=None, health=None)  # type: ignore[arg-type]
    await asyncio.wait_for(stuck.wait(), 5)
    now[0] = 10 * lifecycle.STALL_SECONDS  # the sweep has been running for twenty minutes
    await asyncio.sleep(0.05)
    assert scheduler.stats["orphan-sweep"].running_since == 0.0
    assert scheduler.stats["ttl-deletion"].runs > 0  # the other chores go on meanwhile
    assert bg.healthy()
    await scheduler.stop()
