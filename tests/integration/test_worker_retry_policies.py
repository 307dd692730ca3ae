"""Retry policies (Temporal's shape, per handler and per job) and expiry (Celery's ``expires``),
on an in-process worker and a real Redis."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from kubeworkers import Registry, RetryPolicy
from kubeworkers.client import AsyncClient
from kubeworkers.protocol import JobState, PoolKeys
from pydantic import BaseModel

from tests.support.workers import events, start_worker

#: These tests read the events stream, which the worker path writes only for a Job object's jobs
#: (docs/protocol.md, *Events*): their SDK clients submit as the operator enqueues those.
pytestmark = pytest.mark.usefixtures("submits_as_job_objects")


class Inp(BaseModel):
    n: int = 0


class Unfixable(Exception):
    pass



async def test_non_retryable_error_fails_at_once_without_retry(
    redis_url: str, r: aioredis.Redis, client: AsyncClient
) -> None:
    reg = Registry()
    runs: list[int] = []

    @reg.handler("h", retry=RetryPolicy(maximum_attempts=5, initial_interval_seconds=0.01,
                                        non_retryable_error_types=("Unfixable",)))
    async def h(inp: Inp) -> None:
        runs.append(inp.n)
        raise Unfixable("the input can never work")

    async with start_worker(redis_url, reg):
        done = await client.wait(await client.submit("p", "h", {"n": 1}), 30)
    assert done.state is JobState.FAILED
    assert done.attempts == 1 and runs == [1]
    assert done.error is not None and done.error.type == "Unfixable" and not done.error.retryable
    assert "non-retryable" in (done.message or "")
    assert await r.xlen(PoolKeys("default", "p").dead_letter) == 1


async def test_a_job_may_name_more_non_retryable_types_than_its_handler(
    redis_url: str, client: AsyncClient
) -> None:
    reg = Registry()
    runs: list[int] = []

    @reg.handler("h", retry=RetryPolicy(maximum_attempts=4, initial_interval_seconds=0.01))
    async def h(inp: Inp) -> None:
        runs.append(inp.n)
        raise KeyError("missing")

    async with start_worker(redis_url, reg):
        retried = await client.wait(await client.submit("p", "h", {"n": 1}), 30)
        once = await client.wait(await client.submit(
            "p", "h", {"n": 2}, retry=RetryPolicy(non_retryable_error_types=("KeyError",))), 30)
    assert (retried.state, retried.attempts) == (JobState.FAILED, 4)
    assert (once.state, once.attempts) == (JobState.FAILED, 1)
    assert runs == [1, 1, 1, 1, 2]


async def test_a_jobs_retry_policy_overrides_its_handlers_attempts_and_interval(
    redis_url: str, r: aioredis.Redis, client: AsyncClient
) -> None:
    reg = Registry()

    # The handler's own interval (an hour) would leave the retry parked in the delayed set.
    @reg.handler("h", retry=RetryPolicy(maximum_attempts=2, initial_interval_seconds=3600))
    async def h(inp: Inp) -> None:
        raise RuntimeError("flaky")

    async with start_worker(redis_url, reg):
        job_id = await client.submit("p", "h", {}, retry=RetryPolicy(maximum_attempts=3,
                                                                     initial_interval_seconds=0.01))
        done = await client.wait(job_id, 30)
    assert (done.state, done.attempts, done.max_attempts) == (JobState.FAILED, 3, 3)
    assert [e.state for e in await events(r, job_id)].count(JobState.QUEUED) == 2


async def test_expired_job_fails_without_running(redis_url: str, r: aioredis.Redis, client: AsyncClient) -> None:
    reg = Registry()
    runs: list[int] = []

    @reg.handler("h")
    async def h(inp: Inp) -> None:
        runs.append(inp.n)

    # Submitted while no worker serves the pool; expired by the time one starts.
    stale = await client.submit("p", "h", {"n": 1}, expires=0.001)
    fresh = await client.submit("p", "h", {"n": 2}, expires=3600)
    await asyncio.sleep(0.01)
    async with start_worker(redis_url, reg):
        expired = await client.wait(stale, 30)
        ran = await client.wait(fresh, 30)
    assert expired.state is JobState.FAILED and runs == [2]
    assert expired.error is not None and expired.error.type == "Expired" and not expired.error.retryable
    assert "expired" in expired.error.message
    assert ran.state is JobState.SUCCEEDED
    stats = await r.hgetall(PoolKeys("default", "p").stats)
    assert int(stats[b"rejected"]) == 1  # not a run: the duration statistics leave it out


async def test_submit_refuses_a_soft_timeout_not_below_the_hard_one(redis_url: str) -> None:
    reg = Registry()

    @reg.handler("h", timeout=10)
    async def h(inp: Inp) -> None: ...

    async with AsyncClient(redis_url, registry=reg) as c:
        with pytest.raises(ValueError, match=r"soft_timeout .* must be shorter than timeout"):
            await c.submit("p", "h", {}, soft_timeout=10)
        with pytest.raises(ValueError, match=r"soft_timeout .* must be shorter than timeout"):
            await c.submit("p", "h", {}, soft_timeout=2, timeout=1)
        with pytest.raises(ValueError, match="expires must be"):
            await c.submit("p", "h", {}, expires=float("nan"))
