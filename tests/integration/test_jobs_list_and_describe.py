"""``kubeworkers jobs list`` and ``kubeworkers jobs describe`` on a real Redis with real workers and
scripts (issue 12, item 1): the jobs index the scripts keep (``lua/jobindex.lua``) answers by state,
handler and age, stays bounded and forgets expired records; a job's record keeps every attempt
(worker, start, end, outcome); unknown ids are one line on stderr and exit 1."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from kubeworkers import JobContext, Registry, cli, inspection, leases, queue, scripts
from kubeworkers.protocol import JobMessage, JobState, PoolKeys
from pydantic import BaseModel

from tests.support.workers import cap_job_index, start_worker, wait_state

KEYS = PoolKeys("default", "p")


class Empty(BaseModel):
    pass


def registry() -> Registry:
    reg = Registry()

    @reg.handler("ok")
    async def ok(inp: Empty) -> dict[str, str]:
        return {"done": "yes"}

    @reg.handler("boom", max_attempts=1)
    async def boom(inp: Empty) -> None:
        raise RuntimeError("boom")

    @reg.handler("flaky", max_attempts=3, retry_backoff=0.05)
    async def flaky(inp: Empty, ctx: JobContext) -> dict[str, int]:
        if ctx.attempt == 1:
            raise ValueError("first attempt fails")
        return {"attempt": ctx.attempt}

    return reg


def message(job_id: str, handler: str, uid: str | None = None) -> JobMessage:
    return JobMessage(job_id=job_id, uid=uid or job_id, namespace="default", pool="p", handler=handler, input={})


def ids(found: inspection.Listing) -> list[str]:
    return [rec.job_id for rec in found.rows]


def run_cli(capsys: pytest.CaptureFixture[str], redis_url: str, *args: str) -> tuple[int, str, str]:
    code = cli.main(["jobs", *args, "--redis-url", redis_url])
    out, err = capsys.readouterr()
    return code, out, err


async def test_jobs_list_filters_by_state_handler_and_since(
    r: aioredis.Redis, redis_sync: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for job_id, handler in [("s1", "ok"), ("f1", "boom"), ("s2", "ok"), ("f2", "boom")]:
        assert await queue.enqueue(r, message(job_id, handler))
        async with start_worker(redis_url, registry()):
            await wait_state(r, job_id, {JobState.SUCCEEDED, JobState.FAILED})
    assert await queue.enqueue(r, message("q1", "ok"))  # no worker: stays Queued
    # One job that finished two hours ago (its index score; the record is still there).
    await r.zadd(KEYS.index("Succeeded"), {"s1": time.time() - 7200})

    def listed(**query: Any) -> list[str]:
        return ids(inspection.list_jobs(redis_sync, KEYS, inspection.Query(**query)))

    assert listed() == ["q1", "f2", "s2", "f1", "s1"]  # newest first, live and finished merged
    assert listed(state="Failed") == ["f2", "f1"]
    assert listed(state="Queued") == ["q1"]
    assert listed(state="Succeeded", handler="ok") == ["s2", "s1"]
    assert listed(handler="boom") == ["f2", "f1"]
    assert listed(since_seconds=3600) == ["q1", "f2", "s2", "f1"]
    assert listed(limit=2) == ["q1", "f2"]

    code, out, err = run_cli(capsys, redis_url, "list", "--pool", "p", "--state", "failed", "--json")
    assert (code, err) == (0, "")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(x["job_id"], x["state"], x["handler"], x["error"]["type"]) for x in rows] == [
        ("f2", "Failed", "boom", "RuntimeError"), ("f1", "Failed", "boom", "RuntimeError")]
    code, out, _ = run_cli(capsys, redis_url, "list", "--pool", "p", "--since", "1h")
    assert code == 0
    assert out.splitlines()[0].split() == ["JOB", "STATE", "HANDLER", "ATTEMPTS", "AGE", "DURATION", "MESSAGE"]
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["q1", "f2", "s2", "f1"]


async def test_jobs_list_skips_ids_whose_record_moved_on_or_was_deleted(
    r: aioredis.Redis, redis_sync: redis.Redis, redis_url: str
) -> None:
    assert await queue.enqueue(r, message("a", "boom"))
    assert await queue.enqueue(r, message("b", "boom"))
    async with start_worker(redis_url, registry()):
        await wait_state(r, "a", {JobState.FAILED})
        await wait_state(r, "b", {JobState.FAILED})
    await r.delete(KEYS.record("b"))
    # "a" enqueued again as a new incarnation is live, no longer Failed.
    await r.hset(KEYS.record("a"), "state", "Queued")
    failed = inspection.list_jobs(redis_sync, KEYS, inspection.Query(state="Failed"))
    assert ids(failed) == []
    assert ids(inspection.list_jobs(redis_sync, KEYS, inspection.Query())) == []  # "a" is not in the live index


async def test_the_index_is_bounded_by_count_and_finished_jobs_leave_the_live_index(
    r: aioredis.Redis, redis_sync: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    cap_job_index(monkeypatch, 5)  # instead of a million
    for n in range(8):
        assert await queue.enqueue(r, message(f"c{n}", "ok"))
    assert await r.zcard(KEYS.index("live")) == 8
    for n in range(8):
        assert await asyncio.to_thread(queue.cancel_sync, redis_sync, "default", "p", f"c{n}", result_ttl=3600)
    assert await r.zcard(KEYS.index("live")) == 0
    assert [m.decode() for m in await r.zrange(KEYS.index("Cancelled"), 0, -1)] == [f"c{n}" for n in range(3, 8)]



async def test_the_index_forgets_expired_records_and_a_shorter_ttl_never_drops_longer_kept_ones(
    r: aioredis.Redis, redis_sync: redis.Redis
) -> None:
    keys = PoolKeys("default", "q")

    async def cancelled(job_id: str, ttl: int) -> None:
        assert await queue.enqueue(r, message(job_id, "ok").model_copy(update={"pool": "q"}))
        assert await asyncio.to_thread(queue.cancel_sync, redis_sync, "default", "q", job_id, result_ttl=ttl)

    def index() -> list[str]:
        return [m.decode() for m in redis_sync.zrange(keys.index("Cancelled"), 0, -1)]

    # Records kept for one second: once they expire, a read skips them and the next finish trims them.
    await cancelled("e0", 1)
    await cancelled("e1", 1)
    assert ids(inspection.list_jobs(redis_sync, keys, inspection.Query(state="Cancelled"))) == ["e1", "e0"]
    await asyncio.sleep(2.1)
    assert ids(inspection.list_jobs(redis_sync, keys, inspection.Query(state="Cancelled"))) == []
    assert index() == ["e0", "e1"]
    await cancelled("e2", 1)
    assert index() == ["e2"]
    # A record kept an hour: later finishes with a one-second TTL no longer trim by one second.
    await cancelled("long", 3600)
    await asyncio.sleep(1.1)
    await cancelled("e3", 1)
    assert index() == ["e2", "long", "e3"]
    assert ids(inspection.list_jobs(redis_sync, keys, inspection.Query(state="Cancelled"))) == ["e3", "long"]


async def test_jobs_describe_shows_every_attempt_with_worker_and_outcome(
    r: aioredis.Redis, redis_sync: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await queue.enqueue(r, message("fl", "flaky"))
    async with start_worker(redis_url, registry()) as worker:
        await wait_state(r, "fl", {JobState.SUCCEEDED})
    d = inspection.describe_job(redis_sync, "default", None, "fl")
    assert d.job_object is None
    assert d.record.output == {"attempt": 2}
    assert [(a.attempt, a.worker, a.outcome) for a in d.attempts] == [
        (1, worker.name, "retry"), (2, worker.name, "Succeeded")]
    first, second = d.attempts
    assert first.error == {"type": "ValueError", "message": "first attempt fails"}
    assert first.started_at is not None and first.ended_at is not None and first.started_at <= first.ended_at
    assert second.started_at is not None and first.ended_at <= second.started_at

    code, out, err = run_cli(capsys, redis_url, "describe", "fl")
    assert (code, err) == (0, "")
    assert "Source:     SDK (no Job CR)" in out
    assert "State:      Succeeded" in out
    rows = [line.split() for line in out.split("Attempts:\n", 1)[1].splitlines()]
    assert [(row[0], row[2], row[6]) for row in rows[1:]] == [("1", worker.name, "retry"),
                                                             ("2", worker.name, "Succeeded")]
    code, out, _ = run_cli(capsys, redis_url, "describe", "fl", "--pool", "p", "--json")
    described = json.loads(out)
    assert [a["outcome"] for a in described["attempt_history"]] == ["retry", "Succeeded"]


async def test_jobs_describe_of_a_failed_job_shows_its_traceback(
    r: aioredis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await queue.enqueue(r, message("bf", "boom"))
    async with start_worker(redis_url, registry()):
        await wait_state(r, "bf", {JobState.FAILED})
    code, out, _ = run_cli(capsys, redis_url, "describe", "bf")
    assert code == 0
    assert "  type:      RuntimeError" in out
    assert "  traceback:" in out and 'raise RuntimeError("boom")' in out


async def test_an_attempt_whose_worker_vanished_is_recorded_lost(
    r: aioredis.Redis, redis_sync: redis.Redis
) -> None:
    await leases.ensure_groups(r, KEYS)
    assert await queue.enqueue(r, message("lo", "ok"))
    # A worker takes the job (take.lua) and is never heard from again; the job is failed as lost.
    taken = await scripts.call(r, "take", KEYS.streams, [
        "read", "workers", "gone-worker", 1, time.time(), KEYS.prefix, KEYS.events, "",
        3600, 3, "{}", "{}", 100, 0])
    assert taken[6] == b"run"
    entry = taken[1].decode()
    await r.xack(KEYS.stream("normal"), "workers", entry)  # nobody holds it any more
    assert await asyncio.to_thread(queue.fail_lost_sync, redis_sync, "default", "p", "lo",
                                   min_age_seconds=0, result_ttl=3600)
    d = inspection.describe_job(redis_sync, "default", "p", "lo")
    assert [(a.attempt, a.worker, a.outcome) for a in d.attempts] == [(1, "gone-worker", "lost")]
    assert ids(inspection.list_jobs(redis_sync, KEYS, inspection.Query(state="Failed"))) == ["lo"]


async def test_jobs_describe_names_the_job_cr_a_job_came_from(
    r: aioredis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await queue.enqueue(r, message("default/nightly-report", "ok", uid="9f0c-uid"))
    code, out, _ = run_cli(capsys, redis_url, "describe", "default/nightly-report")
    assert code == 0
    assert "Source:     Job CR default/nightly-report (uid 9f0c-uid)" in out
    assert "State:      Queued" in out
    assert "Attempts:   none recorded" in out


async def test_jobs_describe_of_an_unknown_id_is_one_line_and_exit_1(
    r: aioredis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, redis_url, "describe", "no-such-job")
    assert (code, out) == (1, "")
    assert err == "kubeworkers jobs describe: job no-such-job: not found in namespace default\n"
    code, out, err = run_cli(capsys, redis_url, "describe", "no-such-job", "--pool", "p")
    assert (code, out) == (1, "")
    assert err == "kubeworkers jobs describe: job no-such-job: not found on pool p\n"


async def test_jobs_list_bad_arguments_are_one_line_and_exit_2(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, redis_url, "list", "--pool", "p", "--since", "yesterday")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith("kubeworkers jobs list: --since must be a duration")
    code, _, err = run_cli(capsys, redis_url, "list", "--pool", "p", "--state", "Sleeping")
    assert code == 2 and err.startswith("kubeworkers jobs list: --state must be one of")
    code, _, err = run_cli(capsys, redis_url, "list", "--pool", "")
    assert code == 2 and "a pool is required" in err
