"""Reruns (``kubeworkers jobs retry``, ``dlq replay``) on a real Redis with real workers and scripts
(issue 17, defect 3; issue 12): a failed job runs again as its next run; a rerun never overwrites
a newer job of the same id, restores the job -> pool pointer, removes the dead-letter entry, and
of two reruns sent at once one wins; the TTL deletion of a Job leaves a job rerun since alone."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
import redis
import redis.asyncio as aioredis
from kubeworkers import JobContext, Registry, dlq, queue, reruns
from kubeworkers.protocol import JOB_HINT_TTL, JobMessage, JobState, PoolKeys, Priority, job_pool_key
from kubeworkers_operator.flows import jobs
from kubeworkers_operator.model.index import TrackedJob
from kubeworkers_operator.model.ttl import TtlQueue
from kubeworkers_operator.runtime import Runtime
from pydantic import BaseModel

from tests.support.workers import events, record, start_worker, wait_state

KEYS = PoolKeys("default", "p")
REPO = Path(__file__).resolve().parents[2]


class Empty(BaseModel):
    pass


def registry() -> Registry:
    reg = Registry()

    @reg.handler("fails_first_run", max_attempts=1)
    async def fails_first_run(inp: Empty, ctx: JobContext) -> dict[str, int]:
        if ctx.run == 0:
            raise RuntimeError("run 0 fails")
        return {"run": ctx.run, "attempt": ctx.attempt}

    @reg.handler("always_fails", max_attempts=1)
    async def always_fails(inp: Empty) -> None:
        raise RuntimeError("always")

    return reg


def message(job_id: str, handler: str = "fails_first_run", uid: str | None = None) -> JobMessage:
    return JobMessage(job_id=job_id, uid=uid or job_id, namespace="default", pool="p", handler=handler,
                      input={"x": 0.1234567890123})


async def failed_job(r: aioredis.Redis, redis_url: str, msg: JobMessage) -> None:
    """``msg`` enqueued and run to Failed (dead-lettered) by a worker, which is then stopped."""
    assert await queue.enqueue(r, msg)
    async with start_worker(redis_url, registry()):
        await wait_state(r, msg.job_id, {JobState.FAILED})


async def test_rerun_of_a_dead_lettered_job_runs_it_again_as_run_1(
    r: aioredis.Redis, redis_sync: redis.Redis, redis_url: str
) -> None:
    J1 = "default/j1"  # a Job object's job: its events are written (docs/protocol.md, *Events*)
    await failed_job(r, redis_url, message("default/j1", uid="uid-j1"))
    assert await r.xlen(KEYS.dead_letter) == 1
    done = await asyncio.to_thread(reruns.rerun_job, redis_sync, KEYS, J1)
    assert (done.run, done.pool) == (1, "p")
    queued = await record(r, J1)
    assert (queued.state, queued.run, queued.attempts, queued.error) == (JobState.QUEUED, 1, 0, None)
    assert await r.xlen(KEYS.dead_letter) == 0  # its dead-letter entry went with the same call
    async with start_worker(redis_url, registry()):
        ok = await wait_state(r, J1, {JobState.SUCCEEDED})
    assert (ok.run, ok.attempts, ok.output) == (1, 1, {"run": 1, "attempt": 1})
    assert ok.input == {"x": 0.1234567890123}  # the message was rewritten, not re-encoded
    runs = [(e.state.value, e.attempt, e.run) for e in await events(r, J1)]
    assert runs == [("Running", 1, 0), ("Failed", 1, 0), ("Queued", 0, 1), ("Running", 1, 1), ("Succeeded", 1, 1)]


async def test_rerun_persists_the_record_and_restores_the_job_pool_pointer_so_get_finds_it(
    r: aioredis.Redis, redis_sync: redis.Redis, redis_url: str
) -> None:
    await failed_job(r, redis_url, message("j2"))
    assert await r.ttl(KEYS.record("j2")) > 0  # a finished record expires with the result TTL
    await r.delete(job_pool_key("default", "j2"))  # as when the pointer expired before the record
    replayed = await asyncio.to_thread(dlq.replay, redis_sync, KEYS)
    assert replayed.job_ids == ["j2"]
    assert await r.ttl(KEYS.record("j2")) == -1
    assert 0 < await r.ttl(job_pool_key("default", "j2")) <= JOB_HINT_TTL  # a hint, with its own TTL
    assert await queue.find_pools(r, "default", "j2") == ["p"]


async def test_rerun_refused_on_uid_mismatch_leaves_the_newer_job_alone(
    r: aioredis.Redis, redis_sync: redis.Redis, redis_url: str
) -> None:
    await failed_job(r, redis_url, message("default/j3", uid="uid-old"))
    # The Job is deleted and re-created under the same name: a new uid, queued, nobody runs it yet.
    assert await queue.enqueue(r, message("default/j3", uid="uid-new"))
    before = await r.hgetall(KEYS.record("default/j3"))
    replayed = await asyncio.to_thread(dlq.replay, redis_sync, KEYS)
    assert replayed.job_ids == []
    assert [e.reason for e in replayed.refused] == ["uid"]
    with pytest.raises(reruns.RerunRefusedError) as refused:
        await asyncio.to_thread(reruns.rerun_job, redis_sync, KEYS, "default/j3", uid="uid-old")
    assert refused.value.reason == "uid"
    assert await r.hgetall(KEYS.record("default/j3")) == before
    assert await r.xlen(KEYS.stream("normal")) == 1  # the newer job's own entry only
    assert await r.xlen(KEYS.dead_letter) == 1  # the old entry is left in place


async def test_concurrent_reruns_of_one_job_one_wins(
    r: aioredis.Redis, redis_sync: redis.Redis, redis_url: str
) -> None:
    await failed_job(r, redis_url, message("j4", handler="always_fails"))
    outcomes: list[reruns.Rerun | reruns.RerunRefusedError] = []
    start = threading.Barrier(4)

    def one() -> None:
        start.wait()
        try:
            outcomes.append(reruns.rerun_job(redis_sync, KEYS, "j4", uid="j4", run=0))
        except reruns.RerunRefusedError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(type(o).__name__ for o in outcomes) == ["Rerun", "RerunRefusedError", "RerunRefusedError",
                                                          "RerunRefusedError"]
    assert await r.xlen(KEYS.stream("normal")) == 1
    assert [e.run for e in await events(r, "j4") if e.state is JobState.QUEUED] == [1]
    # A rerun that saw run 0 and arrives after run 1 failed again is refused too, not a third run.
    async with start_worker(redis_url, registry()):
        await wait_state(r, "j4", {JobState.FAILED})
    with pytest.raises(reruns.RerunRefusedError) as late:
        await asyncio.to_thread(reruns.rerun_job, redis_sync, KEYS, "j4", uid="j4", run=0)
    assert late.value.reason == "run"
    assert (await record(r, "j4")).run == 1


async def test_only_a_failed_job_is_rerun(r: aioredis.Redis, redis_sync: redis.Redis, redis_url: str) -> None:
    assert await queue.enqueue(r, message("queued"))
    with pytest.raises(reruns.RerunRefusedError) as queued:
        await asyncio.to_thread(reruns.rerun_job, redis_sync, KEYS, "queued")
    assert (queued.value.reason, queued.value.state) == ("state", "Queued")
    with pytest.raises(reruns.RerunRefusedError) as unknown:
        await asyncio.to_thread(reruns.rerun_job, redis_sync, KEYS, "nobody")
    assert unknown.value.reason == "unknown"


async def test_ttl_deletion_leaves_a_job_rerun_since_its_status_was_written_alone(
    r: aioredis.Redis, redis_sync: redis.Redis, redis_url: str
) -> None:
    await failed_job(r, redis_url, message("default/j5", uid="u5"))
    # The operator's view: the Job Failed long ago with a TTL of 0, so it is due for deletion...
    failed = {"phase": "Failed", "completionTime": "2026-01-01T00:00:00Z"}
    live = TrackedJob("default", "j5", "u5", "1", {"pool": "p", "handler": "fails_first_run",
                                                   "ttlSecondsAfterFinished": 0}, failed)
    deleted: list[str] = []

    async def fetch(namespace: str, name: str) -> TrackedJob:
        return live

    async def delete(path: str, uid: str | None = None) -> None:
        deleted.append(path)

    rt = cast(Runtime, SimpleNamespace(
        ttl=TtlQueue(), redis=r, writer=SimpleNamespace(fetch=fetch), api=SimpleNamespace(delete=delete),
        metrics=SimpleNamespace(ttl_deleted=SimpleNamespace(inc=lambda: None)), index=SimpleNamespace(jobs={}),
    ))
    rt.ttl.consider(live)
    # ... but it was rerun in Redis before the status sync folded that: neither the Job nor the
    # record may go (deleting the Job would cancel the rerun, deleting the record lose it).
    await asyncio.to_thread(reruns.rerun_job, redis_sync, KEYS, "default/j5")
    await jobs.delete_expired(rt)
    assert deleted == []
    assert (await record(r, "default/j5")).state is JobState.QUEUED
    # The record of the run the decision saw finish is the only one the TTL path deletes.
    assert not await queue.forget_finished(r, "default", "p", "default/j5", uid="u5", run=0)
    async with start_worker(redis_url, registry()):
        await wait_state(r, "default/j5", {JobState.SUCCEEDED})
    assert not await queue.forget_finished(r, "default", "p", "default/j5", uid="u5", run=0)
    assert await queue.forget_finished(r, "default", "p", "default/j5", uid="u5", run=1)
    assert not await r.exists(KEYS.record("default/j5"))


def cli(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kubeworkers", "jobs", *args, "--redis-url", redis_url],
                          check=False, capture_output=True, text=True, cwd=REPO, timeout=60)


async def test_jobs_retry_and_cancel_commands_answer_per_job_with_exit_codes(
    r: aioredis.Redis, redis_url: str
) -> None:
    await failed_job(r, redis_url, message("c1"))
    await failed_job(r, redis_url, message("c2", handler="always_fails"))
    assert await queue.enqueue(r, message("c3"))
    retried = await asyncio.to_thread(cli, redis_url, "retry", "c1")
    assert (retried.returncode, retried.stdout) == (0, "c1\trerun 1 queued on pool p\n"), retried.stderr
    again = await asyncio.to_thread(cli, redis_url, "retry", "c1", "nobody", "--json")
    assert again.returncode == 1
    lines = [json.loads(line) for line in again.stdout.splitlines()]
    assert [(x["job_id"], x["ok"], x.get("reason")) for x in lines] == [("c1", False, "state"),
                                                                         ("nobody", False, "unknown")]
    assert again.stderr.splitlines() == [
        "kubeworkers jobs retry: job c1: not rerun: it has not finished (it is Queued); only a Failed job is",
        "kubeworkers jobs retry: job nobody: not found",
    ]
    mismatch = await asyncio.to_thread(cli, redis_url, "retry", "c2", "--uid", "someone-else")
    assert mismatch.returncode == 1 and "belongs to another job" in mismatch.stderr
    by_state = await asyncio.to_thread(cli, redis_url, "retry", "--state", "failed", "--pool", "p")
    assert (by_state.returncode, by_state.stdout) == (0, "c2\trerun 1 queued on pool p\n"), by_state.stderr
    cancelled = await asyncio.to_thread(cli, redis_url, "cancel", "c3", "nobody")
    assert cancelled.returncode == 1
    assert cancelled.stdout == "c3\tcancel requested on pool p\n"
    assert cancelled.stderr == "kubeworkers jobs cancel: job nobody: not found\n"
    assert (await record(r, "c3")).state is JobState.CANCELLED
    finished = await asyncio.to_thread(cli, redis_url, "cancel", "c3")
    assert finished.returncode == 1 and "it has finished (Cancelled)" in finished.stderr



@pytest.mark.parametrize("priority", ["critical", "high", "low"])
async def test_a_rerun_goes_back_to_the_stream_of_its_priority(
    r: aioredis.Redis, redis_sync: redis.Redis, redis_url: str, priority: str
) -> None:
    msg = message("prio", handler="always_fails").model_copy(update={"priority": Priority(priority)})
    await failed_job(r, redis_url, msg)
    await asyncio.to_thread(reruns.rerun_job, redis_sync, KEYS, "prio")
    lengths = {p: await r.xlen(KEYS.stream(p)) for p in ("critical", "high", "normal", "low")}
    assert lengths == {p: int(p == priority) for p in lengths}
    assert (await record(r, "prio")).priority.value == priority
