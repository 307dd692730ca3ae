"""``kubeworkers jobs list --handler H`` on a real Redis with the real scripts (issue 12, item 1: "fast
on a pool with a million finished records"): the scripts keep the jobs index per handler too
(``lua/jobindex.lua``), so a rare handler's jobs are read from their own sets instead of every other
handler's ids; those sets are bounded like the others, expire with the records they point at, and
follow a live job whose handler changes (a sequence's next step)."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio as aioredis
from kubeworkers import ChildrenDone, JobContext, Registry, Step, inspection, queue, scripts
from kubeworkers.client import AsyncClient
from kubeworkers.protocol import JobMessage, JobState, PoolKeys
from pydantic import BaseModel

from tests.support.workers import start_worker, until

KEYS = PoolKeys("default", "p")


def message(job_id: str, handler: str, pool: str = "p") -> JobMessage:
    return JobMessage(job_id=job_id, uid=job_id, namespace="default", pool=pool, handler=handler, input={})


def listed(r: redis.Redis, **query: object) -> inspection.Listing:
    return inspection.list_jobs(r, KEYS, inspection.Query(**query))  # type: ignore[arg-type]


async def test_a_rare_handler_is_listed_from_its_own_index_without_reading_the_others(
    r: aioredis.Redis, redis_sync: redis.Redis
) -> None:
    for n in range(300):
        assert await queue.enqueue(r, message(f"c{n}", "common"))
    for n in range(3):
        assert await queue.enqueue(r, message(f"r{n}", "rare"))
    # Finished: every job but the last 50 common ones and the last rare one (cancel writes a finish).
    for job_id in [f"c{n}" for n in range(250)] + ["r0", "r1"]:
        assert await asyncio.to_thread(queue.cancel_sync, redis_sync, "default", "p", job_id, result_ttl=3600)

    rare = listed(redis_sync, handler="rare")
    # Newest first: finished ids by finish time, the live one by its (earlier) enqueue time.
    assert [rec.job_id for rec in rare.rows] == ["r1", "r0", "r2"]
    assert rare.scanned == 3  # only the rare handler's ids were read, not the 250 other finished ones
    cancelled = listed(redis_sync, handler="rare", state="Cancelled")
    assert ([rec.job_id for rec in cancelled.rows], cancelled.scanned) == (["r1", "r0"], 2)
    queued = listed(redis_sync, handler="rare", state="Queued")
    assert ([rec.job_id for rec in queued.rows], queued.scanned) == (["r2"], 1)
    assert len(listed(redis_sync, handler="common", limit=1000).rows) == 300
    # A finished job left its handler's live set; the finished set expires with the longest TTL.
    assert [m.decode() for m in await r.zrange(KEYS.handler_index("live", "rare"), 0, -1)] == ["r2"]
    assert 3500 < await r.ttl(KEYS.handler_index("Cancelled", "rare")) <= 3600
    assert await r.ttl(KEYS.handler_index("live", "rare")) == -1  # live ids leave when their jobs finish


async def test_the_per_handler_index_is_bounded_by_count_and_by_the_result_ttl(
    r: aioredis.Redis, redis_sync: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scripts, "PRELUDE", scripts.PRELUDE.replace(
        "JOB_INDEX_MAXLEN = 1000000", "JOB_INDEX_MAXLEN = 5"))
    monkeypatch.setattr(scripts, "_SCRIPTS", {})
    for n in range(8):
        assert await queue.enqueue(r, message(f"b{n}", "rare"))
        assert await asyncio.to_thread(queue.cancel_sync, redis_sync, "default", "p", f"b{n}", result_ttl=3600)
    key = KEYS.handler_index("Cancelled", "rare")
    assert [m.decode() for m in await r.zrange(key, 0, -1)] == [f"b{n}" for n in range(3, 8)]
    # On a pool whose records are kept one second: once they are gone, their handler's set goes too.
    short = PoolKeys("default", "q")
    assert await queue.enqueue(r, message("short", "brief", pool="q"))
    assert await asyncio.to_thread(queue.cancel_sync, redis_sync, "default", "q", "short", result_ttl=1)
    assert await r.exists(short.handler_index("Cancelled", "brief")) == 1
    await asyncio.sleep(2.1)
    assert await r.exists(short.handler_index("Cancelled", "brief")) == 0


class Empty(BaseModel):
    pass


async def test_a_live_sequence_is_listed_under_the_handler_of_the_step_it_is_on(
    redis_url: str, r: aioredis.Redis, redis_sync: redis.Redis, client: AsyncClient
) -> None:
    release = asyncio.Event()
    reg = Registry()

    @reg.handler("quick", max_attempts=1)
    async def quick(inp: Empty) -> Empty:
        return inp

    @reg.handler("slow", max_attempts=1)
    async def slow(inp: Empty) -> dict[str, str]:
        await release.wait()
        return {"done": "yes"}

    async with start_worker(redis_url, reg):
        job_id = await client.submit_sequence(
            "p", [Step(name="first", handler="quick"), Step(name="second", handler="slow")], {})

        async def on_second_step() -> bool:
            return (await r.hget(KEYS.record(job_id), "handler")) == b"slow"

        await until(on_second_step, 30)
        on_slow = listed(redis_sync, handler="slow")
        assert [rec.job_id for rec in on_slow.rows] == [job_id]
        on_quick = listed(redis_sync, handler="quick")
        assert (on_quick.rows, on_quick.scanned) == ([], 0)  # it left the first step's live set
        release.set()
        done = await client.wait(job_id, 30)
    assert done.state is JobState.SUCCEEDED, done
    assert [rec.job_id for rec in listed(redis_sync, handler="slow", state="Succeeded").rows] == [job_id]
    assert await r.exists(KEYS.handler_index("live", "slow")) == 0


class Fan(BaseModel):
    n: int


class Item(BaseModel):
    i: int


async def test_a_parent_is_listed_under_its_continuations_handler_once_its_children_are_done(
    redis_url: str, r: aioredis.Redis, redis_sync: redis.Redis, client: AsyncClient
) -> None:
    reg = Registry()

    @reg.handler("fan")
    async def fan(inp: Fan, ctx: JobContext) -> object:
        await ctx.map("item", [Item(i=i) for i in range(inp.n)])
        return ctx.wait(then="join", input={})

    @reg.handler("item")
    async def item(inp: Item) -> dict[str, int]:
        return {"i": inp.i}

    @reg.handler("join")
    async def join(inp: ChildrenDone) -> dict[str, int]:
        return {"children": inp.counts.succeeded}

    async with start_worker(redis_url, reg):
        job_id = await client.submit("p", "fan", {"n": 3})
        done = await client.wait(job_id, 30)
    assert done.state is JobState.SUCCEEDED and done.output == {"children": 3}, done
    assert [rec.job_id for rec in listed(redis_sync, handler="join", state="Succeeded").rows] == [job_id]
    assert len(listed(redis_sync, handler="item", state="Succeeded").rows) == 3
    # The parent left the live set of the handler it started as when its continuation was queued.
    assert await r.exists(KEYS.handler_index("live", "fan")) == 0
    assert await r.exists(KEYS.handler_index("live", "join")) == 0
