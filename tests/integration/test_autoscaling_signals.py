"""The autoscaler's Redis signal reader against a real redis-server."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from kubeworkers.protocol import PRIORITY_ORDER, WORKER_GROUP, PoolKeys, Priority, WorkerHeartbeat
from kubeworkers_operator.autoscaling.load import (
    STATS_DURATION_SUM,
    ArrivalRate,
    DurationEstimate,
    measure_load,
)
from kubeworkers_operator.autoscaling.signals import RedisSignalReader

KEYS = PoolKeys("ns", "pool")
NOW = 1_900_000_000.0
#: Where the normal stream is in a snapshot (critical, high, normal, low).
NORMAL = PRIORITY_ORDER.index(Priority.NORMAL)


async def add_jobs(r: aioredis.Redis, priority: Priority, n: int) -> list[bytes | str]:
    return [await r.xadd(KEYS.stream(priority), {"v": "1", "m": f"job-{i}"}) for i in range(n)]


async def take(r: aioredis.Redis, priority: Priority, consumer: str, n: int) -> None:
    await r.xreadgroup(WORKER_GROUP, consumer, {KEYS.stream(priority): ">"}, count=n)


async def register(r: aioredis.Redis, worker: str, in_flight: int, at: float) -> None:
    hb = WorkerHeartbeat(worker=worker, in_flight=in_flight, concurrency=4, at=at)
    await r.hset(KEYS.workers, worker, hb.model_dump_json())


async def test_pool_without_streams_or_groups_reads_as_empty(r: aioredis.Redis) -> None:
    snap = await RedisSignalReader(r, KEYS).read(now=NOW)
    assert [s.exists for s in snap.streams] == [False] * len(PRIORITY_ORDER)
    load = measure_load(snap)
    assert (load.backlog, load.in_flight, load.live_workers) == (0, 0, 0)
    assert load.idle


async def test_stream_without_consumer_group_counts_all_entries_as_backlog(r: aioredis.Redis) -> None:
    await add_jobs(r, Priority.NORMAL, 12)
    snap = await RedisSignalReader(r, KEYS).read(now=NOW)
    normal = snap.streams[NORMAL]
    assert normal.exists and normal.group is None
    assert measure_load(snap).backlog == 12


async def test_backlog_in_flight_and_dead_consumers_over_all_priorities(r: aioredis.Redis) -> None:
    for p in (Priority.CRITICAL, Priority.HIGH, Priority.NORMAL):
        await r.xgroup_create(KEYS.stream(p), WORKER_GROUP, id="0", mkstream=True)
    await add_jobs(r, Priority.CRITICAL, 4)
    await add_jobs(r, Priority.HIGH, 3)
    await add_jobs(r, Priority.NORMAL, 10)
    await take(r, Priority.NORMAL, "pod-a", 2)
    await take(r, Priority.HIGH, "pod-a", 1)
    await take(r, Priority.NORMAL, "pod-dead", 3)
    await register(r, "pod-a", in_flight=3, at=NOW - 1)
    await register(r, "pod-dead", in_flight=3, at=NOW - 600)
    await r.zadd(KEYS.delayed, {"retry-due": NOW - 5, "retry-later": NOW + 60})

    snap = await RedisSignalReader(r, KEYS).read(now=NOW)
    load = measure_load(snap, heartbeat_timeout=20)
    # Undelivered 4 (critical) + 2 (high) + 5 (normal), 3 held by the dead pod, 1 retry due.
    assert load.backlog == 4 + 2 + 5 + 3 + 1
    assert load.in_flight == 3
    assert (load.live_workers, load.busy_workers, load.retries_waiting) == (1, 1, 1)


async def test_null_lag_is_replaced_by_counting_undelivered_entries(r: aioredis.Redis) -> None:
    stream = KEYS.stream(Priority.NORMAL)
    await r.xgroup_create(stream, WORKER_GROUP, id="0", mkstream=True)
    ids = await add_jobs(r, Priority.NORMAL, 6)
    await take(r, Priority.NORMAL, "pod-a", 1)
    await r.xdel(stream, ids[3])  # a tombstone past the group's position makes Redis report lag NULL
    snap = await RedisSignalReader(r, KEYS).read(now=NOW)
    group = snap.streams[NORMAL].group
    assert group is not None
    assert group.lag is None
    assert group.undelivered_counted == 4
    assert measure_load(snap).backlog == 4 + 1  # pod-a has no heartbeat: its entry is orphaned


async def test_arrival_rate_comes_from_entries_added(r: aioredis.Redis) -> None:
    reader = RedisSignalReader(r, KEYS)
    rate = ArrivalRate(window_seconds=10.0)
    rate.observe(0.0, (await reader.read()).entries_added)
    await add_jobs(r, Priority.HIGH, 20)
    await add_jobs(r, Priority.LOW, 30)
    # Deleting entries does not lower the arrival counter: arrivals are arrivals.
    stream = KEYS.stream(Priority.LOW)
    await r.xtrim(stream, maxlen=0)
    assert rate.observe(10.0, (await reader.read()).entries_added) == 5.0


async def test_handler_durations_come_from_the_workers_counters(r: aioredis.Redis) -> None:
    # Field names as lua/finish.lua writes them: failed runs took time too.
    await r.hset(KEYS.stats, mapping={"completed": 6, "failed": 2, STATS_DURATION_SUM: 12.0, "enqueued": 9})
    snap = await RedisSignalReader(r, KEYS).read(now=NOW)
    assert (snap.completed, snap.duration_sum) == (8, 12.0)
    assert DurationEstimate().observe(0.0, snap.completed, snap.duration_sum) == 1.5


async def test_unreadable_heartbeat_is_skipped_not_fatal(r: aioredis.Redis) -> None:
    await register(r, "pod-a", in_flight=1, at=NOW)
    await r.hset(KEYS.workers, "pod-b", "not json")
    snap = await RedisSignalReader(r, KEYS).read(now=NOW)
    assert [hb.worker for hb in snap.heartbeats] == ["pod-a"]


async def test_wait_for_activity_wakes_on_a_new_job_even_on_a_stream_created_after_the_read(
    r: aioredis.Redis, redis_url: str
) -> None:
    reader = RedisSignalReader(r, KEYS)
    snap = await reader.read()
    producer = aioredis.Redis.from_url(redis_url)
    try:
        waiting = asyncio.create_task(reader.wait_for_activity(snap, block_seconds=30))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await producer.xadd(KEYS.stream(Priority.LOW), {"m": "x"})
        assert await asyncio.wait_for(waiting, 10) is True
    finally:
        await producer.aclose()


async def test_wait_for_activity_ignores_entries_already_seen(r: aioredis.Redis) -> None:
    await add_jobs(r, Priority.NORMAL, 5)
    reader = RedisSignalReader(r, KEYS)
    snap = await reader.read()
    assert await reader.wait_for_activity(snap, block_seconds=0.1) is False


async def test_wait_for_activity_outlasts_the_client_socket_timeout(redis_url: str) -> None:
    # redis-py 8 gives clients a 5 s socket timeout; a longer XREAD BLOCK must not turn into an error.
    short = aioredis.Redis.from_url(redis_url, socket_timeout=0.5)
    producer = aioredis.Redis.from_url(redis_url)
    try:
        reader = RedisSignalReader(short, KEYS)
        snap = await reader.read()
        assert await reader.wait_for_activity(snap, block_seconds=1.0) is False
        waiting = asyncio.create_task(reader.wait_for_activity(snap, block_seconds=30))
        await asyncio.sleep(0.8)
        await producer.xadd(KEYS.stream(Priority.HIGH), {"m": "x"})
        assert await asyncio.wait_for(waiting, 10) is True
    finally:
        await short.aclose()
        await producer.aclose()
