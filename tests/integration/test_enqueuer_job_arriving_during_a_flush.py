"""A Job that arrives while the previous batch is on its way to Redis is enqueued too.

Found by the cluster-wide e2e test (tests/e2e/test_operator_cluster_wide.py), where Jobs of
separate ``kubectl apply`` calls arrive a few hundred milliseconds apart: the second one stayed
without any status until another Job arrived (minutes, in a quiet cluster; an unrelated Job
created later unstuck them all at once). The cause was in
``operator/kubeworkers_operator/adapters/enqueuer.py``: ``Enqueuer.submit`` started a flush only
when ``self._flusher`` was done, but the lingering flusher stayed "not done" while it awaited
``queue.enqueue_many``; a submit in that window waited in ``_pending`` for yet another submit.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
from kubeworkers import queue
from kubeworkers.protocol import JobMessage, PoolKeys
from kubeworkers_operator.adapters.enqueuer import Enqueuer


def msg(i: int) -> JobMessage:
    return JobMessage(job_id=f"ns/job-{i}", uid=f"uid-{i}", namespace="ns", pool="p", handler="h", input={})


async def test_a_job_submitted_while_the_previous_batch_is_in_flight_is_enqueued(
    r: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_flight, release = asyncio.Event(), asyncio.Event()
    real = queue.enqueue_many

    async def held_at_the_door(client: Any, messages: list[JobMessage]) -> list[bool]:
        in_flight.set()
        await release.wait()  # the first round trip is slow (a script load, a busy Redis)
        return await real(client, messages)

    monkeypatch.setattr(queue, "enqueue_many", held_at_the_door)
    enqueuer = Enqueuer(r, linger=0.01)
    first = asyncio.create_task(enqueuer.submit(msg(1)))
    await in_flight.wait()
    second = asyncio.create_task(enqueuer.submit(msg(2)))
    await asyncio.sleep(0.05)  # the second Job has arrived and waits
    release.set()
    try:
        # No other Job arrives: both must be answered on their own.
        answers = await asyncio.wait_for(asyncio.gather(first, second), timeout=10)
    finally:
        await enqueuer.close()
    assert answers == [True, True]
    assert await r.xlen(PoolKeys("ns", "p").stream("normal")) == 2
