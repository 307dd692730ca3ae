"""A job that wakes an idle worker: its handler starts before the worker does anything else.

An idle worker waits in a blocking read; when a job arrives, the take that decides it is the only
round trip between the read and the handler. The worker's next take (the read that finds the
stream empty again) is sent once the woken handlers have started, not before them, so it is not
on the submit-to-start path (docs/benchmarks.md, *Where the submit-to-start time goes*). A busy
worker keeps sending its next take first: Redis then works on it while Python runs the batch.
"""

from __future__ import annotations

import asyncio
import re

from kubeworkers import Registry
from kubeworkers.client import AsyncClient
from kubeworkers.protocol import JobState
from pydantic import BaseModel

from tests.support.workers import awaiting, start_worker, until


class Empty(BaseModel):
    pass


class N(BaseModel):
    n: int


#: The consumer's take, as :func:`tests.support.workers.awaiting` names the frame.
IN_A_TAKE = re.compile(r"consumer\.py:\d+ _take\b")


async def test_job_that_wakes_an_idle_worker_starts_before_the_worker_takes_again(
    redis_url: str, client: AsyncClient
) -> None:
    reg = Registry()
    seen: list[str] = []
    worker_box: list[object] = []

    @reg.handler("look")
    async def look(inp: Empty) -> None:
        worker = worker_box[0]
        seen.append(awaiting(worker._reader))  # type: ignore[attr-defined]

    async with start_worker(redis_url, reg) as worker:
        worker_box.append(worker)
        for _ in range(3):
            await until(lambda: worker.consumer.in_blocking_read, 20, "the worker to wait idle in its read")
            done = await client.wait(await client.submit("p", "look"), 30)
            assert done.state is JobState.SUCCEEDED
    assert len(seen) == 3
    for where in seen:
        assert "consumer.py" in where, where
        assert not IN_A_TAKE.search(where), f"the consumer was already in its next take: {where}"


async def test_every_job_of_a_burst_that_wakes_an_idle_worker_runs_once(
    redis_url: str, client: AsyncClient
) -> None:
    reg = Registry()
    ran: list[int] = []

    @reg.handler("count")
    async def count(inp: N) -> None:
        ran.append(inp.n)
        await asyncio.sleep(0)

    async with start_worker(redis_url, reg, concurrency=2) as worker:
        await until(lambda: worker.consumer.in_blocking_read, 20, "the worker to wait idle in its read")
        ids = await client.submit_many("p", "count", [{"n": n} for n in range(20)])
        records = [await client.wait(job_id, 30) for job_id in ids]
    assert all(r.state is JobState.SUCCEEDED and r.attempts == 1 for r in records)
    assert sorted(ran) == list(range(20))
