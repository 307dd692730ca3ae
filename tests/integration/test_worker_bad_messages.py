"""Bad messages: what enqueue refuses, what the SDK refuses, and what a worker does with what got through.

A producer that is not the SDK may write anything through ``enqueue.lua`` (or straight to the
stream). Messages a worker could never run are refused at enqueue with the reason; anything
unreadable that still reaches a worker fails its job with ``InvalidMessage``, once, instead of
being left Running.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import redis.asyncio as aioredis
from kubeworkers import Client, Registry, queue, scripts
from kubeworkers.client import AsyncClient
from kubeworkers.protocol import JobState, PoolKeys, job_pool_prefix
from pydantic import BaseModel

from tests.support.workers import events, start_worker

#: These tests read the events stream, which the worker path writes only for a Job object's jobs
#: (docs/protocol.md, *Events*): their SDK clients submit as the operator enqueues those.
pytestmark = pytest.mark.usefixtures("submits_as_job_objects")

KEYS = PoolKeys("default", "p")


class Item(BaseModel):
    n: int = 0


def message(job_id: str, **fields: Any) -> dict[str, Any]:
    return {"job_id": job_id, "uid": job_id, "namespace": "default", "pool": "p", "handler": "h",
            "input": {}, "enqueued_at": 1.0, **fields}


async def raw_enqueue(r: aioredis.Redis, *raws: bytes | str) -> list[Any]:
    return list(await scripts.call(r, "enqueue", [], ["1", KEYS.prefix, job_pool_prefix("default"), "p", *raws]))


BAD = {
    "not-json": "{this is not json",
    "not-an-object": json.dumps([1, 2]),
    "input-list": json.dumps(message("input-list", input=[1, 2])),
    "input-string": json.dumps(message("input-string", input="x")),
    "priority": json.dumps(message("priority", priority="urgent")),
    "timeout-text": json.dumps(message("timeout-text", timeout_seconds="abc")),
    "timeout-zero": json.dumps(message("timeout-zero", timeout_seconds=0)),
    "timeout-negative": json.dumps(message("timeout-negative", timeout_seconds=-1)),
    "attempts-zero": json.dumps(message("attempts-zero", max_attempts=0)),
    "attempts-negative": json.dumps(message("attempts-negative", max_attempts=-3)),
    "attempts-huge": json.dumps(message("attempts-huge", max_attempts=10**30)),
    "attempts-fraction": json.dumps(message("attempts-fraction", max_attempts=2.5)),
    "no-handler": json.dumps({k: v for k, v in message("no-handler").items() if k != "handler"}),
    "empty-id": json.dumps(message("")),
    "other-pool": json.dumps(message("other-pool", pool="q")),
    "enqueued-text": json.dumps(message("enqueued-text", enqueued_at="yesterday")),
}


async def test_enqueue_refuses_each_message_no_worker_could_run_and_still_enqueues_the_good_ones(
    r: aioredis.Redis,
) -> None:
    replies = await raw_enqueue(r, json.dumps(message("good")), *BAD.values(), json.dumps(message("good2")))
    # A good message's result is [1 (new), its position]: the second good one has the first ahead.
    assert replies[0] == [1, 0] and replies[-1] == [1, 1]
    for name, reply in zip(BAD, replies[1:-1], strict=True):
        assert isinstance(reply, bytes) and reply.startswith(b"invalid: "), (name, reply)
    assert await r.xlen(KEYS.stream("normal")) == 2
    assert not await r.exists(f"{KEYS.prefix}jobs:urgent")
    for name in BAD:
        assert not await r.exists(KEYS.record(name)), name


@pytest.mark.parametrize(("option", "value"), [
    ("max_attempts", 0), ("max_attempts", -3), ("max_attempts", 10**30),
    ("timeout", 0), ("timeout", -1), ("timeout", math.nan), ("timeout", math.inf),
])
def test_submit_refuses_attempts_and_timeouts_that_make_no_sense(redis_url: str, option: str, value: Any) -> None:
    with Client(redis_url, registry=Registry()) as client, pytest.raises(ValueError, match=option):
        client.submit("p", "h", {}, **{option: value})


async def test_a_message_a_worker_cannot_read_fails_its_job_once_with_the_reason(
    redis_url: str, r: aioredis.Redis,
) -> None:
    reg = Registry()

    @reg.handler("h", max_attempts=3)
    async def h(inp: Item) -> dict[str, int]:
        return {"n": inp.n}

    # Job objects' jobs (ids <ns>/<name>, uids of their own), so their events are written to check.
    BAD = ("default/bad-utf8", "default/input-list")
    # Bytes that are not UTF-8 inside the input pass the script (it does not decode strings).
    raw = json.dumps(message("default/bad-utf8", uid="u-1")).encode()
    raw = raw.replace(b'"input": {}', b'"input": {"s": "\xff\xfe"}')
    assert await raw_enqueue(r, raw) == [[1, 0]]
    # An older or foreign writer, straight to the stream: an input that is not an object.
    listed = json.dumps(message("default/input-list", uid="u-2", input=[1]))
    entry = await r.xadd(KEYS.stream("normal"), {"v": "1", "m": listed, "j": "default/input-list", "u": "u-2",
                                                 "h": "h"})
    await r.hset(KEYS.record("default/input-list"), mapping={
        "job_id": "default/input-list", "uid": "u-2", "namespace": "default", "pool": "p", "handler": "h",
        "state": "Queued", "attempts": "0", "entry": entry, "msg": listed,
    })
    async with AsyncClient(redis_url, registry=Registry()) as client, start_worker(redis_url, reg):
        good = await client.submit("p", "h", {"n": 3})
        done = {job_id: await client.wait(job_id, 30, pool="p") for job_id in (*BAD, good)}
    for job_id in BAD:
        rec = done[job_id]
        assert rec.state is JobState.FAILED, job_id
        assert rec.error is not None and rec.error.type == "InvalidMessage" and not rec.error.retryable, rec
        assert [e.state for e in await events(r, job_id) if e.state is not JobState.RUNNING] == [JobState.FAILED]
    assert (done[good].state, done[good].output) == (JobState.SUCCEEDED, {"n": 3})
    assert await r.xlen(KEYS.dead_letter) == 2


async def test_a_record_whose_message_cannot_be_read_is_still_returned_by_get(r: aioredis.Redis) -> None:
    await r.hset(KEYS.record("odd"), mapping={
        "job_id": "odd", "uid": "odd", "namespace": "default", "pool": "p", "handler": "h", "state": "Queued",
        "msg": b'{"job_id": "odd", "input": [1], "timeout_seconds": "soon"}', "attempts": "1",
    })
    record = await queue.get_record(r, "default", "p", "odd")
    assert record is not None and record.state is JobState.QUEUED and record.input == {}


async def test_a_refused_message_is_an_error_in_python_not_a_success(r: aioredis.Redis) -> None:
    from kubeworkers.protocol import JobMessage, Priority

    unchecked = JobMessage.model_construct(job_id="x", uid="x", namespace="default", pool="p", handler="h",
                                           input={}, priority=Priority.NORMAL, timeout_seconds=None, max_attempts=0,
                                           enqueued_at=1.0)
    with pytest.raises(queue.MessageRefusedError, match="x: invalid: max_attempts"):
        await queue.enqueue(r, unchecked)
    assert not await r.exists(KEYS.record("x"))
