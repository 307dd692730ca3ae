"""kubeworkers on a real three-master Redis Cluster (``redis-server --cluster-enabled yes``, one
replica per master, created by ``redis-cli --cluster create`` on loopback: tests/support/redis_cluster.py).

Workers, the SDK, the CLI's DLQ replay and the autoscaler's signal reads, all through one
``redis+cluster://`` URL, on pools whose slots are on different masters (checked, not assumed);
a slot migration and a master failover while jobs run lose nothing that was acknowledged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack

import pytest
import redis
import redis.asyncio as aioredis
from kubeworkers import cli, connection, dlq, queue
from kubeworkers.client import AsyncClient, Client
from kubeworkers.context import JobContext
from kubeworkers.protocol import LEGACY_EVENTS_STREAM, JobEvent, JobState, PoolKeys
from kubeworkers.registry import Registry
from kubeworkers_operator.autoscaling.signals import RedisSignalReader
from pydantic import BaseModel

from hack.polling import wait_for_async
from tests.support.redis_cluster import RedisClusterNodes
from tests.support.redis_fixtures import private_cluster
from tests.support.workers import start_worker

#: These tests read the events stream, which the worker path writes only for a Job object's jobs
#: (docs/protocol.md, *Events*): their SDK clients submit as the operator enqueues those.
pytestmark = pytest.mark.usefixtures("submits_as_job_objects")

NS = "default"


class Empty(BaseModel):
    pass


class Pool(BaseModel):
    pool: str


class Steps(BaseModel):
    n: int = 3


def registry() -> Registry:
    reg = Registry()

    @reg.handler("ok")
    async def ok(inp: Empty) -> dict[str, str]:
        return {"done": "yes"}

    @reg.handler("flaky", max_attempts=3, retry_backoff=0.05)
    async def flaky(inp: Empty, ctx: JobContext) -> dict[str, int]:
        if ctx.attempt == 1:
            raise ValueError("first attempt fails")
        return {"attempt": ctx.attempt}

    @reg.handler("fails_first_run", max_attempts=1)
    async def fails_first_run(inp: Empty, ctx: JobContext) -> dict[str, int]:
        if ctx.run == 0:
            raise RuntimeError("run 0 fails")
        return {"run": ctx.run}

    @reg.handler("steps")
    async def steps(inp: Steps, ctx: JobContext) -> dict[str, int]:
        for i in range(inp.n):
            await ctx.progress((i + 1) / inp.n, f"step {i + 1}")
        return {"steps": inp.n}

    @reg.handler("slow")
    async def slow(inp: Empty) -> dict[str, str]:
        await asyncio.sleep(30)
        return {"done": "late"}

    @reg.handler("spawns_elsewhere", max_attempts=1)
    async def spawns_elsewhere(inp: Pool, ctx: JobContext) -> None:
        await ctx.spawn("ok", pool=inp.pool)

    @reg.handler("spawns_here")
    async def spawns_here(inp: Empty, ctx: JobContext) -> dict[str, str]:
        await ctx.spawn("ok")
        return {"spawned": "yes"}

    @reg.handler("short")
    async def short(inp: Empty) -> dict[str, str]:
        await asyncio.sleep(0.02)
        return {"done": "yes"}

    return reg


@pytest.fixture(scope="module")
def nodes() -> Iterator[RedisClusterNodes]:
    yield from private_cluster(masters=3, replicas=1)


@pytest.fixture
async def ar(nodes: RedisClusterNodes) -> AsyncIterator[aioredis.Redis]:
    r = connection.connect_async(nodes.url)
    yield r
    await connection.aclose(r)


def pools_on_each_master(nodes: RedisClusterNodes, prefix: str) -> list[str]:
    """One pool name per master: the first names whose slot (their hash tag's) is on a master not yet used."""
    found: dict[int, str] = {}
    for i in range(200):
        name = f"{prefix}{i}"
        port = nodes.master_of(nodes.key_slot(PoolKeys(NS, name).events))
        found.setdefault(port, name)
        if len(found) == len(nodes.slots()):
            return list(found.values())
    raise AssertionError("no pool name for some master")


def slots_of(nodes: RedisClusterNodes, pool: str) -> set[int]:
    keys = PoolKeys(NS, pool)
    return {nodes.key_slot(k) for k in [*keys.streams, keys.events, keys.record("x"), keys.dead_letter,
                                         keys.delayed, keys.workers, keys.stats]}


async def test_every_key_of_a_pool_is_in_its_one_slot_and_pools_spread_over_the_masters(
    nodes: RedisClusterNodes,
) -> None:
    pools = pools_on_each_master(nodes, "spread")
    assert len(pools) == 3
    slots = [slots_of(nodes, p) for p in pools]
    assert all(len(s) == 1 for s in slots), slots
    assert len({nodes.master_of(next(iter(s))) for s in slots}) == 3


async def test_jobs_run_retry_and_report_progress_on_pools_on_three_masters(
    nodes: RedisClusterNodes, ar: aioredis.Redis,
) -> None:
    pools = pools_on_each_master(nodes, "run")
    reg = registry()
    async with AsyncClient(connection=ar, registry=reg) as client, AsyncExitStack() as workers:
        for pool in pools:
            await workers.enter_async_context(start_worker(nodes.url, reg, pool=pool))
        ok = [await client.submit(p, "ok") for p in pools]
        many = await client.submit_many(pools[1], "ok", [{}] * 50)
        flaky = await client.submit(pools[2], "flaky")
        steps = await client.submit(pools[0], "steps", {"n": 3})
        for job_id in [*ok, *many]:
            assert (await client.wait(job_id, 60)).state is JobState.SUCCEEDED
        retried = await client.wait(flaky, 60)
        assert (retried.state, retried.attempts, retried.output) == (JobState.SUCCEEDED, 2, {"attempt": 2})
        progressed = await client.wait(steps, 60)
        assert progressed.state is JobState.SUCCEEDED and progressed.progress == 1.0
    # The events of each pool are on its own stream (so on its own master); none on the old global stream.
    for pool, job_id in zip(pools, ok, strict=True):
        mine = [JobEvent.from_fields(f) for _, f in await ar.xrange(PoolKeys(NS, pool).events)]
        assert JobState.SUCCEEDED in [e.state for e in mine if e.job_id == job_id], mine
    assert await ar.exists(LEGACY_EVENTS_STREAM) == 0


async def test_cancel_dead_letter_and_replay_on_a_cluster(nodes: RedisClusterNodes, ar: aioredis.Redis) -> None:
    pools = pools_on_each_master(nodes, "dlq")
    pool = pools[1]
    reg = registry()
    sync = connection.connect(nodes.url)
    try:
        async with AsyncClient(connection=ar, registry=reg) as client:
            queued = await client.submit(pool, "ok", delay=3600)
            assert await client.cancel(queued)
            assert (await client.get(queued)).state is JobState.CANCELLED  # type: ignore[union-attr]
            async with start_worker(nodes.url, reg, pool=pool):
                running = await client.submit(pool, "slow")
                await wait_for_async(lambda: _state(client, running, JobState.RUNNING), timeout=30,
                                     what="the slow job to run")
                assert await client.cancel(running)  # the cancel flag and the pub/sub message reach its worker
                assert (await client.wait(running, 30)).state is JobState.CANCELLED
                failed = await client.submit(pool, "fails_first_run")
                assert (await client.wait(failed, 30)).state is JobState.FAILED
                keys = PoolKeys(NS, pool)
                assert [d.message.job_id for d in dlq.list_dead(sync, keys)] == [failed]  # type: ignore[union-attr]
                replayed = await asyncio.to_thread(dlq.replay, sync, keys)
                assert replayed.job_ids == [failed]
                again = await client.wait(failed, 30)
                assert (again.state, again.run, again.output) == (JobState.SUCCEEDED, 1, {"run": 1})
                assert dlq.list_dead(sync, keys) == []
            # Found without naming the pool: through the job id -> pools hint, in the namespace's slot.
            assert await queue.find_pools(ar, NS, failed) == [pool]
            assert Client(connection=sync).get(failed).state is JobState.SUCCEEDED  # type: ignore[union-attr]
    finally:
        connection.close(sync)


async def test_a_durable_submit_is_refused_on_a_cluster_and_cli_lookups_need_no_pool(
    nodes: RedisClusterNodes, capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(ValueError, match="not available on a Redis Cluster"):
        Client(nodes.url, durable=queue.Durability(replicas=1))
    pool = pools_on_each_master(nodes, "cli")[0]
    with Client(nodes.url) as client:
        job_id = client.submit(pool, "ok", delay=3600)
    assert cli.main(["get", job_id, "--redis-url", nodes.url]) == 0
    assert pool in capsys.readouterr().out


async def _state(client: AsyncClient, job_id: str, state: JobState) -> bool:
    rec = await client.get(job_id)
    return rec is not None and rec.state is state


async def test_the_autoscalers_signal_reads_see_each_pools_backlog_on_its_master(
    nodes: RedisClusterNodes, ar: aioredis.Redis,
) -> None:
    pools = pools_on_each_master(nodes, "load")
    reg = registry()
    async with AsyncClient(connection=ar, registry=reg) as client:
        for n, pool in enumerate(pools, start=1):
            await client.submit_many(pool, "ok", [{}] * (5 * n))
        for n, pool in enumerate(pools, start=1):
            snapshot = await RedisSignalReader(ar, PoolKeys(NS, pool)).read()
            assert sum(s.length for s in snapshot.streams) == 5 * n
        reader = RedisSignalReader(ar, PoolKeys(NS, pools[0]))
        before = await reader.read()
        woke = asyncio.create_task(reader.wait_for_activity(before, 10))
        await asyncio.sleep(0.3)
        await client.submit(pools[0], "ok")
        assert await asyncio.wait_for(woke, 10)


async def _submit_while(client: AsyncClient, pool: str, stop: asyncio.Event, acked: list[str],
                        refused: list[BaseException]) -> None:
    """Submit one job after another until ``stop``; each acknowledged id is kept, each refusal too."""
    while not stop.is_set():
        try:
            acked.append(await client.submit(pool, "short"))
        except (redis.RedisError, OSError) as exc:
            refused.append(exc)
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.005)


async def _run_through(nodes: RedisClusterNodes, ar: aioredis.Redis, pool: str, disturb: object) -> tuple[
        list[str], list[BaseException]]:
    reg = registry()
    acked: list[str] = []
    refused: list[BaseException] = []
    stop = asyncio.Event()
    async with AsyncClient(connection=ar, registry=reg) as client, start_worker(nodes.url, reg, pool=pool):
        submitter = asyncio.create_task(_submit_while(client, pool, stop, acked, refused))
        await wait_for_async(lambda: len(acked) >= 30, timeout=30, what="jobs submitted before the disturbance")
        await asyncio.to_thread(disturb)  # type: ignore[arg-type]
        mark = len(acked)
        await wait_for_async(lambda: len(acked) >= mark + 30, timeout=60, what="jobs submitted after it")
        stop.set()
        await submitter
        for job_id in acked:
            rec = await client.wait(job_id, 90)
            assert rec.state is JobState.SUCCEEDED, (job_id, rec.state, rec.error)
    return acked, refused


async def test_a_slot_migration_mid_run_loses_no_acknowledged_job(
    nodes: RedisClusterNodes, ar: aioredis.Redis,
) -> None:
    pool = pools_on_each_master(nodes, "move")[0]
    (slot,) = slots_of(nodes, pool)
    source = nodes.master_of(slot)
    target = next(s.port for s in nodes.slots() if s.port != source)
    moved: list[int] = []

    def migrate() -> None:
        moved.append(nodes.migrate_slot(slot, target))

    acked, _ = await _run_through(nodes, ar, pool, migrate)
    assert nodes.master_of(slot) == target and moved[0] > 0
    assert len(acked) >= 60


async def test_a_master_failover_mid_run_loses_no_acknowledged_job(
    nodes: RedisClusterNodes, ar: aioredis.Redis,
) -> None:
    pool = pools_on_each_master(nodes, "fail")[2]
    (slot,) = slots_of(nodes, pool)
    old = nodes.master_of(slot)
    promoted: list[int] = []

    def failover() -> None:
        promoted.append(nodes.failover(old))

    started = time.monotonic()
    acked, _ = await _run_through(nodes, ar, pool, failover)
    assert nodes.master_of(slot) == promoted[0] != old
    assert len(acked) >= 60 and time.monotonic() - started < 240


async def test_a_cluster_with_a_password_takes_it_from_the_url_and_never_shows_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = "cluster-s3cret"
    locked = RedisClusterNodes(masters=3, password=secret)
    try:
        locked.start()
        reg = registry()
        r = connection.connect_async(locked.url)
        try:
            async with AsyncClient(connection=r, registry=reg) as client, \
                    start_worker(locked.url, reg, pool="locked"):
                job_id = await client.submit("locked", "ok")
                assert (await client.wait(job_id, 30)).state is JobState.SUCCEEDED
        finally:
            await connection.aclose(r)
        wrong = locked.url.replace(secret, "wrong")
        assert cli.main(["get", "nothing", "--redis-url", wrong]) != 0
        out, err = capsys.readouterr()
        assert "AuthenticationError" in err  # said as what it is, in one line
        assert secret not in out + err and "wrong" not in out + err
    finally:
        locked.cleanup()


async def test_children_run_on_their_parents_pool_and_one_on_another_slot_is_refused_whole(
    nodes: RedisClusterNodes, ar: aioredis.Redis,
) -> None:
    here, elsewhere = pools_on_each_master(nodes, "fan")[:2]
    reg = registry()
    async with AsyncClient(connection=ar, registry=reg) as client, start_worker(nodes.url, reg, pool=here):
        parent = await client.submit(here, "spawns_here")
        assert (await client.wait(parent, 30)).state is JobState.SUCCEEDED
        [child] = await client.children(parent, pool=here)
        assert (child.pool, (await client.wait(child.job_id, 30, pool=here)).state) == (here, JobState.SUCCEEDED)

        refused = await client.submit(here, "spawns_elsewhere", {"pool": elsewhere})
        failed = await client.wait(refused, 30)
        assert failed.state is JobState.FAILED and failed.error is not None, failed
        assert "non local key" in failed.error.message or "same slot" in failed.error.message, failed.error
        keys = [k async for k in ar.scan_iter(match=f"kw:{{{NS}/{elsewhere}}}:*")]
        assert keys == [], keys  # nothing of the child was written on the other pool


async def test_a_killed_master_is_replaced_by_its_replica_and_the_workers_and_clients_go_on() -> None:
    # SIGKILL, not a planned failover: the replica takes over after the node timeout, and what the
    # master acknowledged but had not replicated may be lost (asynchronous replication, as with
    # Sentinel: docs/reliability.md). What must hold: no process needs a restart, and every job
    # submitted once the replica leads runs. Its own cluster: the killed node stays dead.
    own = RedisClusterNodes(masters=3, replicas=1)
    try:
        own.start()
        pool = pools_on_each_master(own, "kill")[0]
        (slot,) = slots_of(own, pool)
        old = own.master_of(slot)
        reg = registry()
        r = connection.connect_async(own.url)
        try:
            async with AsyncClient(connection=r, registry=reg) as client, start_worker(own.url, reg, pool=pool):
                before = [await client.submit(pool, "short") for _ in range(20)]
                for job_id in before:
                    assert (await client.wait(job_id, 30)).state is JobState.SUCCEEDED
                promoted = await asyncio.to_thread(own.failover, old, kill=True)
                assert own.master_of(slot) == promoted != old
                after = []
                for _ in range(30):
                    after.append(await client.submit(pool, "short"))
                for job_id in after:
                    assert (await client.wait(job_id, 60)).state is JobState.SUCCEEDED
                # Finished before the kill and replicated by then (each wait read it back): still there.
                for job_id in before:
                    assert await client.get(job_id) is not None, job_id
        finally:
            await connection.aclose(r)
    finally:
        own.cleanup()
