"""The shared queue operations (enqueue, cancel, get_record, delete_job) on a real Redis."""

from __future__ import annotations

import redis
import redis.asyncio as aioredis
from kubeworkers import queue
from kubeworkers.protocol import JobEvent, JobMessage, JobState, PoolKeys, Priority


def message(job_id: str = "default/job-1", uid: str = "uid-1", **kw: object) -> JobMessage:
    return JobMessage.model_validate(
        {"job_id": job_id, "uid": uid, "namespace": "default", "pool": "p", "handler": "h", **kw}
    )


async def test_enqueue_writes_a_queued_record_and_one_stream_entry(r: aioredis.Redis) -> None:
    assert await queue.enqueue(r, message(input={"x": 1}, priority="high", max_attempts=4))
    record = await queue.get_record(r, "default", "p", "default/job-1")
    assert record is not None
    assert record.state is JobState.QUEUED
    assert record.uid == "uid-1"
    assert record.input == {"x": 1}
    assert record.max_attempts == 4
    assert record.priority is Priority.HIGH
    keys = PoolKeys("default", "p")
    entries = await r.xrange(keys.stream("high"))
    assert len(entries) == 1
    assert entries[0][0].decode() == record.entry
    assert JobMessage.from_fields(entries[0][1]).job_id == "default/job-1"
    assert await queue.find_pools(r, "default", "default/job-1") == ["p"]


async def test_enqueue_of_the_same_job_and_uid_twice_enqueues_once(r: aioredis.Redis) -> None:
    assert await queue.enqueue(r, message())
    assert not await queue.enqueue(r, message())
    assert await r.xlen(PoolKeys("default", "p").stream("normal")) == 1


async def test_enqueue_with_a_new_uid_while_the_old_job_is_unfinished_is_refused(r: aioredis.Redis) -> None:
    assert await queue.enqueue(r, message(uid="a"))
    assert not await queue.enqueue(r, message(uid="b"))
    record = await queue.get_record(r, "default", "p", "default/job-1")
    assert record is not None and record.uid == "a"


async def test_enqueue_with_a_new_uid_after_the_old_job_finished_replaces_it(r: aioredis.Redis) -> None:
    assert await queue.enqueue(r, message(uid="a"))
    assert await queue.cancel(r, "default", "p", "default/job-1")
    assert await queue.enqueue(r, message(uid="b"))
    record = await queue.get_record(r, "default", "p", "default/job-1")
    assert record is not None and record.uid == "b" and record.state is JobState.QUEUED
    assert not await r.exists(PoolKeys("default", "p").cancel("default/job-1"))
    assert await r.xlen(PoolKeys("default", "p").stream("normal")) == 2


async def test_enqueue_many_is_idempotent_per_job(r: aioredis.Redis) -> None:
    msgs = [message(job_id=f"j{i}", uid=f"u{i}") for i in range(2500)]
    assert await queue.enqueue_many(r, msgs) == [True] * 2500
    again = await queue.enqueue_many(r, [*msgs[:10], message(job_id="new", uid="new")])
    assert again == [False] * 10 + [True]
    assert await r.xlen(PoolKeys("default", "p").stream("normal")) == 2501


async def test_enqueue_works_again_after_redis_forgets_its_scripts(r: aioredis.Redis) -> None:
    assert await queue.enqueue(r, message(job_id="a"))
    await r.script_flush()
    assert await queue.enqueue_many(r, [message(job_id="b"), message(job_id="c")]) == [True, True]
    await r.script_flush()
    assert await queue.enqueue(r, message(job_id="d"))


async def test_cancel_of_a_queued_job_makes_it_cancelled_at_once_with_an_event(r: aioredis.Redis) -> None:
    await queue.enqueue(r, message())
    assert await queue.cancel(r, "default", "p", "default/job-1")
    record = await queue.get_record(r, "default", "p", "default/job-1")
    assert record is not None and record.state is JobState.CANCELLED and record.cancel_requested
    events = [JobEvent.from_fields(f) for _, f in await r.xrange(PoolKeys("default", "p").events)]
    assert [(e.job_id, e.state) for e in events] == [("default/job-1", JobState.CANCELLED)]
    assert await r.ttl(PoolKeys("default", "p").record("default/job-1")) > 0


async def test_cancel_of_an_unknown_or_finished_job_returns_false(r: aioredis.Redis) -> None:
    assert not await queue.cancel(r, "default", "p", "nope")
    await queue.enqueue(r, message())
    assert await queue.cancel(r, "default", "p", "default/job-1")
    assert not await queue.cancel(r, "default", "p", "default/job-1")


async def test_cancel_of_a_running_job_sets_the_flag_and_announces_it(r: aioredis.Redis) -> None:
    await queue.enqueue(r, message())
    keys = PoolKeys("default", "p")
    await r.hset(keys.record("default/job-1"), "state", "Running")
    pubsub = r.pubsub()
    await pubsub.subscribe("kw:cancel")
    assert await queue.cancel(r, "default", "p", "default/job-1")
    record = await queue.get_record(r, "default", "p", "default/job-1")
    assert record is not None and record.state is JobState.RUNNING and record.cancel_requested
    assert await r.exists(keys.cancel("default/job-1"))
    got = None
    for _ in range(50):
        got = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if got:
            break
    assert got is not None and got["data"].decode() == keys.record("default/job-1")
    await pubsub.aclose()


async def test_delete_job_removes_record_flag_and_pointer(r: aioredis.Redis) -> None:
    await queue.enqueue(r, message())
    await queue.cancel(r, "default", "p", "default/job-1")
    await queue.delete_job(r, "default", "p", "default/job-1")
    assert await queue.get_record(r, "default", "p", "default/job-1") is None
    assert await queue.find_pools(r, "default", "default/job-1") == []
    assert not await r.exists(PoolKeys("default", "p").cancel("default/job-1"))


def test_sync_twins_behave_like_the_async_functions(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    assert queue.enqueue_sync(r, message())
    assert not queue.enqueue_sync(r, message())
    assert queue.enqueue_many_sync(r, [message(), message(job_id="x")]) == [False, True]
    record = queue.get_record_sync(r, "default", "p", "x")
    assert record is not None and record.state is JobState.QUEUED
    assert queue.find_pools_sync(r, "default", "x") == ["p"]
    assert queue.cancel_sync(r, "default", "p", "x")
    queue.delete_job_sync(r, "default", "p", "x")
    assert queue.get_record_sync(r, "default", "p", "x") is None
    r.close()
