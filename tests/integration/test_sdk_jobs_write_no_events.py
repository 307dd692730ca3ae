"""The worker path writes events only for jobs a Job object stands behind (docs/protocol.md, *Events*).

The operator is the events stream's one reader, and drops an SDK job's events (it has no object to
copy them to), so ``take.lua`` and ``settle.lua`` do not write them: a seventh of each SDK job's
Redis work. These tests run the same life (a progress report, a failed attempt retried, a success)
once as an SDK job and once as a Job object's, on one worker and a real Redis: the SDK job leaves
no event and its record holds the whole life; the Job object's job leaves every event as before.
"""

from __future__ import annotations

import json

import redis.asyncio as aioredis
from kubeworkers import JobContext, Registry, RetryPolicy
from kubeworkers.client import AsyncClient
from kubeworkers.protocol import JobState, PoolKeys
from pydantic import BaseModel

from tests.support.workers import events, record, start_worker, submit_cr, until


class N(BaseModel):
    n: int


#: One failed attempt, retried at once, then a success.
FAST_RETRY = RetryPolicy(maximum_attempts=3, initial_interval_seconds=0.01, maximum_interval_seconds=0.01)


def _registry(calls: dict[str, int]) -> Registry:
    reg = Registry()

    @reg.handler("flaky", retry=FAST_RETRY)
    async def flaky(inp: N, ctx: JobContext) -> dict[str, int]:
        calls[ctx.job_id] = calls.get(ctx.job_id, 0) + 1
        await ctx.progress(0.5, "half way")
        if calls[ctx.job_id] == 1:
            raise RuntimeError("first attempt fails")
        return {"done": inp.n}

    return reg


async def test_an_sdk_job_leaves_no_event_and_its_record_holds_its_life(
    redis_url: str, r: aioredis.Redis, client: AsyncClient
) -> None:
    calls: dict[str, int] = {}
    async with start_worker(redis_url, _registry(calls)):
        job_id = await client.submit("p", "flaky", {"n": 7})
        done = await client.wait(job_id, 30)
    assert calls == {job_id: 2}
    assert (done.state, done.output, done.attempts) == (JobState.SUCCEEDED, {"done": 7}, 2)
    log = json.loads(await r.hget(PoolKeys("default", "p").record(job_id), "attempt_log") or "[]")
    assert [(a["attempt"], a["outcome"]) for a in log] == [(1, "retry"), (2, "Succeeded")]
    assert await r.exists(PoolKeys("default", "p").events) == 0, await events(r)


async def test_a_job_objects_job_leaves_every_event_of_the_same_life(
    redis_url: str, r: aioredis.Redis
) -> None:
    calls: dict[str, int] = {}
    async with start_worker(redis_url, _registry(calls)):
        job_id = await submit_cr(r, "resize-1", "flaky", {"n": 7})
        await until(lambda: _finished(r, job_id), 30, "the Job object's job to finish")
    assert calls == {job_id: 2}
    got = await events(r, job_id)
    assert [(e.state, e.attempt) for e in got] == [
        (JobState.RUNNING, 1), (JobState.RUNNING, 1), (JobState.QUEUED, 1),
        (JobState.RUNNING, 2), (JobState.RUNNING, 2), (JobState.SUCCEEDED, 2),
    ]
    assert [e.progress for e in got if e.state is JobState.RUNNING] == [None, 0.5, None, 0.5]
    assert got[2].error is not None and got[2].error.type == "RuntimeError"
    assert got[-1].output == {"done": 7}
    assert {e.uid for e in got} == {(await record(r, job_id)).uid}


async def _finished(r: aioredis.Redis, job_id: str) -> bool:
    return (await record(r, job_id)).state.finished
