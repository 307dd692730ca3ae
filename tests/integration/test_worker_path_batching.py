"""The worker path's scripts do per call what they used to do per job, and nobody can tell.

``settle.lua`` acknowledges and deletes a batch's entries with one ``XACK``/``XDEL`` per stream,
adds the per-minute statistics up and writes them once, and reads each record once; ``take.lua``
reads a job's cancellation from its record instead of the cancel flag's key. These tests pin what
those changes must keep: every entry of a batch is released exactly once, a write sent twice in
one batch is applied once, a hand-back of an entry finished in the same batch is refused, every
statistic is what one write at a time would have counted, and a job cancelled while it ran whose
worker then died is recorded Cancelled by the next take, never run again.
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis
from kubeworkers import leases, outbox, queue, scripts, wire
from kubeworkers.client import AsyncClient
from kubeworkers.protocol import DURATION_BUCKETS_S, JobEvent, JobState, PoolKeys

from tests.support.workers import record

KEYS = PoolKeys("default", "p")


def _take_args(consumer: str, count: int) -> list[wire.Arg]:
    return wire.take_args(
        mode="read", group="workers", consumer=consumer, count=count, now=repr(time.time()), prefix=KEYS.prefix,
        events=KEYS.events, result_ttl=60,
        default_max_attempts=3, handler_max_attempts="{}", dead_letter_maxlen=100,
    )


async def _take(r: aioredis.Redis, consumer: str, count: int = 100) -> list[wire.Taken]:
    return wire.parse_take(await scripts.call(r, "take", KEYS.streams, _take_args(consumer, count)))


def _event(t: wire.Taken, state: JobState) -> str:
    return JobEvent(job_id=t.job_id, uid=t.uid, namespace="default", pool="p", state=state,
                    attempt=t.attempt).model_dump_json()


def _finish(t: wire.Taken, state: JobState, duration: float, *, dead: bool = False) -> wire.FinishWrite:
    error = '{"type": "Boom", "message": "boom", "retryable": false}' if state is JobState.FAILED else ""
    return wire.FinishWrite(
        kind="finish", stream=t.stream, entry=t.entry, job_id=t.job_id, state=state.value,
        output='{"n": 1}' if state is JobState.SUCCEEDED else "", error=error, message="",
        duration=f"{duration:.6f}", ran=True, event=_event(t, state), attempt=t.attempt,
        dead_letter_reason="Boom: boom (not retryable)" if dead else "",
    )


def _retry(t: wire.Taken, duration: float) -> wire.RetryWrite:
    return wire.RetryWrite(
        kind="retry", stream=t.stream, entry=t.entry, job_id=t.job_id, due=f"{time.time() + 60:.6f}",
        error='{"type": "Boom", "message": "boom", "retryable": true}', message="retrying",
        event=_event(t, JobState.QUEUED), attempt=t.attempt, duration=f"{duration:.6f}",
    )


def _bucket(seconds: float) -> int:
    return next((i for i, bound in enumerate(DURATION_BUCKETS_S) if seconds <= bound), len(DURATION_BUCKETS_S))


async def test_one_settle_call_releases_every_entry_once_and_counts_what_one_write_at_a_time_would(
    r: aioredis.Redis, client: AsyncClient
) -> None:
    await leases.ensure_groups(r, KEYS)
    ids = [await client.submit("p", "h", {"i": i}, max_attempts=3) for i in range(40)]
    taken = await _take(r, "w")
    assert [t.verdict for t in taken] == [wire.Verdict.RUN] * 40
    durations = [0.001 * (i + 1) for i in range(40)]
    writes: list[wire.Write] = []
    for i, t in enumerate(taken[:25]):
        writes.append(_finish(t, JobState.SUCCEEDED, durations[i]))
    for i, t in enumerate(taken[25:30], start=25):
        writes.append(_finish(t, JobState.FAILED, durations[i], dead=True))
    for i, t in enumerate(taken[30:35], start=30):
        writes.append(_retry(t, durations[i]))
    # A write sent twice in one batch (its first reply lost, both queued) is applied once ...
    writes.append(_finish(taken[0], JobState.SUCCEEDED, durations[0]))
    # ... and a hand-back of an entry the batch already finished is refused: it is no longer held.
    writes.append(wire.requeue(taken[1].stream, taken[1].entry, taken[1].job_id, "handed back", uncount=True,
                               owner="w"))
    # The last five are handed back (the worker shuts down): fresh entries, attempts given back.
    writes += [wire.requeue(t.stream, t.entry, t.job_id, "handed back", uncount=True, owner="w") for t in taken[35:]]

    results = await outbox.settle(r, KEYS, "w", 60, writes, dead_letter_maxlen=100)

    assert results[:35] == [1] * 35
    assert results[35:37] == [0, 0]
    assert all(isinstance(x, bytes) and b"-" in x for x in results[37:])  # the fresh entries' ids
    # Every entry of the batch is acknowledged and deleted; only the five fresh hand-back entries wait.
    stream = KEYS.stream("normal")
    assert (await r.xpending(stream, "workers"))["pending"] == 0
    waiting = [e.decode() for e, _ in await r.xrange(stream)]
    assert sorted(waiting) == sorted(x.decode() for x in results[37:])
    states = [(await record(r, job_id)).state for job_id in ids]
    assert states == [JobState.SUCCEEDED] * 25 + [JobState.FAILED] * 5 + [JobState.QUEUED] * 10
    # Pool counters and the minute's statistics: what 35 writes applied one by one add up to.
    pool = {k.decode(): v.decode() for k, v in (await r.hgetall(KEYS.stats)).items()}
    assert (pool["completed"], pool["failed"], pool["retried"], pool["dead_lettered"]) == ("25", "5", "5", "5")
    [minute_key] = [k async for k in r.scan_iter(match=KEYS.prefix + "stats:m:*")]
    minute = {k.decode(): v.decode() for k, v in (await r.hgetall(minute_key)).items()}
    assert (minute["h|succeeded"], minute["h|failed"], minute["h|retried"]) == ("25", "5", "5")
    assert abs(float(minute["h|dsum"]) - sum(durations[:35])) < 1e-6
    buckets: dict[str, int] = {}
    for seconds in durations[:35]:
        field = f"h|b{_bucket(seconds)}"
        buckets[field] = buckets.get(field, 0) + 1
    assert {k: int(v) for k, v in minute.items() if "|b" in k} == buckets
    assert 0 < await r.ttl(minute_key) <= 25 * 3600
    assert await r.xlen(KEYS.dead_letter) == 5


async def test_a_job_cancelled_while_it_ran_whose_worker_died_is_cancelled_by_the_next_take(
    r: aioredis.Redis, client: AsyncClient
) -> None:
    await leases.ensure_groups(r, KEYS)
    job_id = await client.submit("p", "h", {})
    [running] = await _take(r, "w1")
    assert running.verdict is wire.Verdict.RUN
    assert await queue.cancel(r, "default", "p", job_id, result_ttl=60)
    assert (await record(r, job_id)).cancel_requested
    # w1 dies before it hears of the cancellation: the reaper hands its entry back, attempt counted.
    [fresh] = await leases.requeue(r, KEYS, [(running.stream, running.entry, job_id)], "w1", uncount_attempt=False,
                                   message="lost with w1")
    assert fresh
    assert (await record(r, job_id)).state is JobState.QUEUED

    [again] = await _take(r, "w2")

    assert again.verdict is wire.Verdict.CANCELLED
    rec = await record(r, job_id)
    assert (rec.state, rec.attempts) == (JobState.CANCELLED, 1)
    assert await r.xlen(KEYS.stream("normal")) == 0
    assert 0 < await r.ttl(KEYS.record(job_id)) <= 60


async def test_a_queued_job_cancelled_is_dropped_by_the_take_as_finished(
    r: aioredis.Redis, client: AsyncClient
) -> None:
    await leases.ensure_groups(r, KEYS)
    job_id = await client.submit("p", "h", {})
    assert await queue.cancel(r, "default", "p", job_id, result_ttl=60)

    [dropped] = await _take(r, "w")

    assert dropped.verdict is wire.Verdict.DONE
    assert (await record(r, job_id)).state is JobState.CANCELLED
    assert await r.xlen(KEYS.stream("normal")) == 0


async def test_entries_of_the_same_id_on_two_streams_are_both_released_by_one_settle_call(
    r: aioredis.Redis, client: AsyncClient
) -> None:
    """Stream ids are per stream: two levels can hold the same id (added in the same millisecond)."""
    await leases.ensure_groups(r, KEYS)
    job_id = await client.submit("p", "h", {})
    [taken] = await _take(r, "w")
    high = KEYS.stream("high")
    await r.xadd(high, {"v": "1", "m": "{}"}, id=taken.entry)  # a copy on another level, same id
    await r.xreadgroup("workers", "w", {high: ">"})
    copy = wire.Taken(stream=KEYS.streams.index(high) + 1, entry=taken.entry, job_id=job_id, uid=taken.uid,
                      handler="h", message=b"{}", verdict=wire.Verdict.RUN, attempt=1, max_attempts=3)

    results = await outbox.settle(r, KEYS, "w", 60, [_finish(taken, JobState.SUCCEEDED, 0.01),
                                                      _finish(copy, JobState.SUCCEEDED, 0.01)], dead_letter_maxlen=100)

    assert results == [1, 0]  # the copy is not the job's delivery: acknowledged, nothing written
    for stream in (KEYS.stream("normal"), high):
        assert (await r.xpending(stream, "workers"))["pending"] == 0, stream
        assert await r.xlen(stream) == 0, stream
