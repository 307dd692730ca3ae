"""Records of jobs that can never finish are bounded (issue 17, defect 2): the orphan sweep finds
Queued/Running records unchanged for ``--lost-job-age`` and ``fail_lost.lua`` fails those that nothing
in Redis can run any more (JobLost, event, dead-letter entry, result TTL). Jobs that can still run are
left alone. Real redis-server, real sweep, real scripts and worker takes."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, cast

import redis.asyncio as aioredis
from kubeworkers import queue, scripts, wire
from kubeworkers.protocol import WORKER_GROUP, JobEvent, JobMessage, PoolKeys
from kubeworkers_operator.adapters.metrics import OperatorMetrics
from kubeworkers_operator.flows import orphans
from kubeworkers_operator.model.index import ClusterIndex
from kubeworkers_operator.runtime import Runtime

from tests.integration.test_worker_health_and_metrics import lint

KEYS = PoolKeys("default", "p")
AGE = 3600.0


async def enqueue(r: aioredis.Redis, job_id: str) -> None:
    assert await queue.enqueue(r, JobMessage(job_id=job_id, uid=job_id, namespace="default", pool="p", handler="h"))


async def age(r: aioredis.Redis, job_id: str, seconds: float = 2 * AGE) -> None:
    """Make the record look unchanged for ``seconds`` (as after a long time)."""
    updated = float(await r.hget(KEYS.record(job_id), "updated_at") or 0)
    await r.hset(KEYS.record(job_id), "updated_at", repr(updated - seconds))


async def take(r: aioredis.Redis, count: int) -> list[wire.Taken]:
    return wire.parse_take(await scripts.call(r, "take", KEYS.streams, wire.take_args(
        mode="read", group=WORKER_GROUP, consumer="w", count=count, now=repr(time.time()), prefix=KEYS.prefix,
        events=KEYS.events, result_ttl=60, default_max_attempts=3,
        handler_max_attempts="{}", dead_letter_maxlen=100,
    )))


def runtime(r: aioredis.Redis) -> Runtime:
    # The sweep's lost-job path uses Redis, the index and the metrics; the Kubernetes writer only
    # confirms orphans of deleted Job CRs, and there are none here.
    return cast(Runtime, SimpleNamespace(redis=r, index=ClusterIndex(), metrics=OperatorMetrics()))


async def sweep_all(rt: Runtime) -> None:
    sweep = orphans.OrphanSweep(["kw:{default/*}:job:*"], period_seconds=0.0, lost_job_age_seconds=AGE)
    while True:
        await orphans.sweep_turn(rt, sweep)
        if sweep.passes:
            return


async def state(r: aioredis.Redis, job_id: str) -> str:
    raw: Any = await r.hget(KEYS.record(job_id), "state")
    return raw.decode()


async def test_old_records_nothing_can_run_are_failed_with_a_reason_and_the_rest_are_left_alone(
    r: aioredis.Redis,
) -> None:
    for job_id in ("entry-gone", "running-unheld", "running-held", "waiting", "retry-waiting", "retry-lost",
                   "recent-entry-gone"):
        await enqueue(r, job_id)
    for stream in KEYS.streams:
        await r.xgroup_create(stream, WORKER_GROUP, id="0", mkstream=True)
    taken = {t.job_id: t for t in await take(r, 2)}  # entry-gone and running-unheld: now Running
    assert set(taken) == {"entry-gone", "running-unheld"}
    # A Running job whose entry no worker holds (its consumer was deleted, dropping its pending entries).
    await r.xgroup_delconsumer(KEYS.stream("normal"), WORKER_GROUP, "w")
    await r.hset(KEYS.record("entry-gone"), "state", "Queued")
    for job_id in ("entry-gone", "recent-entry-gone"):  # a Queued job whose stream entry vanished
        entry: Any = await r.hget(KEYS.record(job_id), "entry")
        await r.xdel(KEYS.stream("normal"), entry)
    [held] = await take(r, 1)  # running-held: Running, held by worker w
    assert held.job_id == "running-held"
    for job_id in ("retry-waiting", "retry-lost"):  # a retry: no entry, message in the delayed set
        msg: Any = await r.hget(KEYS.record(job_id), "msg")
        entry = await r.hget(KEYS.record(job_id), "entry")
        await r.xdel(KEYS.stream("normal"), entry)
        await r.hset(KEYS.record(job_id), "entry", "")
        if job_id == "retry-waiting":
            await r.zadd(KEYS.delayed, {msg: 1e12})
    for job_id in ("entry-gone", "running-unheld", "running-held", "waiting", "retry-waiting", "retry-lost"):
        await age(r, job_id)

    rt = runtime(r)
    await sweep_all(rt)

    lost = ["entry-gone", "retry-lost", "running-unheld"]
    assert {j: await state(r, j) for j in lost} == dict.fromkeys(lost, "Failed")
    for job_id in ("running-held", "waiting", "retry-waiting", "recent-entry-gone"):
        assert await state(r, job_id) in ("Queued", "Running"), job_id
    record = await queue.get_record(r, "default", "p", "entry-gone")
    assert record is not None and record.error is not None
    assert record.error.type == "JobLost" and not record.error.retryable
    assert "Queued for over 3600" in record.error.message
    assert await r.ttl(KEYS.record("entry-gone")) > 0  # bounded from now on, like every finished job
    failed = [JobEvent.model_validate_json(f[b"e"]) for _, f in await r.xrange(KEYS.events)
              if b'"Failed"' in f[b"e"]]
    assert sorted(e.job_id for e in failed) == lost
    assert await r.xlen(KEYS.dead_letter) == len(lost)  # so each can be replayed
    assert rt.metrics.lost_jobs_failed._value.get() == len(lost)
    assert lint(rt.metrics.render().decode()) == []

    await sweep_all(rt)  # a second pass changes nothing
    assert await r.xlen(KEYS.dead_letter) == len(lost)
