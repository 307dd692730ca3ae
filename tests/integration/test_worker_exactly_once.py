"""Exactly one terminal write per job, whatever happens to the worker's writes on the way to Redis.

A reply lost on the way back (take or settle), a duplicate stream entry, one bad write in a
batch, a write Redis refuses to receive, a blocking read that returns more than asked: each job
still gets exactly one start and one terminal event, and no other job pays for it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from kubeworkers import JobContext, Registry, scripts, wire
from kubeworkers.client import AsyncClient
from kubeworkers.protocol import JobEvent, JobState, PoolKeys, Priority
from kubeworkers.redis_ops import Command
from pydantic import BaseModel

from tests.support.redis_server import RedisServer
from tests.support.workers import events, start_worker, until

#: These tests read the events stream, which the worker path writes only for a Job object's jobs
#: (docs/protocol.md, *Events*): their SDK clients submit as the operator enqueues those.
pytestmark = pytest.mark.usefixtures("submits_as_job_objects")

FINISHED = {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
KEYS = PoolKeys("default", "p")


class Item(BaseModel):
    n: int = 0


def starts(evs: list[JobEvent]) -> Counter[str]:
    return Counter(e.job_id for e in evs if e.state is JobState.RUNNING and e.progress is None)


def terminals(evs: list[JobEvent]) -> Counter[str]:
    return Counter(e.job_id for e in evs if e.state in FINISHED)


def lose_replies(monkeypatch: pytest.MonkeyPatch, script: str, times: int,
                 when: Callable[[Any], bool] = bool) -> list[Any]:
    """Make the next ``times`` calls of ``script`` whose reply satisfies ``when`` run in Redis but
    lose their reply (the client sees a timeout), as a paused or slow Redis does."""
    real = scripts.call
    lost: list[Any] = []

    async def call(r: aioredis.Redis, name: str, *args: Any, **kwargs: Any) -> Any:
        reply = await real(r, name, *args, **kwargs)
        if name == script and len(lost) < times and when(reply):
            lost.append(reply)
            raise redis.TimeoutError(f"reply of {script} lost (test)")
        return reply

    monkeypatch.setattr(scripts, "call", call)
    return lost


async def test_a_settle_whose_reply_is_lost_and_that_is_sent_again_is_applied_once(
    redis_url: str, r: aioredis.Redis, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = Registry()

    @reg.handler("ok", max_attempts=1)
    async def ok(inp: Item) -> dict[str, int]:
        await asyncio.sleep(0.05)
        return {"n": inp.n}

    @reg.handler("bad", max_attempts=1)
    async def bad(inp: Item) -> None:
        raise RuntimeError("no")

    lost = lose_replies(monkeypatch, "settle", 2)
    async with start_worker(redis_url, reg):
        good = await client.submit("p", "ok", {"n": 1})
        failed = await client.submit("p", "bad", {})
        for job_id in (good, failed):
            await client.wait(job_id, 30)
        await until(lambda: len(lost) == 2, 30, "two settle replies to be lost")
    evs = await events(r)
    assert terminals(evs) == {good: 1, failed: 1}
    stats = await r.hgetall(KEYS.stats)
    assert (int(stats[b"completed"]), int(stats.get(b"failed", 0)) + int(stats.get(b"rejected", 0))) == (1, 1)
    assert int(stats[b"dead_lettered"]) == 1
    assert await r.xlen(KEYS.dead_letter) == 1


async def test_a_take_whose_reply_is_lost_costs_no_attempt_and_its_jobs_run_once(
    redis_url: str, r: aioredis.Redis, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = Registry()
    ran: Counter[str] = Counter()

    @reg.handler("one", max_attempts=1)
    async def one(inp: Item, ctx: JobContext) -> None:
        ran[ctx.job_id] += 1

    ids = await client.submit_many("p", "one", ({"n": i} for i in range(4)))
    lost = lose_replies(monkeypatch, "take", 1)
    async with start_worker(redis_url, reg, concurrency=4):
        records = [await client.wait(job_id, 30) for job_id in ids]
    assert lost, "no take reply was lost: the test did not test anything"
    assert [(rec.state, rec.attempts) for rec in records] == [(JobState.SUCCEEDED, 1)] * 4
    assert ran == dict.fromkeys(ids, 1)
    evs = await events(r)
    assert starts(evs) == dict.fromkeys(ids, 1)
    assert terminals(evs) == dict.fromkeys(ids, 1)


async def test_a_duplicate_entry_of_a_running_job_neither_runs_it_again_nor_dead_letters_it(
    redis_url: str, r: aioredis.Redis, client: AsyncClient
) -> None:
    reg = Registry()
    gate = asyncio.Event()
    runs: list[int] = []

    @reg.handler("hold", max_attempts=1)
    async def hold(inp: Item, ctx: JobContext) -> dict[str, int]:
        runs.append(ctx.attempt)
        await gate.wait()
        return {"attempt": ctx.attempt}

    async with start_worker(redis_url, reg, concurrency=2):
        job_id = await client.submit("p", "hold", {})
        await until(lambda: runs == [1], 30, "the job to start")
        [(_, fields)] = await r.xrange(KEYS.stream("normal"))
        await r.xadd(KEYS.stream("normal"), fields)  # the same job's entry, delivered again

        async def duplicate_gone() -> bool:
            return int(await r.xlen(KEYS.stream("normal"))) <= 1

        await until(duplicate_gone, 30, "the duplicate entry to be taken")
        gate.set()
        done = await client.wait(job_id, 30)
    assert (done.state, done.attempts, done.output) == (JobState.SUCCEEDED, 1, {"attempt": 1})
    assert runs == [1]
    evs = await events(r, job_id)
    assert terminals(evs) == {job_id: 1}
    assert await r.xlen(KEYS.dead_letter) == 0


async def test_one_bad_write_in_a_batch_costs_the_other_writes_of_the_batch_nothing(redis_url: str) -> None:
    from kubeworkers import leases, outbox, redis_ops

    r = aioredis.Redis.from_url(redis_url)
    await leases.ensure_groups(r, KEYS)
    async with AsyncClient(connection=r, registry=Registry()) as client:
        ids = await client.submit_many("p", "h", [{}] * 3)
        taken = wire.parse_take(await scripts.call(r, "take", KEYS.streams, wire.take_args(
            mode="read", group="workers", consumer="w", count=10, now="1", prefix=KEYS.prefix,
            events=KEYS.events, result_ttl=60,
            default_max_attempts=3, handler_max_attempts="{}", dead_letter_maxlen=100,
        )))
        assert [t.verdict for t in taken] == [wire.Verdict.RUN] * 3
        good = [
            wire.FinishWrite(kind="finish", stream=t.stream, entry=t.entry, job_id=job_id, state="Succeeded",
                             output="null", error="", message="", duration="0.1", attempt=t.attempt,
                             dead_letter_reason="", ran=True,
                             event=JobEvent(job_id=job_id, uid=job_id, namespace="default", pool="p",
                                            state=JobState.SUCCEEDED).model_dump_json())
            for t, job_id in zip(taken[1:], ids[1:], strict=True)
        ]
        first = taken[0]
        broken: Any = {"kind": "progress", "stream": first.stream, "entry": first.entry, "job_id": ids[0],
                       "progress": "0.5", "message": {"not": "text"}, "event": "{}"}
        await outbox.settle(r, KEYS, "w", 60, [broken, *good], dead_letter_maxlen=100)
        states = [await redis_ops.run(r, _state(job_id)) for job_id in ids[1:]]
    assert states == [b"Succeeded", b"Succeeded"]


def _state(job_id: str) -> Any:
    value = yield Command("hget", KEYS.record(job_id), "state")
    return value


async def test_progress_with_a_message_that_is_not_text_fails_that_job_alone(
    redis_url: str, r: aioredis.Redis, client: AsyncClient
) -> None:
    reg = Registry()
    gate = asyncio.Event()

    @reg.handler("noisy", max_attempts=1)
    async def noisy(inp: Item, ctx: JobContext) -> None:
        await gate.wait()
        await ctx.progress(0.5, {"a": 1})  # type: ignore[arg-type]

    @reg.handler("quiet", max_attempts=1)
    async def quiet(inp: Item) -> None:
        await gate.wait()

    async with start_worker(redis_url, reg, concurrency=4) as worker:
        bad = await client.submit("p", "noisy", {})
        good = await client.submit_many("p", "quiet", [{}] * 3)
        await until(lambda: worker.in_flight == 4, 30, "all four jobs to run")
        gate.set()
        done = {job_id: await client.wait(job_id, 30) for job_id in [bad, *good]}
    assert done[bad].state is JobState.FAILED
    assert done[bad].error is not None and done[bad].error.type == "TypeError"
    assert [(done[j].state, done[j].attempts) for j in good] == [(JobState.SUCCEEDED, 1)] * 3
    assert starts(await events(r)) == dict.fromkeys([bad, *good], 1)


async def test_a_result_redis_refuses_to_receive_fails_its_job_and_later_jobs_still_finish(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    admin = redis.Redis.from_url(server.url)
    admin.config_set("proto-max-bulk-len", 1024 * 1024)  # the smallest Redis allows
    admin.close()
    reg = Registry()

    @reg.handler("big", max_attempts=1)
    async def big(inp: Item) -> dict[str, str]:
        # Under the output cap as JSON (~1 MB), but every quote is escaped again inside the
        # write, so the request is twice as long as Redis will take.
        return {"blob": '"' * 500_000}

    @reg.handler("small", max_attempts=1)
    async def small(inp: Item) -> dict[str, int]:
        return {"n": inp.n}

    async with AsyncClient(server.url, registry=Registry()) as client, start_worker(server.url, reg):
        huge = await client.submit("p", "big", {})
        done = await client.wait(huge, 60)
        after = await client.wait(await client.submit("p", "small", {"n": 2}), 60)
    assert done.state is JobState.FAILED
    assert done.error is not None and done.error.type == "ResultNotWritten" and not done.error.retryable
    assert (after.state, after.output) == (JobState.SUCCEEDED, {"n": 2})


async def test_a_read_over_several_streams_that_returns_more_than_the_free_slots_starts_only_what_it_runs(
    redis_url: str, r: aioredis.Redis, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubeworkers import queue
    from kubeworkers.protocol import JobMessage

    reg = Registry()

    @reg.handler("quick", max_attempts=1)
    async def quick(inp: Item) -> None:
        await asyncio.sleep(0.05)

    ids = [f"default/j-{p.value}" for p in Priority]  # Job objects' jobs: their events are written
    msgs = [JobMessage(job_id=job_id, uid=f"uid:{job_id}", namespace="default", pool="p", handler="quick", priority=p)
            for job_id, p in zip(ids, Priority, strict=True)]
    real = scripts.call
    arrived: list[bool] = []

    async def call(conn: aioredis.Redis, name: str, *args: Any, **kwargs: Any) -> Any:
        reply = await real(conn, name, *args, **kwargs)
        if name == "take" and len(reply) == 1 and not arrived:
            # Jobs of every priority arrive between the non-blocking take (nothing taken: its reply
            # is only the ids to block from) and the blocking read, which then answers at once,
            # with an entry of *each* stream; the take behind it may start only one (one free slot).
            arrived.append(True)
            await queue.enqueue_many(conn, msgs)
        return reply

    monkeypatch.setattr(scripts, "call", call)
    async with start_worker(redis_url, reg, concurrency=1):
        for job_id in ids:
            await client.wait(job_id, 30)
    evs = await events(r)
    assert starts(evs) == dict.fromkeys(ids, 1)
    assert not [e for e in evs if e.state is JobState.QUEUED], "a job was marked Running, then handed back"
