"""The worker loop, in process, on a real Redis: running, failing, retrying, timing out, cancelling."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import redis.asyncio as aioredis
from kubeworkers import JobContext, PermanentError, Registry
from kubeworkers.client import AsyncClient
from kubeworkers.protocol import JobState, PoolKeys, Priority, WorkerHeartbeat
from pydantic import BaseModel

from tests.support.workers import events, record, start_worker, until

#: These tests read the events stream, which the worker path writes only for a Job object's jobs
#: (docs/protocol.md, *Events*): their SDK clients submit as the operator enqueues those.
pytestmark = pytest.mark.usefixtures("submits_as_job_objects")


class Numbers(BaseModel):
    a: int
    b: int = 0


class Sum(BaseModel):
    total: int


async def test_handler_output_is_written_to_the_record_and_the_events_stream(
    redis_url: str, r: aioredis.Redis, client: AsyncClient
) -> None:
    reg = Registry()

    @reg.handler("add")
    async def add(inp: Numbers) -> Sum:
        return Sum(total=inp.a + inp.b)

    async with start_worker(redis_url, reg) as worker:
        job_id = await client.submit("p", "add", {"a": 2, "b": 3})
        done = await client.wait(job_id, 30)
    assert done.state is JobState.SUCCEEDED
    assert done.output == {"total": 5}
    assert done.attempts == 1
    assert done.worker == worker.name
    assert done.started_at is not None and done.finished_at is not None
    assert [e.state for e in await events(r, job_id)] == [JobState.RUNNING, JobState.SUCCEEDED]
    assert (await events(r, job_id))[-1].output == {"total": 5}
    stats = await r.hgetall(PoolKeys("default", "p").stats)
    assert int(stats[b"completed"]) == 1 and float(stats[b"duration_seconds_total"]) >= 0


async def test_handler_may_return_a_dict_or_none(redis_url: str, client: AsyncClient) -> None:
    reg = Registry()

    @reg.handler("as_dict")
    async def as_dict(inp: Numbers) -> dict[str, int]:
        return {"a": inp.a}

    @reg.handler("nothing")
    async def nothing(inp: Numbers) -> None:
        return None

    async with start_worker(redis_url, reg):
        first = await client.wait(await client.submit("p", "as_dict", {"a": 7}), 30)
        second = await client.wait(await client.submit("p", "nothing", {"a": 7}), 30)
    assert (first.state, first.output) == (JobState.SUCCEEDED, {"a": 7})
    assert (second.state, second.output) == (JobState.SUCCEEDED, None)


async def test_sync_handler_runs_in_a_thread_not_on_the_event_loop(redis_url: str, client: AsyncClient) -> None:
    reg = Registry()
    loop_thread = threading.get_ident()

    @reg.handler("blocking")
    def blocking(inp: Numbers) -> dict[str, bool]:
        time.sleep(0.05)  # would stall the loop if run on it
        return {"off_loop": threading.get_ident() != loop_thread}

    async with start_worker(redis_url, reg):
        done = await client.wait(await client.submit("p", "blocking", {"a": 1}), 30)
    assert done.output == {"off_loop": True}


async def test_unknown_handler_fails_at_once_with_a_clear_message_and_no_retry(
    redis_url: str, r: aioredis.Redis, client: AsyncClient
) -> None:
    reg = Registry()

    @reg.handler("known")
    async def known(inp: Numbers) -> None:
        return None

    async with start_worker(redis_url, reg):
        done = await client.wait(await client.submit("p", "unknwon", {"a": 1}, max_attempts=5), 30)
    assert done.state is JobState.FAILED
    assert done.attempts == 1
    assert done.error is not None and done.error.type == "UnknownHandler" and not done.error.retryable
    assert "'unknwon'" in done.error.message and "known" in done.error.message
    assert await r.zcard(PoolKeys("default", "p").delayed) == 0


async def test_input_that_fails_validation_fails_at_once_naming_the_field(
    redis_url: str, client: AsyncClient
) -> None:
    reg = Registry()
    calls: list[Numbers] = []

    @reg.handler("add")
    async def add(inp: Numbers) -> None:
        calls.append(inp)

    async with start_worker(redis_url, reg):
        done = await client.wait(await client.submit("p", "add", {"a": "not a number"}, max_attempts=5), 30)
    assert done.state is JobState.FAILED and done.attempts == 1
    assert done.error is not None and done.error.type == "InvalidInput"
    assert "a" in done.error.message and "Numbers" in done.error.message
    assert calls == []


async def test_job_that_runs_past_its_timeout_is_cancelled_and_says_it_timed_out(
    redis_url: str, client: AsyncClient
) -> None:
    reg = Registry()
    stopped = asyncio.Event()

    @reg.handler("sleepy", timeout=0.3, max_attempts=1)
    async def sleepy(inp: Numbers) -> None:
        try:
            await asyncio.sleep(60)
        finally:
            stopped.set()

    async with start_worker(redis_url, reg):
        done = await client.wait(await client.submit("p", "sleepy", {"a": 1}), 30)
    assert done.state is JobState.FAILED
    assert done.error is not None and done.error.type == "Timeout"
    assert "timed out after 0.3s" in done.error.message
    assert stopped.is_set()


async def test_timeout_given_at_submit_overrides_the_handler_default(redis_url: str, client: AsyncClient) -> None:
    reg = Registry()

    @reg.handler("sleepy", timeout=60, max_attempts=1)
    async def sleepy(inp: Numbers) -> None:
        await asyncio.sleep(30)

    async with start_worker(redis_url, reg):
        done = await client.wait(await client.submit("p", "sleepy", {"a": 1}, timeout=0.2), 30)
    assert done.error is not None and done.error.type == "Timeout"


async def test_failing_job_is_retried_with_backoff_then_dead_lettered_with_the_reason(
    redis_url: str, r: aioredis.Redis, client: AsyncClient
) -> None:
    reg = Registry()
    attempts: list[tuple[int, float]] = []

    @reg.handler("broken", max_attempts=3, retry_backoff=0.2)
    async def broken(inp: Numbers, ctx: JobContext) -> None:
        attempts.append((ctx.attempt, time.monotonic()))
        raise RuntimeError("disk on fire")

    async with start_worker(redis_url, reg):
        job_id = await client.submit("p", "broken", {"a": 1})
        done = await client.wait(job_id, 30)
    assert [a for a, _ in attempts] == [1, 2, 3]
    # Backoff: the second retry waits longer than the first's minimum (0.2 * 2 * 0.5 s).
    assert attempts[2][1] - attempts[1][1] >= 0.2
    assert done.state is JobState.FAILED and done.attempts == 3
    assert done.error is not None and done.error.type == "RuntimeError" and "disk on fire" in done.error.message
    assert done.error.traceback is not None and "disk on fire" in done.error.traceback
    dead = await r.xrange(PoolKeys("default", "p").dead_letter)
    assert len(dead) == 1
    fields = {k.decode(): v.decode() for k, v in dead[0][1].items()}
    assert "RuntimeError: disk on fire (attempt 3 of 3)" in fields["reason"]
    states = [e.state for e in await events(r, job_id)]
    assert states == [JobState.RUNNING, JobState.QUEUED, JobState.RUNNING, JobState.QUEUED, JobState.RUNNING,
                      JobState.FAILED]


async def test_flaky_job_succeeds_on_its_second_attempt(redis_url: str, client: AsyncClient) -> None:
    reg = Registry()

    @reg.handler("flaky", retry_backoff=0.05)
    async def flaky(inp: Numbers, ctx: JobContext) -> dict[str, int]:
        if ctx.attempt == 1:
            raise ConnectionError("try again")
        return {"attempt": ctx.attempt}

    async with start_worker(redis_url, reg):
        done = await client.wait(await client.submit("p", "flaky", {"a": 1}), 30)
    assert (done.state, done.attempts, done.output) == (JobState.SUCCEEDED, 2, {"attempt": 2})


async def test_permanent_error_is_not_retried(redis_url: str, client: AsyncClient) -> None:
    reg = Registry()
    calls: list[int] = []

    @reg.handler("picky", max_attempts=5)
    async def picky(inp: Numbers) -> None:
        calls.append(1)
        raise PermanentError("this input can never work")

    async with start_worker(redis_url, reg):
        done = await client.wait(await client.submit("p", "picky", {"a": 1}), 30)
    assert done.state is JobState.FAILED and calls == [1]
    assert done.error is not None and not done.error.retryable


async def test_progress_reports_reach_the_record_and_the_events_stream(
    redis_url: str, r: aioredis.Redis, client: AsyncClient
) -> None:
    reg = Registry()
    gate = asyncio.Event()

    @reg.handler("steps")
    async def steps(inp: Numbers, ctx: JobContext) -> None:
        await ctx.progress(0.5, "half way")
        await gate.wait()

    async with start_worker(redis_url, reg):
        job_id = await client.submit("p", "steps", {"a": 1})

        async def halfway() -> bool:
            rec = await client.get(job_id)
            return rec is not None and rec.progress == 0.5

        await until(halfway, 30, "the progress report")
        rec = await record(r, job_id)
        assert (rec.state, rec.message) == (JobState.RUNNING, "half way")
        gate.set()
        await client.wait(job_id, 30)
    progress = [e for e in await events(r, job_id) if e.progress is not None and e.state is JobState.RUNNING]
    assert [(e.progress, e.message) for e in progress] == [(0.5, "half way")]


async def test_cancelling_a_running_job_cancels_its_handler_task(
    redis_url: str, r: aioredis.Redis, client: AsyncClient
) -> None:
    reg = Registry()
    started, cancelled = asyncio.Event(), asyncio.Event()

    @reg.handler("forever")
    async def forever(inp: Numbers) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with start_worker(redis_url, reg):
        job_id = await client.submit("p", "forever", {"a": 1})
        await asyncio.wait_for(started.wait(), 30)
        assert await client.cancel(job_id)
        done = await client.wait(job_id, 30)
    assert done.state is JobState.CANCELLED
    assert cancelled.is_set()
    assert [e.state for e in await events(r, job_id)] == [JobState.RUNNING, JobState.CANCELLED]


async def test_cancelled_sync_handler_sees_the_cancellation_signal(redis_url: str, client: AsyncClient) -> None:
    reg = Registry()
    saw_it = threading.Event()
    running = threading.Event()

    @reg.handler("poller")
    def poller(inp: Numbers, ctx: JobContext) -> None:
        running.set()
        if ctx.wait_cancelled(30):
            saw_it.set()

    async with start_worker(redis_url, reg):
        job_id = await client.submit("p", "poller", {"a": 1})
        await until(running.is_set, 30, "the sync handler to start")
        await client.cancel(job_id)
        done = await client.wait(job_id, 30)
        await until(saw_it.is_set, 30, "the handler thread to see the cancellation")
    assert done.state is JobState.CANCELLED


async def test_cancelled_queued_job_is_skipped_by_the_worker(
    redis_url: str, r: aioredis.Redis, client: AsyncClient
) -> None:
    reg = Registry()
    ran: list[int] = []

    @reg.handler("add")
    async def add(inp: Numbers) -> None:
        ran.append(inp.a)

    doomed = await client.submit("p", "add", {"a": 1})
    assert await client.cancel(doomed)
    async with start_worker(redis_url, reg):
        kept = await client.submit("p", "add", {"a": 2})
        await client.wait(kept, 30)
    assert ran == [2]
    assert (await record(r, doomed)).state is JobState.CANCELLED


async def test_high_priority_job_submitted_behind_ten_thousand_normal_ones_starts_next(
    redis_url: str, client: AsyncClient
) -> None:
    reg = Registry()
    order: list[int] = []
    gate = asyncio.Event()

    @reg.handler("record")
    async def record_order(inp: Numbers) -> None:
        order.append(inp.a)
        if inp.a == -1:
            await gate.wait()

    blocker = await client.submit("p", "record", {"a": -1})
    async with start_worker(redis_url, reg, concurrency=1):
        await until(lambda: order == [-1], 30, "the blocking job to start")
        await client.submit_many("p", "record", ({"a": i} for i in range(10_000)))
        urgent = await client.submit("p", "record", {"a": 10_000_000}, priority=Priority.HIGH)
        gate.set()
        await client.wait(urgent, 60)
        await client.wait(blocker, 60)
    assert order[:2] == [-1, 10_000_000]


async def test_low_priority_jobs_wait_for_normal_ones(redis_url: str, client: AsyncClient) -> None:
    reg = Registry()
    order: list[str] = []

    @reg.handler("note")
    async def note(inp: Numbers, ctx: JobContext) -> None:
        order.append(ctx.job_id)

    await client.submit("p", "note", {"a": 1}, priority="low", job_id="low")
    await client.submit("p", "note", {"a": 1}, priority="normal", job_id="normal")
    await client.submit("p", "note", {"a": 1}, priority="high", job_id="high")
    async with start_worker(redis_url, reg, concurrency=1):
        await client.wait("low", 30)
    assert order == ["high", "normal", "low"]


async def test_worker_runs_at_most_concurrency_jobs_at_once(redis_url: str, client: AsyncClient) -> None:
    reg = Registry()
    now_running = 0
    peak = 0

    @reg.handler("busy")
    async def busy(inp: Numbers) -> None:
        nonlocal now_running, peak
        now_running += 1
        peak = max(peak, now_running)
        await asyncio.sleep(0.02)
        now_running -= 1

    async with start_worker(redis_url, reg, concurrency=3):
        ids = await client.submit_many("p", "busy", ({"a": i} for i in range(30)))
        for job_id in ids:
            await client.wait(job_id, 60)
    assert peak == 3


async def test_worker_registers_its_heartbeat_and_removes_it_on_clean_exit(
    redis_url: str, r: aioredis.Redis, client: AsyncClient
) -> None:
    reg = Registry()
    gate = asyncio.Event()

    @reg.handler("wait")
    async def wait(inp: Numbers) -> None:
        await gate.wait()

    keys = PoolKeys("default", "p")
    async with start_worker(redis_url, reg, concurrency=2, worker_name="pod-a"):
        job_id = await client.submit("p", "wait", {"a": 1})

        async def busy_beat() -> bool:
            raw = await r.hget(keys.workers, "pod-a")
            return raw is not None and WorkerHeartbeat.model_validate_json(raw).in_flight == 1

        await until(busy_beat, 30, "a heartbeat with one job in flight")
        beat = WorkerHeartbeat.model_validate_json(await r.hget(keys.workers, "pod-a"))
        assert (beat.worker, beat.concurrency, beat.last_job, beat.draining) == ("pod-a", 2, job_id, False)
        gate.set()
        await client.wait(job_id, 30)
    assert await r.hget(keys.workers, "pod-a") is None


async def test_deleted_job_record_makes_the_worker_skip_the_entry(
    redis_url: str, r: aioredis.Redis, client: AsyncClient
) -> None:
    reg = Registry()
    ran: list[int] = []

    @reg.handler("add")
    async def add(inp: Numbers) -> None:
        ran.append(inp.a)

    from kubeworkers import queue

    gone = await client.submit("p", "add", {"a": 1})
    await queue.delete_job(r, "default", "p", gone)
    async with start_worker(redis_url, reg):
        await client.wait(await client.submit("p", "add", {"a": 2}), 30)
    assert ran == [2]
    assert await r.xlen(PoolKeys("default", "p").stream("normal")) == 0


async def test_finished_entries_are_acknowledged_and_removed_from_the_stream(
    redis_url: str, r: aioredis.Redis, client: AsyncClient
) -> None:
    reg = Registry()

    @reg.handler("add")
    async def add(inp: Numbers) -> None:
        return None

    keys = PoolKeys("default", "p")
    async with start_worker(redis_url, reg):
        ids = await client.submit_many("p", "add", ({"a": i} for i in range(50)))
        for job_id in ids:
            await client.wait(job_id, 30)
        pending = await r.xpending(keys.stream("normal"), "workers")
    assert pending["pending"] == 0
    assert await r.xlen(keys.stream("normal")) == 0


async def test_cancel_flag_without_its_pubsub_message_is_noticed_by_the_heartbeat(
    redis_url: str, r: aioredis.Redis, client: AsyncClient
) -> None:
    reg = Registry()
    started = asyncio.Event()

    @reg.handler("forever")
    async def forever(inp: Numbers) -> None:
        started.set()
        await asyncio.sleep(3600)

    async with start_worker(redis_url, reg):
        job_id = await client.submit("p", "forever", {"a": 1})
        await asyncio.wait_for(started.wait(), 30)
        # As if the pub/sub message had been lost: only the flag is set.
        await r.set(PoolKeys("default", "p").cancel(job_id), "1")
        done = await client.wait(job_id, 30)
    assert done.state is JobState.CANCELLED


async def test_draining_worker_reports_not_ready_but_healthy(redis_url: str, client: AsyncClient) -> None:
    reg = Registry()
    started = asyncio.Event()
    release = asyncio.Event()

    @reg.handler("hold")
    async def hold(inp: Numbers) -> None:
        started.set()
        await release.wait()

    async def get(port: int, path: str) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status = int((await reader.readline()).split()[1])
        writer.close()
        return status

    async with start_worker(redis_url, reg, metrics_port=0, shutdown_grace=30) as worker:
        assert worker.metrics_port is not None
        assert await get(worker.metrics_port, "/readyz") == 200
        job_id = await client.submit("p", "hold", {"a": 1})
        await asyncio.wait_for(started.wait(), 30)
        worker.stop()
        assert await get(worker.metrics_port, "/readyz") == 503
        assert await get(worker.metrics_port, "/healthz") == 200
        release.set()
        done = await client.wait(job_id, 30)
    assert done.state is JobState.SUCCEEDED


async def test_sync_handler_reports_progress_from_its_thread(
    redis_url: str, r: aioredis.Redis, client: AsyncClient
) -> None:
    reg = Registry()
    reported = threading.Event()
    finish = threading.Event()

    @reg.handler("threaded")
    def threaded(inp: Numbers, ctx: JobContext) -> None:
        ctx.progress(0.25, "a quarter")
        reported.set()
        finish.wait(30)

    async with start_worker(redis_url, reg):
        job_id = await client.submit("p", "threaded", {"a": 1})

        async def quarter() -> bool:
            rec = await client.get(job_id)
            return rec is not None and rec.progress == 0.25 and rec.message == "a quarter"

        await until(quarter, 30, "the progress report from the handler thread")
        finish.set()
        assert (await client.wait(job_id, 30)).state is JobState.SUCCEEDED


async def test_entries_with_only_the_message_field_are_still_run(
    redis_url: str, r: aioredis.Redis, client: AsyncClient
) -> None:
    # An older writer's entry: the JSON message alone, without the j/u/h shortcut fields.
    reg = Registry()

    @reg.handler("add")
    async def add(inp: Numbers) -> Sum:
        return Sum(total=inp.a + inp.b)

    keys = PoolKeys("default", "p")
    job_id = await client.submit("p", "add", {"a": 1, "b": 2})
    [(entry, fields)] = await r.xrange(keys.stream("normal"))
    await r.xdel(keys.stream("normal"), entry)
    new_entry = await r.xadd(keys.stream("normal"), {"v": "1", "m": fields[b"m"]})
    await r.hset(keys.record(job_id), "entry", new_entry)
    async with start_worker(redis_url, reg):
        done = await client.wait(job_id, 30)
    assert (done.state, done.output) == (JobState.SUCCEEDED, {"total": 3})


async def test_a_stop_that_arrives_during_a_take_is_not_followed_by_a_blocking_read(
    redis_url: str, client: AsyncClient
) -> None:
    reg = Registry()

    @reg.handler("add")
    async def add(inp: Numbers) -> Sum:
        await asyncio.sleep(0.05)
        return Sum(total=inp.a + inp.b)

    blocking_reads_after_stop: list[list[str]] = []
    stopped = asyncio.Event()
    async with start_worker(redis_url, reg, block_ms=2000, concurrency=1) as worker:
        real_take = worker.consumer._take_call

        async def take_then_sigterm(args: list[object], wake_from: list[str] | None = None) -> object:
            if stopped.is_set() and wake_from is not None:
                blocking_reads_after_stop.append(wake_from)
            taken = await real_take(args, wake_from)  # type: ignore[arg-type]
            if wake_from is None and not stopped.is_set():
                worker.stop()  # SIGTERM while the (non-blocking) take is in flight
                stopped.set()
            return taken

        worker.consumer._take_call = take_then_sigterm  # type: ignore[assignment,method-assign]
        # One free slot: the blocked read's take starts the job and fills the slot, so the next
        # take, once the job is done, reads without blocking (and finds nothing).
        await client.submit("p", "add", {"a": 1, "b": 2})
        await until(stopped.is_set, 10, "the stop to arrive during a take")
        await asyncio.sleep(0.5)
    assert blocking_reads_after_stop == [], "the worker blocked for new jobs after it was told to stop"


async def test_a_stop_that_cancels_the_idle_read_after_its_take_ran_hands_the_job_back_uncounted(
    redis_url: str, r: aioredis.Redis, client: AsyncClient
) -> None:
    """An idle worker's take waits in Redis behind its blocking read, so a stop (which cancels
    that read) can land after Redis ran the take: the job is then Running for this worker, its
    attempt counted, and the worker never heard of it. The drain hands it back, uncounted."""
    reg = Registry()
    runs: list[int] = []

    @reg.handler("add")
    async def add(inp: Numbers) -> Sum:
        runs.append(inp.a)
        return Sum(total=inp.a + inp.b)

    async with start_worker(redis_url, reg) as worker:
        real_take = worker.consumer._take_call
        waiting: list[bool] = []
        taken_unheard: list[object] = []

        async def take_then_stop(args: list[object], wake_from: list[str] | None = None) -> object:
            if wake_from is not None:
                waiting.append(True)
            taken = await real_take(args, wake_from)  # type: ignore[arg-type]
            if wake_from is not None and taken and not taken_unheard:
                taken_unheard.extend(taken)
                worker.stop()  # SIGTERM: the blocking read is cancelled ...
                raise asyncio.CancelledError  # ... after Redis ran the take behind it
            return taken

        worker.consumer._take_call = take_then_stop  # type: ignore[assignment,method-assign]
        # The read in flight is the unpatched one: a first job ends it, and the next waits patched.
        first = await client.submit("p", "add", {"a": 1, "b": 2})
        await client.wait(first, 10)
        await until(lambda: bool(waiting), 10, "the worker to wait in its next blocking read")
        job_id = await client.submit("p", "add", {"a": 3, "b": 4})
        await until(lambda: bool(taken_unheard), 10, "the take behind the blocking read")
    rec = await record(r, job_id)
    assert (rec.state, rec.attempts, runs) == (JobState.QUEUED, 0, [1])
    assert await r.xlen(PoolKeys("default", "p").stream("normal")) == 1, "the job is back on its stream"
    assert await r.xpending(PoolKeys("default", "p").stream("normal"), "workers") == {
        "pending": 0, "min": None, "max": None, "consumers": []}
