"""Bulk submit: the job -> pools hints written with one ``lua/hints.lua`` call per namespace and chunk,
and the chunks of ``submit_many`` in flight while the next one is built (issue 16, bulk submit).

Real redis-server. What a bulk submit promises stays as it was: each job's record and stream entry,
one ``Submitted`` per input in order, a resubmitted id enqueues nothing (``.new`` False), and each
job id's hint names its pool and lives :data:`~kubeworkers.protocol.JOB_HINT_TTL`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from kubeworkers import AsyncClient, Client, queue
from kubeworkers.protocol import JOB_HINT_TTL, JobMessage, JobState, PoolKeys, job_pool_key

JOBS = 2 * queue.ENQUEUE_CHUNK + 7  # three chunks, the last one short


@pytest.fixture
def client(redis_url: str) -> Iterator[Client]:
    with Client(redis_url) as c:
        yield c


def assert_hints(r: redis.Redis, namespace: str, pools: dict[str, str]) -> None:
    with r.pipeline(transaction=False) as pipe:
        for job_id in pools:
            pipe.smembers(job_pool_key(namespace, job_id))
            pipe.ttl(job_pool_key(namespace, job_id))
        replies = pipe.execute()
    for (job_id, pool), members, ttl in zip(pools.items(), replies[::2], replies[1::2], strict=True):
        assert members == {pool.encode()}, job_id
        assert JOB_HINT_TTL - 60 < ttl <= JOB_HINT_TTL, job_id


def test_a_bulk_submit_over_several_chunks_writes_every_jobs_hint_with_its_ttl(
    client: Client, redis_sync: redis.Redis
) -> None:
    ids = client.submit_many("bulk", "h", [{"n": i} for i in range(JOBS)])
    assert len(ids) == JOBS and all(s.new for s in ids)
    assert redis_sync.xlen(PoolKeys("default", "bulk").stream("normal")) == JOBS
    assert_hints(redis_sync, "default", {job_id: "bulk" for job_id in ids})
    # The hint is what lets a read without a pool find the job.
    record = client.get(ids[-1])
    assert record is not None and record.state == JobState.QUEUED and record.input == {"n": JOBS - 1}


def test_a_bulk_resubmit_enqueues_nothing_and_renews_the_hints(client: Client, redis_sync: redis.Redis) -> None:
    job_ids = [f"job-{i}" for i in range(JOBS)]
    first = client.submit_many("bulk", "h", [{"n": i} for i in range(JOBS)], job_ids=job_ids)
    for job_id in job_ids:
        redis_sync.expire(job_pool_key("default", job_id), 100)
    again = client.submit_many("bulk", "h", [{"n": -i} for i in range(JOBS)], job_ids=job_ids)
    assert [str(s) for s in again] == [str(s) for s in first] == job_ids
    assert not any(s.new for s in again)
    assert redis_sync.xlen(PoolKeys("default", "bulk").stream("normal")) == JOBS
    record = client.get("job-3", pool="bulk")
    assert record is not None and record.input == {"n": 3}  # the first submit's, untouched
    assert_hints(redis_sync, "default", dict.fromkeys(job_ids, "bulk"))


def test_the_hints_script_is_loaded_again_after_redis_forgot_its_scripts(
    client: Client, redis_sync: redis.Redis
) -> None:
    client.submit_many("bulk", "h", [{}, {}])
    redis_sync.script_flush()
    ids = client.submit_many("bulk", "h", [{"n": i} for i in range(5)])
    assert all(s.new for s in ids)
    assert_hints(redis_sync, "default", dict.fromkeys(ids, "bulk"))


def test_one_enqueue_of_several_namespaces_and_pools_writes_each_hint_in_its_own_namespace(
    redis_sync: redis.Redis,
) -> None:
    msgs = [JobMessage(job_id=f"j{i}", uid=f"j{i}", namespace=ns, pool=pool, handler="h", input={})
            for i, (ns, pool) in enumerate([("a", "p"), ("b", "p"), ("a", "q"), ("b", "q")] * 3)]
    assert queue.enqueue_many_sync(redis_sync, msgs) == [True] * len(msgs)
    for ns in ("a", "b"):
        assert_hints(redis_sync, ns, {m.job_id: m.pool for m in msgs if m.namespace == ns})
        assert not redis_sync.exists(*(job_pool_key(ns, m.job_id) for m in msgs if m.namespace != ns))


def test_the_same_id_on_two_pools_in_one_bulk_enqueue_is_hinted_on_both(redis_sync: redis.Redis) -> None:
    msgs = [JobMessage(job_id="same", uid="same", namespace="default", pool=pool, handler="h", input={})
            for pool in ("p", "q")]
    assert queue.enqueue_many_sync(redis_sync, msgs) == [True, True]
    assert redis_sync.smembers(job_pool_key("default", "same")) == {b"p", b"q"}


async def test_an_awaited_bulk_submit_over_several_chunks_returns_every_result_in_order(redis_url: str) -> None:
    async with AsyncClient(redis_url) as client:
        job_ids = [f"a-{i}" for i in range(JOBS)]
        await client.submit_many("bulk", "h", [{}] * 5, job_ids=job_ids[100:105])  # known ones in the middle
        ids = await client.submit_many("bulk", "h", [{"n": i} for i in range(JOBS)], job_ids=job_ids)
        assert [str(s) for s in ids] == job_ids
        assert [s.new for s in ids] == [not 100 <= i < 105 for i in range(JOBS)]
        # Positions count the jobs ahead on the stream: the chunks reached Redis in order.
        fresh = [s.position for s in ids if s.new]
        assert fresh == sorted(fresh) and fresh[0] == 5 and fresh[-1] == JOBS - 1
        record = await client.get("a-900", pool="bulk")
        assert record is not None and record.input == {"n": 900}
