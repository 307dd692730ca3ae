"""What the console reads and does (kubeworkers.console.reads) on a real Redis: which pools a
namespace has, and the one-line outcomes of its actions (the CLI's functions underneath)."""

from __future__ import annotations

import redis
from kubeworkers import queue
from kubeworkers.console import reads
from kubeworkers.protocol import JobMessage

from hack.polling import wait_for


def message(pool: str, job_id: str, namespace: str = "default") -> JobMessage:
    return JobMessage(job_id=job_id, uid=job_id, namespace=namespace, pool=pool, handler="h", input={})


def test_the_pools_of_a_namespace_are_those_with_a_job_stream(redis_sync: redis.Redis) -> None:
    for pool, ns in (("alpha", "default"), ("beta", "default"), ("gamma", "team-b")):
        assert queue.enqueue_sync(redis_sync, message(pool, f"{pool}-1", ns))
    redis_sync.set("kw:{default/not-a-stream}:jobs:normal", "x")  # a key of that name, not a stream
    pools = reads.Pools("default")
    assert pools.names(redis_sync, now=0.0) == ["alpha", "beta"]
    assert reads.Pools("team-b").names(redis_sync) == ["gamma"]
    assert reads.Pools("default", ["only"]).names(redis_sync) == ["only"]

    # A new pool shows up after the cache's time, from a scan in the background: the page that
    # notices the cache is old is served the last answer, a later one the new list.
    assert queue.enqueue_sync(redis_sync, message("delta", "delta-1"))
    assert pools.names(redis_sync, now=1.0) == ["alpha", "beta"]  # fresh enough: no scan
    assert pools.names(redis_sync, now=reads.POOLS_CACHE_S + 10**9) == ["alpha", "beta"]
    wait_for(lambda: pools.names(redis_sync, now=1.0) == ["alpha", "beta", "delta"], 10, "the background scan")


def test_action_outcomes_are_one_line_saying_what_happened(redis_sync: redis.Redis) -> None:
    assert queue.enqueue_sync(redis_sync, message("p", "queued-1"))
    assert reads.cancel(redis_sync, "default", "p", "queued-1") == reads.Outcome(
        True, "job queued-1: cancel requested on pool p")
    assert reads.cancel(redis_sync, "default", "p", "queued-1") == reads.Outcome(
        False, "job queued-1: not cancelled: it has finished (Cancelled)")
    assert reads.cancel(redis_sync, "default", "p", "nobody").text == "job nobody: not found"
    refused = reads.retry(redis_sync, "default", "p", "queued-1")
    assert not refused.ok and "only a Failed job is" in refused.text
    assert reads.replay(redis_sync, "default", "p", "1700000000000-0") == reads.Outcome(
        False, "no dead-letter entry 1700000000000-0 on pool p")
    assert reads.replay(redis_sync, "default", "p", None) == reads.Outcome(True, "replayed 0 job(s)")
