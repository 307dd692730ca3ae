"""Redis outages and failing helpers: live workers keep their jobs, liveness stays about the process,
and every helper loop survives whatever Redis answers.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from kubeworkers import JobContext, Registry, leases
from kubeworkers.client import AsyncClient
from kubeworkers.protocol import CANCEL_CHANNEL, JobState
from kubeworkers.worker import Worker
from pydantic import BaseModel
from redis.exceptions import ResponseError

from tests.support.redis_server import RedisServer, free_port
from tests.support.workers import LEASE, events, fast_settings, start_worker, until

#: These tests read the events stream, which the worker path writes only for a Job object's jobs
#: (docs/protocol.md, *Events*): their SDK clients submit as the operator enqueues those.
pytestmark = pytest.mark.usefixtures("submits_as_job_objects")


class Item(BaseModel):
    n: int = 0


async def http_get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize("outage", [1.5, 4.0], ids=["1.5x-lease", "4x-lease"])
async def test_live_workers_keep_their_jobs_through_a_redis_outage_longer_than_the_lease(
    redis_factory: Callable[..., RedisServer], outage: float,
) -> None:
    # 4x the lease: long enough for a backed-off heartbeat to sleep past the lease after Redis
    # is back (it once did: 5 s, and a fresh worker's reaper took the live jobs). The fresh
    # worker "c" joins right after the return, so its reaper is not backed off itself.
    server = redis_factory(aof=True)
    reg = Registry()
    finish = asyncio.Event()
    ran: Counter[str] = Counter()

    @reg.handler("long", max_attempts=5)
    async def long(inp: Item, ctx: JobContext) -> dict[str, int]:
        ran[ctx.job_id] += 1
        await finish.wait()
        return {"n": inp.n}

    # The slowest heartbeat the lease allows, so a reaper acting at once would beat it.
    slow = {"heartbeat_seconds": LEASE / 2 - 0.05, "concurrency": 4}
    async with AsyncClient(server.url, registry=Registry()) as client:
        ids = await client.submit_many("p", "long", [{"n": i} for i in range(6)])
        async with start_worker(server.url, reg, worker_name="a", **slow), \
                start_worker(server.url, reg, worker_name="b", **slow):
            await until(lambda: sum(ran.values()) == 6, 30, "every job to start")
            server.stop(kill=True)
            await asyncio.sleep(LEASE * outage)  # the outage: longer than the lease
            await asyncio.to_thread(server.start)
            async with start_worker(server.url, reg, worker_name="c", concurrency=4):
                # Long enough after Redis is back for any reaper to have reclaimed expired leases.
                await asyncio.sleep(LEASE * 2.5)
                finish.set()
                records = [await client.wait(job_id, 60) for job_id in ids]
        r = aioredis.Redis.from_url(server.url)
        evs = await events(r)
        await r.aclose()
    assert [(rec.state, rec.attempts) for rec in records] == [(JobState.SUCCEEDED, 1)] * 6
    assert ran == dict.fromkeys(ids, 1), "a live worker's job was run again"
    assert Counter(e.job_id for e in evs if e.state.finished) == dict.fromkeys(ids, 1)


async def test_healthz_is_served_while_the_worker_waits_for_redis_and_does_not_depend_on_it() -> None:
    worker = Worker(fast_settings(f"redis://127.0.0.1:{free_port()}/0", metrics_port=0), Registry())
    task = asyncio.create_task(worker.run())
    try:
        await until(lambda: worker.metrics_port is not None or task.done(), 30, "the probe server to listen")
        assert worker.metrics_port is not None
        assert (await http_get(worker.metrics_port, "/healthz"))[0] == 200
        assert (await http_get(worker.metrics_port, "/readyz"))[0] == 503
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)


async def test_a_redis_outage_longer_than_the_lease_does_not_fail_liveness(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    async with start_worker(server.url, Registry(), metrics_port=0) as worker:
        assert worker.metrics_port is not None
        server.stop(kill=True)
        await asyncio.sleep(LEASE * 2)
        status, body = await http_get(worker.metrics_port, "/healthz")
        assert status == 200, body
        assert (await http_get(worker.metrics_port, "/readyz"))[0] == 503
        await asyncio.to_thread(server.start)


async def test_the_promoter_survives_redis_refusing_its_writes_and_retries_still_run(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = leases.promote
    refusals: list[int] = []

    async def refusing(r: aioredis.Redis, *args: Any, **kwargs: Any) -> int:
        if len(refusals) < 3:
            refusals.append(1)
            raise ResponseError("READONLY You can't write against a read only replica.")
        return await real(r, *args, **kwargs)

    monkeypatch.setattr(leases, "promote", refusing)
    reg = Registry()

    @reg.handler("flaky", max_attempts=2, retry_backoff=0.05)
    async def flaky(inp: Item, ctx: JobContext) -> dict[str, int]:
        if ctx.attempt == 1:
            raise ConnectionError("try again")
        return {"attempt": ctx.attempt}

    async with AsyncClient(redis_url, registry=Registry()) as client, start_worker(redis_url, reg) as worker:
        done = await client.wait(await client.submit("p", "flaky", {}), 30)
        assert worker.healthy()
    assert len(refusals) == 3
    assert (done.state, done.attempts) == (JobState.SUCCEEDED, 2)


async def test_the_cancel_listener_survives_redis_refusing_it_and_cancellations_still_arrive(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    refusals: list[int] = []
    real = aioredis.client.PubSub.subscribe

    async def refusing(self: Any, *args: Any, **kwargs: Any) -> Any:
        if len(refusals) < 2:
            refusals.append(1)
            raise ResponseError("NOPERM this user has no permissions to access one of the channels")
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(aioredis.client.PubSub, "subscribe", refusing)
    reg = Registry()
    started = threading.Event()

    @reg.handler("forever")
    async def forever(inp: Item) -> None:
        started.set()
        await asyncio.sleep(3600)

    # A long heartbeat: only the pub/sub message, not the heartbeat's flag check, can cancel it in time.
    r = aioredis.Redis.from_url(redis_url)

    async def listening() -> bool:
        [(_, subscribers)] = await r.pubsub_numsub(CANCEL_CHANNEL)
        return bool(subscribers)

    async with AsyncClient(redis_url, registry=Registry()) as client, \
            start_worker(redis_url, reg, lease_seconds=120, heartbeat_seconds=60):
        await until(lambda: len(refusals) == 2, 30, "the listener to be refused twice")
        await until(listening, 30, "the listener to subscribe after all")
        job_id = await client.submit("p", "forever", {})
        await until(started.is_set, 30, "the job to start")
        assert await client.cancel(job_id)
        done = await client.wait(job_id, 30)
    await r.aclose()
    assert done.state is JobState.CANCELLED
