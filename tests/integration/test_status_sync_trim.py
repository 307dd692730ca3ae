"""The events stream is trimmed only below what every operator consumer group has applied."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import cast

import redis.asyncio as aioredis
from kubeworkers.protocol import OPERATOR_GROUP, JobEvent, JobState, PoolKeys
from kubeworkers_operator.adapters.metrics import OperatorMetrics
from kubeworkers_operator.flows.status_sync import trim_and_measure, trim_events
from kubeworkers_operator.model.index import ClusterIndex, TrackedPool
from kubeworkers_operator.runtime import Runtime
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_worker_health_and_metrics import lint

#: One pool's events stream, which the trim tests fill and trim.
STREAM = PoolKeys("ns", "p").events


def event(i: int) -> dict[str, str]:
    return JobEvent(job_id=f"ns/j{i}", uid=f"u{i}", namespace="ns", pool="p", state=JobState.RUNNING).to_fields()


async def test_pending_events_are_never_trimmed_and_acked_ones_are(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    await r.xgroup_create(STREAM, OPERATOR_GROUP, id="0", mkstream=True)
    ids = [await r.xadd(STREAM, event(i)) for i in range(10)]
    read = await r.xreadgroup(OPERATOR_GROUP, "op", {STREAM: ">"}, count=6)
    assert len(read[0][1]) == 6
    await r.xack(STREAM, OPERATOR_GROUP, *ids[:3])  # 3 applied, 3 still pending, 4 unread

    assert await trim_events(r, STREAM) == 3
    remaining = [entry_id for entry_id, _ in await r.xrange(STREAM)]
    assert remaining == ids[3:]
    await r.aclose()


async def test_a_second_groups_unread_events_hold_the_trim_back(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    await r.xgroup_create(STREAM, OPERATOR_GROUP, id="0", mkstream=True)
    ids = [await r.xadd(STREAM, event(i)) for i in range(5)]
    await r.xgroup_create(STREAM, f"{OPERATOR_GROUP}:team-a", id=ids[1])  # has read up to ids[1]
    await r.xreadgroup(OPERATOR_GROUP, "op", {STREAM: ">"})
    await r.xack(STREAM, OPERATOR_GROUP, *ids)

    await trim_events(r, STREAM)
    remaining = [entry_id for entry_id, _ in await r.xrange(STREAM)]
    assert remaining[0] <= ids[2]  # team-a still needs ids[2:]
    assert ids[2] in remaining and ids[4] in remaining
    await r.aclose()


async def test_trim_without_a_stream_or_groups_is_a_no_op(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    assert await trim_events(r, STREAM) == 0
    await r.xadd(STREAM, event(0))
    assert await trim_events(r, STREAM) == 0
    assert await r.xlen(STREAM) == 1
    await r.aclose()


async def test_a_group_whose_consumers_are_all_idle_past_the_bound_no_longer_holds_the_trim_back(
    redis_url: str,
) -> None:
    r = aioredis.Redis.from_url(redis_url)
    await r.xgroup_create(STREAM, OPERATOR_GROUP, id="0", mkstream=True)
    await r.xgroup_create(STREAM, f"{OPERATOR_GROUP}:removed", id="0")
    ids = [await r.xadd(STREAM, event(i)) for i in range(6)]
    await r.xreadgroup(f"{OPERATOR_GROUP}:removed", "gone-op", {STREAM: ">"}, count=2)  # then it went away
    await asyncio.sleep(0.3)  # the removed operator's consumer idles past the (shortened) bound
    await r.xreadgroup(OPERATOR_GROUP, "op", {STREAM: ">"})
    await r.xack(STREAM, OPERATOR_GROUP, *ids[:4])

    assert await trim_events(r, STREAM, stale_after_seconds=0.2) == 4
    assert [entry_id for entry_id, _ in await r.xrange(STREAM)] == ids[4:]
    await r.aclose()


async def test_a_group_with_a_consumer_active_within_the_bound_still_holds_the_trim_back(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    await r.xgroup_create(STREAM, OPERATOR_GROUP, id="0", mkstream=True)
    await r.xgroup_create(STREAM, f"{OPERATOR_GROUP}:team-a", id="0")
    ids = [await r.xadd(STREAM, event(i)) for i in range(6)]
    await r.xreadgroup(f"{OPERATOR_GROUP}:team-a", "op-a", {STREAM: ">"}, count=2)
    await r.xreadgroup(OPERATOR_GROUP, "op", {STREAM: ">"})
    await r.xack(STREAM, OPERATOR_GROUP, *ids)

    assert await trim_events(r, STREAM, stale_after_seconds=3600) == 0  # team-a holds ids[0:2] pending
    assert await r.xlen(STREAM) == 6
    await r.aclose()


async def test_the_trim_chore_reports_the_events_and_dead_letter_stream_lengths_per_pool(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    for i in range(3):
        await r.xadd(PoolKeys("team-a", "images").events, event(i))
    for i in range(2):
        await r.xadd(PoolKeys("team-a", "images").dead_letter, {"m": "{}", "reason": f"r{i}"})
    index = ClusterIndex()
    for namespace, name in (("team-a", "images"), ("team-b", "empty")):
        index.pools[(namespace, name)] = TrackedPool(namespace, name, "u", None)
    # The chore uses Redis, the index and the metrics of the runtime, nothing else.
    rt = cast(Runtime, SimpleNamespace(redis=r, index=index, metrics=OperatorMetrics()))

    await trim_and_measure(rt)
    page = rt.metrics.render().decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(page) for s in family.samples}
    assert samples[("kubeworkers_operator_events_stream_entries", ())] == 3
    assert samples[("kubeworkers_operator_dead_letter_entries", (("namespace", "team-a"), ("pool", "images")))] == 2
    assert samples[("kubeworkers_operator_dead_letter_entries", (("namespace", "team-b"), ("pool", "empty")))] == 0
    assert lint(page) == []
    del index.pools[("team-b", "empty")]
    await trim_and_measure(rt)
    assert "team-b" not in rt.metrics.render().decode()  # a deleted pool's series ends
    await r.aclose()


async def test_the_trim_chore_reports_queued_and_in_flight_jobs_per_handler_as_kubeworkers_stats_does(
    redis_url: str,
) -> None:
    from kubeworkers import Registry, leases, redis_ops, scripts, stats, wire
    from kubeworkers.client import AsyncClient

    r = aioredis.Redis.from_url(redis_url)
    keys = PoolKeys("team-a", "images")
    await leases.ensure_groups(r, keys)
    async with AsyncClient(connection=r, registry=Registry(), namespace="team-a") as client:
        await client.submit_many("images", "resize", [{}] * 3)
        await client.submit_many("images", "thumb", [{}] * 2)
        await client.submit("images", "thumb", {}, delay=3600)
    taken = wire.parse_take(await scripts.call(r, "take", keys.streams, wire.take_args(
        mode="read", group="workers", consumer="w", count=1, now="1", prefix=keys.prefix, events=keys.events,
        result_ttl=60, default_max_attempts=3,
        handler_max_attempts="{}", dead_letter_maxlen=100,
    )))
    assert [(t.handler, t.verdict) for t in taken] == [("resize", wire.Verdict.RUN)]
    index = ClusterIndex()
    index.pools[("team-a", "images")] = TrackedPool("team-a", "images", "u", None)
    rt = cast(Runtime, SimpleNamespace(redis=r, index=index, metrics=OperatorMetrics()))

    await trim_and_measure(rt)
    page = rt.metrics.render().decode()
    samples = {(s.name, s.labels["handler"]): s.value for family in text_string_to_metric_families(page)
               for s in family.samples if s.name.endswith(("_jobs_queued", "_jobs_in_flight"))}
    assert samples == {
        ("kubeworkers_operator_jobs_queued", "resize"): 2, ("kubeworkers_operator_jobs_in_flight", "resize"): 1,
        ("kubeworkers_operator_jobs_queued", "thumb"): 3, ("kubeworkers_operator_jobs_in_flight", "thumb"): 0,
    }
    shown = await redis_ops.run(r, stats.stats_plan("team-a", "images", 3600))
    assert {(h.handler, h.queued, h.in_flight) for h in shown.handlers} == {("resize", 2, 1), ("thumb", 3, 0)}
    assert lint(page) == []
    await r.aclose()
