"""What kubeworkers keeps in Redis is bounded (issue 17, defect 2): the dead-letter stream and the
events stream are capped where they are written, with no operator needed. Real redis-server and
real workers.

Approximate trims (``MAXLEN ~``) drop whole stream nodes, so each test makes the nodes small
(``stream-node-max-entries``) and allows one node above the cap.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from kubeworkers import AsyncClient, PermanentError, Registry
from kubeworkers.protocol import EVENTS_MAXLEN, JobState, PoolKeys
from pydantic import BaseModel

from tests.support.workers import start_worker

#: These tests read the events stream, which the worker path writes only for a Job object's jobs
#: (docs/protocol.md, *Events*): their SDK clients submit as the operator enqueues those.
pytestmark = pytest.mark.usefixtures("submits_as_job_objects")

NODE = 10


class Empty(BaseModel):
    pass


@pytest.fixture(autouse=True)
async def small_nodes(r: aioredis.Redis) -> AsyncIterator[None]:
    await r.config_set("stream-node-max-entries", NODE)
    yield
    await r.config_set("stream-node-max-entries", 100)


def failing() -> Registry:
    reg = Registry()

    @reg.handler("boom", max_attempts=1)
    async def boom(inp: Empty) -> None:
        raise PermanentError("no")

    @reg.handler("ok")
    async def ok(inp: Empty) -> int:
        return 1

    return reg


async def test_the_dead_letter_stream_keeps_about_the_pools_dead_letter_maxlen(
    redis_url: str, r: aioredis.Redis
) -> None:
    reg = failing()
    async with AsyncClient(connection=r, registry=reg) as client, start_worker(
        redis_url, reg, pool="p", dead_letter_maxlen=20
    ):
        ids = await client.submit_many("p", "boom", [{}] * 120)
        states = {(await client.wait(job_id, 60, pool="p")).state for job_id in ids}
    assert states == {JobState.FAILED}
    length = await r.xlen(PoolKeys("default", "p").dead_letter)
    assert 20 <= length <= 20 + NODE


async def test_every_writer_keeps_the_events_stream_near_its_cap_without_an_operator(
    redis_url: str, r: aioredis.Redis
) -> None:
    async with r.pipeline(transaction=False) as pipe:
        for i in range(EVENTS_MAXLEN + 500):
            pipe.xadd(PoolKeys("default", "p").events, {"e": str(i)})
        await pipe.execute()
    reg = failing()
    async with AsyncClient(connection=r, registry=reg) as client:
        queued = await client.submit("p", "ok")
        assert await client.cancel(queued)  # cancel.lua (the SDK alone)
        assert EVENTS_MAXLEN <= await r.xlen(PoolKeys("default", "p").events) <= EVENTS_MAXLEN + NODE
        await r.xadd(PoolKeys("default", "p").events, {"e": "more"})
        for _ in range(3 * NODE):
            await r.xadd(PoolKeys("default", "p").events, {"e": "more"})
        async with start_worker(redis_url, reg, pool="p"):  # take.lua and settle.lua
            job_id = await client.submit("p", "ok")
            assert (await client.wait(job_id, 60)).state is JobState.SUCCEEDED
    assert EVENTS_MAXLEN <= await r.xlen(PoolKeys("default", "p").events) <= EVENTS_MAXLEN + NODE
