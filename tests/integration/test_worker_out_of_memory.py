"""Redis at ``maxmemory`` (``noeviction``): it refuses new work, but the upkeep of work already
taken goes on — live workers keep their leases, and the ends of attempts and hand-backs still land
(each frees its stream entry before it writes, and Redis refuses only a script's first write).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from kubeworkers import JobContext, Registry, leases, outbox, scripts, wire
from kubeworkers.client import AsyncClient
from kubeworkers.protocol import WORKER_GROUP, JobState, PoolKeys
from pydantic import BaseModel
from redis.exceptions import OutOfMemoryError

from tests.support.redis_server import RedisServer
from tests.support.workers import LEASE, events, start_worker, until

#: These tests read the events stream, which the worker path writes only for a Job object's jobs
#: (docs/protocol.md, *Events*): their SDK clients submit as the operator enqueues those.
pytestmark = pytest.mark.usefixtures("submits_as_job_objects")

KEYS = PoolKeys("default", "p")


class Item(BaseModel):
    n: int = 0


async def idle_ms(r: aioredis.Redis) -> list[int]:
    """How long each held entry of the pool has gone without a renewal."""
    out: list[int] = []
    for stream in KEYS.streams:
        if await r.exists(stream):
            out += [int(p["time_since_delivered"]) for p in await r.xpending_range(stream, WORKER_GROUP, "-", "+", 100)]
    return out


async def test_live_workers_keep_their_leases_while_redis_refuses_writes_at_maxmemory(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    reg = Registry()
    finish = asyncio.Event()
    ran: Counter[str] = Counter()

    @reg.handler("long", max_attempts=5)
    async def long(inp: Item, ctx: JobContext) -> dict[str, int]:
        ran[ctx.job_id] += 1
        await finish.wait()
        return {"n": inp.n}

    r = aioredis.Redis.from_url(server.url)
    async with AsyncClient(server.url, registry=Registry()) as client:
        ids = await client.submit_many("p", "long", [{"n": i} for i in range(4)])
        async with start_worker(server.url, reg, worker_name="a", concurrency=2), \
                start_worker(server.url, reg, worker_name="b", concurrency=2):
            await until(lambda: sum(ran.values()) == 4, 30, "every job to start")
            await r.config_set("maxmemory", 1)  # every write that may grow memory is refused
            try:
                try:
                    await r.set("probe", "x")
                    raise AssertionError("Redis took a write at maxmemory 1: the scenario is not what it claims")
                except OutOfMemoryError:
                    pass
                worst = 0
                loop = asyncio.get_running_loop()
                end = loop.time() + LEASE * 3
                while loop.time() < end:
                    worst = max([worst, *await idle_ms(r)])
                    await asyncio.sleep(0.1)
            finally:
                await r.config_set("maxmemory", 0)
            await asyncio.sleep(LEASE * 2)  # any reaper that would reclaim an expired lease has had its chance
            finish.set()
            records = [await client.wait(job_id, 60) for job_id in ids]
    evs = await events(r)
    await r.aclose()
    assert worst < LEASE * 1000, f"a held entry went {worst} ms without a renewal (lease {LEASE * 1000:.0f} ms)"
    assert [(rec.state, rec.attempts) for rec in records] == [(JobState.SUCCEEDED, 1)] * 4
    assert ran == dict.fromkeys(ids, 1), "a live worker's job was run again"
    assert Counter(e.job_id for e in evs if e.state.finished) == dict.fromkeys(ids, 1)


async def test_a_hand_back_at_maxmemory_lands_and_a_refused_progress_report_costs_nothing(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    r = aioredis.Redis.from_url(server.url)
    await leases.ensure_groups(r, KEYS)
    async with AsyncClient(connection=r, registry=Registry()) as client:
        job_ids = await client.submit_many("p", "h", [{}, {}])
    taken = wire.parse_take(await scripts.call(r, "take", KEYS.streams, wire.take_args(
        mode="read", group=WORKER_GROUP, consumer="w", count=10, now="1", prefix=KEYS.prefix,
        events=KEYS.events, result_ttl=60,
        default_max_attempts=3, handler_max_attempts="{}", dead_letter_maxlen=100,
    )))
    assert [t.verdict for t in taken] == [wire.Verdict.RUN] * 2
    box = outbox.Outbox(r, KEYS, "w", 60, dead_letter_maxlen=100)
    results: list[Any] = []
    first, second = taken
    # The progress report goes first, so it is the script's first write: the one Redis refuses.
    box.progress(first.entry, outbox.Write(wire.ProgressWrite(
        kind="progress", stream=first.stream, entry=first.entry, job_id=job_ids[0], progress="0.5",
        message="half", event="{}"), done=results.append))
    box.add(outbox.Write(
        wire.requeue(second.stream, second.entry, job_ids[1], "handed back", uncount=True, owner="w"),
        done=results.append,
    ))
    await r.config_set("maxmemory", 1)
    try:
        await asyncio.wait_for(box.flush(), 10)
    finally:
        await r.config_set("maxmemory", 0)
    first_record, second_record = [await r.hgetall(KEYS.record(job_id)) for job_id in job_ids]
    await r.aclose()
    refused, new_entry = results  # the progress report was let go (None); the hand-back landed
    assert refused is None and isinstance(new_entry, bytes) and second_record[b"state"] == b"Queued"
    assert second_record[b"entry"] == new_entry != second.entry.encode()
    assert (first_record[b"state"], first_record.get(b"message", b"")) == (b"Running", b"")
