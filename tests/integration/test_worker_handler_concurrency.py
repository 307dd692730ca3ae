"""Per-handler concurrency limits within a worker (``@handler(concurrency=N)``), on a real Redis."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from kubeworkers import Registry
from kubeworkers.client import AsyncClient
from kubeworkers.protocol import JobState
from pydantic import BaseModel

from tests.support.workers import record, start_worker, until


class Inp(BaseModel):
    n: int = 0



async def test_a_handler_at_its_concurrency_limit_does_not_starve_other_handlers(
    redis_url: str, r: aioredis.Redis, client: AsyncClient
) -> None:
    reg = Registry()
    release = asyncio.Event()
    running = [0]
    most = [0]

    @reg.handler("limited", concurrency=1)
    async def limited(inp: Inp) -> None:
        running[0] += 1
        most[0] = max(most[0], running[0])
        try:
            await release.wait()
        finally:
            running[0] -= 1

    @reg.handler("other")
    async def other(inp: Inp) -> int:
        return inp.n

    async with start_worker(redis_url, reg, concurrency=4):
        # The rate-limited handler's jobs come first in the stream, then the others'.
        slow = [await client.submit("p", "limited", {"n": i}) for i in range(6)]
        fast = [await client.submit("p", "other", {"n": i}) for i in range(3)]
        done = [await client.wait(job_id, 30) for job_id in fast]
        assert [d.state for d in done] == [JobState.SUCCEEDED] * 3
        states = [(await record(r, job_id)).state for job_id in slow]
        assert states.count(JobState.RUNNING) == 1, states
        assert states.count(JobState.QUEUED) == 5, states
        release.set()
        finished = [await client.wait(job_id, 30) for job_id in slow]
    assert [f.state for f in finished] == [JobState.SUCCEEDED] * 6
    assert most[0] == 1
    assert [f.attempts for f in finished] == [1] * 6  # a deferral is not an attempt


async def test_a_worker_whose_only_handler_is_saturated_reads_nothing_more(
    redis_url: str, r: aioredis.Redis, client: AsyncClient
) -> None:
    reg = Registry()
    release = asyncio.Event()

    @reg.handler("limited", concurrency=2)
    async def limited(inp: Inp) -> None:
        await release.wait()

    async with start_worker(redis_url, reg, concurrency=10) as worker:
        jobs = [await client.submit("p", "limited", {"n": i}) for i in range(5)]
        await until(lambda: len(worker.holdings.running) == 2, 30, "two jobs to run")
        # It holds only what it runs: the other three stay in the stream for any worker.
        assert worker.consumer.startable() == 0
        assert len(worker.holdings.held) == 2 and not worker.holdings.undecided
        release.set()
        finished = [await client.wait(job_id, 30) for job_id in jobs]
    assert [f.state for f in finished] == [JobState.SUCCEEDED] * 5
