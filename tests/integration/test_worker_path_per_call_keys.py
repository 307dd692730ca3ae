"""What ``take.lua`` and ``settle.lua`` now derive once per call must still come out per job.

``take.lua`` reads a stream entry's fields in place when they have the layout every writer uses
(v, m, j, u, h) and decodes any other layout as before; ``settle.lua`` builds the jobs index's
keys once per pool and state (and per handler), notes each set's trim once per call and keeps the
statistics key of the call's time. These tests take and settle on a real Redis with the scripts'
own calls and check that an entry of another layout still runs, and that a batch finishing jobs
of two handlers, settled in two calls at two different minutes, lands every job under its own
handler in the index and every count in its own minute.
"""

from __future__ import annotations

import time

import pytest
import redis.asyncio as aioredis
from kubeworkers import attempts, leases, scripts, wire
from kubeworkers.client import AsyncClient
from kubeworkers.protocol import JobEvent, JobMessage, JobState, PoolKeys

from tests.support.workers import record

#: These tests read the events stream, which the worker path writes only for a Job object's jobs
#: (docs/protocol.md, *Events*): their SDK clients submit as the operator enqueues those.
pytestmark = pytest.mark.usefixtures("submits_as_job_objects")

KEYS = PoolKeys("default", "p")


async def _take(r: aioredis.Redis, consumer: str = "w") -> list[wire.Taken]:
    args = wire.take_args(
        mode="read", group="workers", consumer=consumer, count=100, now=repr(time.time()), prefix=KEYS.prefix,
        events=KEYS.events, result_ttl=60,
        default_max_attempts=3, handler_max_attempts="{}", dead_letter_maxlen=100,
    )
    return wire.parse_take(await scripts.call(r, "take", KEYS.streams, args))


def _succeeded(t: wire.Taken, worker: str) -> wire.FinishWrite:
    job = attempts.Delivery(
        index=t.stream, entry=t.entry, stream=KEYS.streams[t.stream - 1], job_id=t.job_id, uid=t.uid,
        namespace="default", pool="p", handler=t.handler, record=KEYS.record(t.job_id),
        msg=JobMessage.model_validate_json(t.message), attempt=t.attempt, max_attempts=t.max_attempts,
    )
    return attempts.finish_write(job, JobState.SUCCEEDED, worker, 0.002, out_json='{"ok": true}')


async def _settle(r: aioredis.Redis, writes: list[wire.Write], now: float, worker: str = "w") -> list[object]:
    args = wire.settle_args(group="workers", now=repr(now), prefix=KEYS.prefix, events=KEYS.events,
                            pointer_prefix="", result_ttl=3600, worker=worker, dead_letter_maxlen=100,
                            writes=writes)
    return list(await scripts.call(r, "settle", KEYS.streams, args))


async def test_an_entry_whose_fields_are_in_another_order_is_taken_and_run_like_any_other(
    r: aioredis.Redis, client: AsyncClient
) -> None:
    await leases.ensure_groups(r, KEYS)
    job_id = await client.submit("p", "h", {"x": 1})
    stream = KEYS.stream("normal")
    [(old_id, fields)] = await r.xrange(stream)
    # The same job as a producer with another field order (and a field of its own) writes it.
    await r.xdel(stream, old_id)
    new_id = await r.xadd(stream, {"h": fields[b"h"], "extra": "1", "u": fields[b"u"], "j": fields[b"j"],
                                   "m": fields[b"m"], "v": fields[b"v"]})
    await r.hset(KEYS.record(job_id), "entry", new_id)
    [taken] = await _take(r)
    assert (taken.verdict, taken.job_id, taken.handler, taken.attempt) == (wire.Verdict.RUN, job_id, "h", 1)
    assert JobMessage.model_validate_json(taken.message).input == {"x": 1}
    assert (await record(r, job_id, "p")).state is JobState.RUNNING
    # And one in the writers' layout next to it is read in place, with the same result.
    second = await client.submit("p", "h", {"x": 2})
    [taken2] = await _take(r)
    uid = (await record(r, second, "p")).uid
    assert (taken2.verdict, taken2.job_id, taken2.uid, taken2.handler) == (wire.Verdict.RUN, second, uid, "h")
    assert JobMessage.model_validate_json(taken2.message).input == {"x": 2}
    running = [JobEvent.from_fields(f) for _, f in await r.xrange(KEYS.events)]
    assert [(e.job_id, e.state, e.attempt, e.worker) for e in running] == [
        (job_id, JobState.RUNNING, 1, "w"), (second, JobState.RUNNING, 1, "w")]


async def test_batches_of_two_handlers_at_two_minutes_land_each_job_under_its_handler_and_minute(
    r: aioredis.Redis, client: AsyncClient
) -> None:
    await leases.ensure_groups(r, KEYS)
    a = [await client.submit("p", "a", {"i": i}) for i in range(6)]
    b = [await client.submit("p", "b", {"i": i}) for i in range(4)]
    taken = await _take(r)
    assert sorted(t.job_id for t in taken) == sorted(a + b)
    by_id = {t.job_id: t for t in taken}
    minute = 60 * (int(time.time()) // 60)
    first, second = minute + 1.5, minute + 61.5  # two calls, one minute apart
    batch1 = [by_id[j] for j in (a[:3] + b[:2])]
    batch2 = [by_id[j] for j in (b[2:] + a[3:])]
    assert await _settle(r, [_succeeded(t, "w") for t in batch1], first) == [1] * 5
    assert await _settle(r, [_succeeded(t, "w") for t in batch2], second) == [1] * 5

    idx = KEYS.prefix + "idx:"
    assert sorted(x.decode() for x in await r.zrange(idx + "Succeeded:h:a", 0, -1)) == sorted(a)
    assert sorted(x.decode() for x in await r.zrange(idx + "Succeeded:h:b", 0, -1)) == sorted(b)
    assert sorted(x.decode() for x in await r.zrange(idx + "Succeeded", 0, -1)) == sorted(a + b)
    for key in ("live", "live:h:a", "live:h:b"):
        assert await r.zcard(idx + key) == 0, key
    # Each finish indexed at its own call's time.
    assert {j: s for j, s in await r.zrange(idx + "Succeeded", 0, -1, withscores=True)} == {
        **{j.encode(): first for j in a[:3] + b[:2]}, **{j.encode(): second for j in b[2:] + a[3:]}}
    assert 0 < await r.ttl(idx + "Succeeded:h:a") <= 3600

    async def minute_of(at: float) -> dict[str, str]:
        raw = await r.hgetall(f"{KEYS.prefix}stats:m:{int(at // 60)}")
        return {k.decode(): v.decode() for k, v in raw.items() if k.endswith(b"|succeeded")}

    assert await minute_of(first) == {"a|succeeded": "3", "b|succeeded": "2"}
    assert await minute_of(second) == {"a|succeeded": "3", "b|succeeded": "2"}
    for j in a + b:
        rec = await record(r, j, "p")
        assert (rec.state, rec.output) == (JobState.SUCCEEDED, {"ok": True}), j
    events = [JobEvent.from_fields(f) for _, f in await r.xrange(KEYS.events)]
    done = [(e.job_id, e.output) for e in events if e.state is JobState.SUCCEEDED]
    assert sorted(done, key=lambda d: d[0]) == sorted(((j, {"ok": True}) for j in a + b), key=lambda d: d[0])
    assert await r.xlen(KEYS.stream("normal")) == 0
