"""A take whose read reached another Redis master runs nothing twice.

A worker that lost a take's reply reads its own pending entries (``XREADGROUP`` from 0) and passes
the ones it does not know to ``take.lua`` in mode 'given': two calls, and a Sentinel failover can
fall between them. (So could it between a blocking ``XREADGROUP`` and the take that decided what it
returned, when an idle worker waited that way; it now waits in an ``XREAD`` with the take behind it
on the same connection.) The new master then has the entry (its ``XADD`` was replicated) but not
the delivery (the old master's group state was lost with it). Before the fix, the take marked such
a job Running; the new master later delivered the same entry again, to the same worker, as that
worker's own Running delivery, and the job ran twice under one attempt (the durable-mode double
run of test_sentinel_failover.py). Here the state of the new master is made on one real server:
the entry is in the stream, never delivered through the group.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
from kubeworkers import JobContext, Registry, leases, scripts, wire
from kubeworkers.client import AsyncClient
from kubeworkers.protocol import JobState, PoolKeys
from pydantic import BaseModel

from tests.support.workers import record, start_worker, until

KEYS = PoolKeys("default", "p")


class Item(BaseModel):
    n: int = 0


def _args(mode: str, consumer: str, given: list[wire.Given] = []) -> list[wire.Arg]:  # noqa: B006
    return wire.take_args(
        mode=mode,  # type: ignore[arg-type]
        group="workers", consumer=consumer, count=10, now="1", prefix=KEYS.prefix,
        events=KEYS.events, result_ttl=60,
        default_max_attempts=3, handler_max_attempts="{}", dead_letter_maxlen=100, given=given,
    )


async def _take(r: aioredis.Redis, mode: str, consumer: str, given: list[wire.Given] = []) -> list[wire.Taken]:  # noqa: B006
    return wire.parse_take(await scripts.call(r, "take", KEYS.streams, _args(mode, consumer, given)))


async def _undelivered(r: aioredis.Redis) -> list[wire.Given]:
    """The pool's entries as a read of another server would have returned them."""
    given = []
    for index, stream in enumerate(KEYS.streams, start=1):
        for entry_id, f in await r.xrange(stream):
            given.append(wire.Given(index, entry_id.decode(), f[b"m"], f[b"j"], f[b"u"], f[b"h"]))
    return given


async def test_an_entry_this_server_never_delivered_is_left_for_its_own_delivery(
    r: aioredis.Redis, client: AsyncClient
) -> None:
    await leases.ensure_groups(r, KEYS)
    job_id = await client.submit("p", "h", {})
    [given] = await _undelivered(r)

    [first] = await _take(r, "given", "w", [given])
    assert first.verdict is wire.Verdict.UNDELIVERED
    rec = await record(r, job_id)
    assert (rec.state, rec.attempts) == (JobState.QUEUED, 0)
    assert await r.xlen(KEYS.stream("normal")) == 1  # the entry stays for this server to deliver

    [delivered] = await _take(r, "read", "w")
    assert (delivered.verdict, delivered.entry, delivered.attempt) == (wire.Verdict.RUN, given.entry, 1)
    # The same take again (its reply lost): it runs, uncounted, for the worker holding it ...
    [again] = await _take(r, "given", "w", [given])
    assert (again.verdict, again.attempt) == (wire.Verdict.RUN, 1)
    # ... and for nobody else: another worker that read it from another server leaves it alone.
    [other] = await _take(r, "given", "w2", [given])
    assert other.verdict is wire.Verdict.UNDELIVERED
    rec = await record(r, job_id)
    assert (rec.state, rec.attempts, rec.worker) == (JobState.RUNNING, 1, "w")


async def test_a_worker_whose_recovery_read_reached_the_old_master_runs_the_job_once(
    redis_url: str, r: aioredis.Redis, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = Registry()
    runs: list[tuple[str, int]] = []

    @reg.handler("once", max_attempts=3)
    async def once(inp: Item, ctx: JobContext) -> dict[str, int]:
        runs.append((ctx.job_id, ctx.attempt))
        await asyncio.sleep(0.5)  # the first job holds the one slot while the second is submitted
        return {"attempt": ctx.attempt}

    real = aioredis.Redis.xreadgroup
    stale: list[Any] = []
    second: list[str] = []

    async def xreadgroup(self: aioredis.Redis, groupname: Any, consumername: Any, streams: Any,
                         *args: Any, **kwargs: Any) -> Any:
        # The recovery read (this worker's own pending entries, from 0) answers from the "old
        # master": the second job's entry, as that server delivered it to this worker, without
        # this server's group having delivered it.
        if second and not stale and all(v == "0" for v in streams.values()):
            entries = [(i, f) for i, f in await self.xrange(KEYS.stream("normal")) if f[b"j"] == second[0].encode()]
            if entries:
                stale.append(entries)
                return [[KEYS.stream("normal").encode(), entries]]
        return await real(self, groupname, consumername, streams, *args, **kwargs)

    monkeypatch.setattr(aioredis.Redis, "xreadgroup", xreadgroup)
    async with start_worker(redis_url, reg, concurrency=1) as worker:
        first = await client.submit("p", "once", {})
        await until(lambda: bool(runs), 10, "the first job to start")
        # The slot is taken, so the consumer reads nothing until the first job ends; then it
        # recovers first (as after a lost take reply), and its recovery read meets the old master.
        worker.consumer.recover = True
        second.append(await client.submit("p", "once", {}))
        done = [await client.wait(job_id, 30) for job_id in (first, second[0])]
        await asyncio.sleep(0.5)  # a second run, had there been one, would have started by now
    assert stale, "the recovery read was not answered by the old master"
    assert [(d.state, d.attempts, d.output) for d in done] == [(JobState.SUCCEEDED, 1, {"attempt": 1})] * 2
    assert runs == [(first, 1), (second[0], 1)]


async def test_a_settle_whose_take_the_failover_lost_finishes_the_job_it_ran(
    r: aioredis.Redis, client: AsyncClient
) -> None:
    """The new master has the blocking read's delivery but not the take that marked the job Running
    (replication is ordered: the read came first). The worker ran the job; its settle reaches the
    new master, where the record is still Queued on that very entry. Before the fix the settle acked
    the entry and changed nothing: the job stayed Queued with no entry, never to finish."""
    from kubeworkers import outbox
    from kubeworkers.protocol import JobEvent

    await leases.ensure_groups(r, KEYS)
    job_id = await client.submit("p", "h", {})
    await r.xreadgroup("workers", "w", {KEYS.stream("normal"): ">"}, count=1)  # delivered, never taken
    [(entry_id, _)] = await r.xrange(KEYS.stream("normal"))
    write = wire.FinishWrite(
        kind="finish", stream=KEYS.streams.index(KEYS.stream("normal")) + 1, entry=entry_id.decode(),
        job_id=job_id, state="Succeeded", output='{"ok": true}', error="", message="", duration="0.1",
        attempt=1, dead_letter_reason="", ran=True,
        event=JobEvent(job_id=job_id, uid=job_id, namespace="default", pool="p",
                       state=JobState.SUCCEEDED).model_dump_json(),
    )
    assert await outbox.settle(r, KEYS, "w", 60, [write], dead_letter_maxlen=100) == [1]
    rec = await record(r, job_id)
    assert (rec.state, rec.attempts, rec.output, rec.worker) == (JobState.SUCCEEDED, 1, {"ok": True}, "w")
    assert await r.xlen(KEYS.stream("normal")) == 0
    # The same write sent again (its reply lost) changes nothing.
    assert await outbox.settle(r, KEYS, "w", 60, [write], dead_letter_maxlen=100) == [0]
