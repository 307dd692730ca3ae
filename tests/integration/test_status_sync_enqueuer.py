"""Job enqueues arriving together share pipelined round trips, and each still gets its own answer."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from kubeworkers.protocol import JobMessage, PoolKeys
from kubeworkers_operator.adapters.enqueuer import Enqueuer


def msg(i: int, uid: str | None = None) -> JobMessage:
    return JobMessage(job_id=f"ns/job-{i}", uid=uid or f"uid-{i}", namespace="ns", pool="p", handler="h",
                      input={"i": i})


async def test_concurrent_enqueues_are_each_answered_and_land_once_on_the_stream(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    enqueuer = Enqueuer(r, linger=0.01, max_batch=64)
    first = await asyncio.gather(*(enqueuer.submit(msg(i)) for i in range(300)))
    again = await asyncio.gather(*(enqueuer.submit(msg(i)) for i in range(0, 300, 3)))
    assert first == [True] * 300
    assert again == [False] * 100  # same uids: Redis already has them
    assert await r.xlen(PoolKeys("ns", "p").stream("normal")) == 300
    await enqueuer.close()
    await r.aclose()


async def test_an_enqueue_failure_reaches_every_waiting_caller(redis_url: str) -> None:
    r = aioredis.Redis.from_url("redis://127.0.0.1:1/0")  # nothing listens there
    enqueuer = Enqueuer(r, linger=0.01)
    results = await asyncio.gather(*(enqueuer.submit(msg(i)) for i in range(5)), return_exceptions=True)
    assert all(isinstance(x, Exception) for x in results)
    await enqueuer.close()
    await r.aclose()
