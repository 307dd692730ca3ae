"""Four priority levels, priority aging, and queue positions, on a real Redis.

Workers take ``critical`` before ``high`` before ``normal`` before ``low``; strictly by default, so
a steady stream of higher jobs starves lower ones, and with ``priority_aging_seconds`` a job that
has waited counts a level higher per period. ``submit`` says whether the job was new and how many
jobs are ahead of it; ``queue.positions`` says the same of queued jobs later (docs/protocol.md,
*Queue positions*).
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from kubeworkers import JobContext, Registry, queue
from kubeworkers.client import AsyncClient, Submitted
from kubeworkers.protocol import WORKER_GROUP, PoolKeys, Priority
from pydantic import BaseModel

from tests.support.workers import start_worker, until

KEYS = PoolKeys("default", "p")


class Step(BaseModel):
    n: int = 0


async def test_critical_jobs_are_taken_before_high_ones(redis_url: str, client: AsyncClient) -> None:
    reg = Registry()
    order: list[str] = []

    @reg.handler("note")
    async def note(inp: Step, ctx: JobContext) -> None:
        order.append(ctx.job_id)

    for level in ("low", "normal", "high", "critical"):
        await client.submit("p", "note", {}, priority=level, job_id=level)
    async with start_worker(redis_url, reg, concurrency=1):
        await client.wait("low", 30)
    assert order == ["critical", "high", "normal", "low"]


def steady_high_stream(reg: Registry, order: list[str], high_jobs: int) -> None:
    """A handler that keeps one high job queued behind each running one, ``high_jobs`` in all: a
    worker of concurrency 1 always finds a high job waiting until the last one."""

    @reg.handler("busy")
    async def busy(inp: Step, ctx: JobContext) -> None:
        order.append("low" if ctx.job_id == "low" else f"high-{inp.n}")
        await asyncio.sleep(0.01)
        if ctx.job_id != "low" and inp.n < high_jobs:
            await ctx.spawn("busy", {"n": inp.n + 1}, priority="high")


async def run_steady_stream(redis_url: str, client: AsyncClient, **worker: float) -> list[str]:
    reg = Registry()
    order: list[str] = []
    steady_high_stream(reg, order, high_jobs=300)
    await client.submit("p", "busy", {"n": 1}, priority="high", job_id="high-1")
    await client.submit("p", "busy", {"n": 10_000}, priority="low", job_id="low")
    async with start_worker(redis_url, reg, concurrency=1, **worker):
        await until(lambda: len(order) == 301, 60, "the 300 high jobs and the low one to run")
    return order


async def test_without_aging_a_low_job_waits_for_a_steady_high_stream_to_end(
    redis_url: str, client: AsyncClient
) -> None:
    order = await run_steady_stream(redis_url, client)
    assert order[-1] == "low"
    assert len(order) == 301


async def test_with_aging_an_old_low_job_is_taken_despite_a_steady_high_stream(
    redis_url: str, client: AsyncClient
) -> None:
    # 0.1 s per level: the low job ranks with the high ones after 0.2 s and above them after
    # 0.3 s; the 300 high jobs take at least 3 s (10 ms each, one at a time).
    order = await run_steady_stream(redis_url, client, priority_aging_seconds=0.1)
    assert "low" in order[:-100], f"the low job ran as job {order.index('low') + 1} of {len(order)}"
    assert len(order) == 301


async def submit_known_queue(client: AsyncClient) -> dict[str, list[Submitted]]:
    """3 critical, 2 high, 5 normal and 4 low jobs on a pool no worker reads yet."""
    counts = {"critical": 3, "high": 2, "normal": 5, "low": 4}
    return {level: [await client.submit("p", "h", {}, priority=level, job_id=f"{level}-{i}") for i in range(n)]
            for level, n in counts.items()}


async def test_submit_returns_the_jobs_ahead_of_the_new_job_in_strict_priority_order(client: AsyncClient) -> None:
    jobs = await submit_known_queue(client)
    # Each job has every job of a higher level ahead of it and the earlier ones of its own.
    assert [j.position for j in jobs["critical"]] == [0, 1, 2]
    assert [j.position for j in jobs["high"]] == [3, 4]
    assert [j.position for j in jobs["normal"]] == [5, 6, 7, 8, 9]
    assert [j.position for j in jobs["low"]] == [10, 11, 12, 13]
    late = await client.submit("p", "h", {}, priority=Priority.HIGH, job_id="late-high")
    assert (late, late.new, late.position) == ("late-high", True, 5)
    assert all(isinstance(j, str) and j.new for level in jobs.values() for j in level)


async def test_positions_of_queued_jobs_follow_what_workers_took(client: AsyncClient, r: aioredis.Redis) -> None:
    await submit_known_queue(client)
    for level in ("critical", "high", "normal", "low"):
        await r.xgroup_create(KEYS.stream(level), WORKER_GROUP, id="0", mkstream=True)
    # A worker was handed two critical jobs and one normal one: they no longer wait.
    await r.xreadgroup(WORKER_GROUP, "pod-a", {KEYS.stream("critical"): ">"}, count=2)
    await r.xreadgroup(WORKER_GROUP, "pod-a", {KEYS.stream("normal"): ">"}, count=1)
    found = await queue.positions(r, "default", "p", ["critical-2", "high-1", "normal-4", "low-0", "nope"])
    assert found.positions == {"critical-2": 0, "high-1": 2, "normal-4": 1 + 2 + 3, "low-0": 1 + 2 + 4, "nope": None}
    assert found.taken == 3
    # Jobs submitted now that the group exists are counted from their number on the stream.
    later = await client.submit("p", "h", {}, priority="normal", job_id="normal-later")
    assert later.position == 1 + 2 + 4
    again = await queue.positions(r, "default", "p", ["normal-later"])
    assert again.positions == {"normal-later": 7}


async def test_positions_deep_in_a_long_queue_are_counted_from_the_nearer_end(
    client: AsyncClient, r: aioredis.Redis
) -> None:
    ids = await client.submit_many("p", "h", [{} for _ in range(300)], job_ids=[f"j{i}" for i in range(300)])
    assert [j.position for j in ids] == list(range(300))
    assert (await queue.positions(r, "default", "p", ["j40", "j250"])).positions == {"j40": 40, "j250": 250}
    await r.xgroup_create(KEYS.stream("normal"), WORKER_GROUP, id="0")
    await r.xreadgroup(WORKER_GROUP, "pod-a", {KEYS.stream("normal"): ">"}, count=10)
    # j5 was handed to a worker (it starts next); j150 has 140 undelivered jobs ahead of it.
    assert (await queue.positions(r, "default", "p", ["j150", "j5"])).positions == {"j150": 140, "j5": 0}
    # Without the entry's number (a job handed back gets a fresh entry), the count from either
    # end is exact within 100 jobs of it and estimated by the entries' times beyond.
    await r.hset(KEYS.record("j150"), "entry_seq", "")
    await r.hset(KEYS.record("j280"), "entry_seq", "")
    estimate = (await queue.positions(r, "default", "p", ["j150", "j280"])).positions
    assert estimate["j280"] == 270
    assert estimate["j150"] is not None and 100 <= estimate["j150"] <= 289 - 100


async def test_a_duplicate_submit_returns_the_same_id_marked_not_new_with_its_current_position(
    client: AsyncClient,
) -> None:
    first = await client.submit("p", "h", {}, job_id="once")
    await client.submit("p", "h", {}, priority="critical", job_id="urgent")
    again = await client.submit("p", "h", {}, job_id="once")
    assert (first, first.new, first.position) == ("once", True, 0)
    assert (again, again.new, again.position) == ("once", False, 1)
    both = await client.submit_many("p", "h", [{}, {}], job_ids=["once", "fresh"])
    assert [(j, j.new, j.position) for j in both] == [("once", False, 1), ("fresh", True, 2)]


async def test_a_delayed_job_has_no_position(client: AsyncClient) -> None:
    later = await client.submit("p", "h", {}, job_id="later", delay=3600)
    assert (later.new, later.position) == (True, None)
