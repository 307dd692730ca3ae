"""The orphan sweep over a Redis holding 100,000 job records: each turn is bounded, the pass still
reaches every record, and the one orphan among them is found. Bounds are counted (keys, Redis
commands from the server's own statistics), never timed."""

from __future__ import annotations

import math
from typing import Any

import redis.asyncio as aioredis
from kubeworkers import queue
from kubeworkers.protocol import JobMessage, PoolKeys
from kubeworkers_operator.flows.orphans import OrphanSweep
from kubeworkers_operator.model.index import ClusterIndex, TrackedJob

RECORDS = 100_000
KEYS_PER_TURN = 5_000
SCAN_COUNT = 500


async def fill(r: aioredis.Redis) -> None:
    keys = PoolKeys("team-a", "images")
    async with r.pipeline(transaction=False) as pipe:
        for i in range(RECORDS):
            job_id = f"team-a/done-{i}"
            pipe.hset(keys.record(job_id), mapping={
                "job_id": job_id, "uid": f"u-{i}", "namespace": "team-a", "pool": "images", "state": "Succeeded"})
            if i % 10_000 == 9_999:
                await pipe.execute()
        await pipe.execute()


async def command_calls(r: aioredis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = await r.info("commandstats")
    return {name: int(value["calls"]) for name, value in stats.items()}


async def test_a_sweep_of_100000_records_is_bounded_per_turn_and_finds_the_orphan(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    await fill(r)
    orphan = JobMessage(job_id="team-a/deleted-while-down", uid="u-orphan", namespace="team-a", pool="images",
                        handler="resize")
    live = JobMessage(job_id="team-a/alive", uid="u-alive", namespace="team-a", pool="images", handler="resize")
    assert await queue.enqueue(r, orphan) and await queue.enqueue(r, live)
    index = ClusterIndex()
    index.jobs[live.job_id] = TrackedJob("team-a", "alive", "u-alive", "1", {"pool": "images"}, {"phase": "Queued"})
    sweep = OrphanSweep(["kw:{team-a/*}:job:*"], keys_per_turn=KEYS_PER_TURN, scan_count=SCAN_COUNT,
                        period_seconds=0.0)

    found: list[str] = []
    turns = 0
    scanned = 0
    await r.config_resetstat()
    while True:
        before = await command_calls(r)
        result = await sweep.turn(r, index)
        after = await command_calls(r)
        turns += 1
        scanned += result.keys
        hmget = after.get("cmdstat_hmget", 0) - before.get("cmdstat_hmget", 0)
        scan = after.get("cmdstat_scan", 0) - before.get("cmdstat_scan", 0)
        # Bounded: SCAN may hand back somewhat more than COUNT, so one reply past the bound at most.
        assert result.keys <= KEYS_PER_TURN + 10 * SCAN_COUNT
        assert hmget == result.keys
        assert scan <= math.ceil(KEYS_PER_TURN / SCAN_COUNT) + 1
        assert result.calls <= 2 * scan  # one pipelined batch per SCAN reply
        found += [h.job_id for h in result.suspects]
        if result.pass_completed:
            break
        assert turns < 200, "the pass never ends"
    assert found == [orphan.job_id]  # the live Job's record and the finished ones are left alone
    assert scanned >= RECORDS + 2  # every record was seen (SCAN may return a key twice, never none)
    assert turns >= RECORDS // (KEYS_PER_TURN + 10 * SCAN_COUNT)  # spread over many turns, not one
    assert sweep.passes == 1
    await r.aclose()


async def test_a_new_pass_waits_for_its_period() -> None:
    clock = [0.0]
    sweep = OrphanSweep(["kw:*"], period_seconds=300.0, clock=lambda: clock[0])

    class NoRedis:
        async def scan(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("scanned before the period")

    assert (await sweep.turn(NoRedis(), ClusterIndex())).keys == 0  # type: ignore[arg-type]
