"""Delayed jobs (``submit(delay=…)`` / ``at=…``, a Job's ``spec.notBefore``) on a real Redis.

A delayed job waits in the pool's delayed set (the retries' set) held by no worker, and the
promoter of a running worker moves it onto its stream when it is due.
"""

from __future__ import annotations

import asyncio
import datetime
import time

import pytest
import redis.asyncio as aioredis
from kubeworkers import Registry
from kubeworkers.client import AsyncClient
from kubeworkers.protocol import JobState, PoolKeys
from kubeworkers_operator.autoscaling.load import measure_load
from kubeworkers_operator.autoscaling.signals import DELAYED_LEAD_SECONDS, RedisSignalReader
from pydantic import BaseModel

from tests.support.workers import start_worker, until

KEYS = PoolKeys("default", "p")


class Empty(BaseModel):
    pass


async def test_delayed_job_waits_in_the_delayed_set_and_on_no_stream(r: aioredis.Redis, client: AsyncClient) -> None:
    before = time.time()
    job_id = await client.submit("p", "echo", {}, delay=datetime.timedelta(seconds=30))
    for stream in KEYS.streams:
        assert await r.xlen(stream) == 0
    [(_member, score)] = await r.zrange(KEYS.delayed, 0, -1, withscores=True)
    assert before + 30 <= score <= time.time() + 30
    record = await client.get(job_id, pool="p")
    assert record is not None and record.state is JobState.QUEUED and record.attempts == 0
    assert record.not_before == pytest.approx(score, abs=1e-5)
    assert record.entry is None


async def test_delayed_job_starts_within_a_second_of_its_time_and_never_before(
    redis_url: str, r: aioredis.Redis, client: AsyncClient
) -> None:
    started: list[float] = []
    reg = Registry()

    @reg.handler("echo")
    async def echo(inp: Empty) -> None:
        started.append(time.time())

    async with start_worker(redis_url, reg):
        job_id = await client.submit("p", "echo", {}, delay=2.0)
        due = (await client.get(job_id, pool="p")).not_before  # type: ignore[union-attr]
        assert due is not None
        # A running worker is there the whole time: it must not take the job early.
        while time.time() < due - 0.2:
            record = await client.get(job_id, pool="p")
            assert record is not None and record.state is JobState.QUEUED and record.attempts == 0
            await asyncio.sleep(0.05)
        await until(lambda: bool(started), 5, "the delayed job to run")
        record = await client.wait(job_id, 5, pool="p")
    assert record.state is JobState.SUCCEEDED and record.attempts == 1
    assert due <= started[0] < due + 1.0
    assert record.started_at is not None and due <= record.started_at < due + 1.0


async def test_a_start_time_in_the_past_goes_straight_onto_the_stream(r: aioredis.Redis, client: AsyncClient) -> None:
    await client.submit("p", "echo", {}, at=datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5))
    assert await r.zcard(KEYS.delayed) == 0
    assert await r.xlen(KEYS.stream("normal")) == 1


async def test_submit_refuses_both_delay_and_at_and_a_naive_or_negative_time(client: AsyncClient) -> None:
    with pytest.raises(ValueError, match="not both"):
        await client.submit("p", "echo", {}, delay=5, at=datetime.datetime.now(datetime.UTC))
    with pytest.raises(ValueError, match="aware"):
        await client.submit("p", "echo", {}, at=datetime.datetime.now())
    with pytest.raises(ValueError, match="delay"):
        await client.submit("p", "echo", {}, delay=-1)


async def test_submitting_a_delayed_job_again_keeps_one_entry(r: aioredis.Redis, client: AsyncClient) -> None:
    await client.submit("p", "echo", {}, job_id="once", delay=60)
    await client.submit("p", "echo", {}, job_id="once", delay=60)
    assert await r.zcard(KEYS.delayed) == 1


async def test_a_job_due_in_an_hour_keeps_no_worker_up_one_due_within_the_lead_is_backlog(
    r: aioredis.Redis, client: AsyncClient
) -> None:
    await client.submit("p", "echo", {}, delay=3600)
    load = measure_load(await RedisSignalReader(r, KEYS).read())
    assert (load.backlog, load.retries_waiting) == (0, 0)
    assert load.idle

    await client.submit("p", "echo", {}, delay=DELAYED_LEAD_SECONDS / 2)
    load = measure_load(await RedisSignalReader(r, KEYS).read())
    assert load.backlog == 1 and not load.idle
