"""Invariant 1 for the worker: a Redis restart (with AOF) loses no job, and workers carry on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis.asyncio as aioredis
from kubeworkers import AsyncClient, Registry
from kubeworkers.protocol import JobState, PoolKeys
from pydantic import BaseModel

from tests.support.redis_server import RedisServer
from tests.support.workers import start_worker, until


class Item(BaseModel):
    n: int


async def test_jobs_survive_a_redis_crash_and_restart_with_aof_and_the_worker_reconnects(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory(aof=True)
    reg = Registry()
    done: set[int] = set()

    @reg.handler("item")
    async def item(inp: Item) -> None:
        await asyncio.sleep(0.01)
        done.add(inp.n)

    async with AsyncClient(server.url, registry=reg) as client:
        first = await client.submit_many("p", "item", ({"n": i} for i in range(200)))
        async with start_worker(server.url, reg, concurrency=4):
            await until(lambda: len(done) >= 20, 60, "some jobs to finish before the crash")
            await asyncio.to_thread(server.restart)  # SIGKILL, then start on the same AOF
            second = await client.submit_many("p", "item", ({"n": i} for i in range(200, 300)))

            async def all_finished() -> bool:
                try:
                    records = [await client.get(j, pool="p") for j in first + second]
                except (aioredis.ConnectionError, OSError):
                    return False
                return all(r is not None and r.state is JobState.SUCCEEDED for r in records)

            await until(all_finished, 120, "every job, before and after the restart, to succeed")
    assert done == set(range(300))
    r = aioredis.Redis.from_url(server.url)
    assert await r.xlen(PoolKeys("default", "p").stream("normal")) == 0
    await r.aclose()
