"""Redis high availability with Sentinel (issue 14 item 2): a real master, a replica and three
``redis-sentinel`` processes; a failover mid-run, planned (``SENTINEL FAILOVER``: the old master
is demoted and answers ``READONLY``) and by crash (SIGKILL of the master: the new master's
script cache is empty, so every script answers ``NOSCRIPT`` once).

Workers and the SDK are given the ``redis+sentinel://`` URL and nothing else: they must find the
new master on their own. Every job a durable submit acknowledged must finish.

What asynchronous replication loses (docs/reliability.md) decides what "each job ran once, or
as a recorded retry" takes: a take the old master acknowledged but did not replicate is lost
with it, so the job is taken again under the same attempt number and runs twice. Workers with
``durable_replicas=1`` start a job only once a replica has its attempt, so then every run is a
recorded attempt, whatever the failover; without it, a second run under the same attempt is
allowed only for jobs whose first run began while the failover was under way.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from kubeworkers import AsyncClient, Durability, JobContext, NotReplicatedError, Registry
from kubeworkers.protocol import WORKER_GROUP, JobState, PoolKeys
from pydantic import BaseModel

from hack.polling import WaitTimeout
from tests.support.sentinel import SentinelSet
from tests.support.workers import LEASE, start_worker, until

BATCH = 10


class Item(BaseModel):
    n: int


async def stuck_jobs(sentinels: SentinelSet, client: AsyncClient, job_ids: list[str]) -> str:
    """What a failure needs to be explained: the unfinished jobs' records, the pool's pending
    entries and stream lengths on the master the Sentinels name, every node's role and key count,
    and the end of every node's and Sentinel's log."""
    unfinished = []
    for j in job_ids:
        rec = await client.get(j, pool="p")
        if rec is None or rec.state is not JobState.SUCCEEDED:
            unfinished.append(f"{j}: " + ("no record" if rec is None else
                              f"{rec.state.value} attempts={rec.attempts} worker={rec.worker} entry={rec.entry}"
                              f" message={rec.message!r}"))
    lines = [f"{len(unfinished)} of {len(job_ids)} unfinished", *unfinished[:20]]
    keys = PoolKeys("default", "p")
    with sentinels.node_client(sentinels.master()) as c:
        for stream in keys.streams:
            if c.exists(stream):
                pending = c.xpending_range(stream, WORKER_GROUP, "-", "+", 50)
                held = [(p["message_id"], p["consumer"], p["time_since_delivered"]) for p in pending]
                lines.append(f"{stream}: xlen={c.xlen(stream)} pending={held}")
        lines.append(f"delayed={c.zcard(keys.delayed)}")
    for node in sentinels.nodes:
        with sentinels.node_client(node) as c:
            lines.append(f"node {node.port}: {c.info('replication')['role']}, {c.dbsize()} keys")
        lines.extend(f"  redis {node.port}| {x}" for x in _tail(node.dir / "redis.log", 8))
    for s in sentinels.sentinels:
        lines.extend(f"  sentinel {s.port}| {x}" for x in _tail(s.dir / "sentinel.log", 12))
    return "\n".join(lines)


def _tail(path: Path, n: int) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-n:]
    except OSError as exc:
        return [f"(unreadable: {exc})"]


@pytest.fixture
def sentinels() -> Iterator[SentinelSet]:
    with SentinelSet() as s:
        yield s


@pytest.mark.parametrize("durable_workers", [True, False], ids=["durable-workers", "plain-workers"])
@pytest.mark.parametrize("fault", ["sentinel-failover", "sigkill-master"])
async def test_workers_and_sdk_follow_a_failover_mid_run_and_every_durably_acknowledged_job_finishes_once(
    sentinels: SentinelSet, fault: str, durable_workers: bool,
) -> None:
    reg = Registry()
    runs: collections.Counter[str] = collections.Counter()
    first_run: dict[str, float] = {}
    after_failover: set[str] = set()
    failed_over = asyncio.Event()

    @reg.handler("item", timeout=30)
    async def item(inp: Item, ctx: JobContext) -> None:
        runs[ctx.job_id] += 1
        first_run.setdefault(ctx.job_id, time.monotonic())
        if failed_over.is_set():
            after_failover.add(ctx.job_id)
        await asyncio.sleep(0.02)

    acknowledged: list[str] = []
    refused_for_replication = 0
    stop_submitting = asyncio.Event()
    durable = Durability(replicas=1, timeout_s=1.0)

    async with AsyncClient(sentinels.url, registry=reg, durable=durable) as client:

        async def submitter() -> None:
            nonlocal refused_for_replication
            batch_no = 0
            while not stop_submitting.is_set():
                ids = [f"b{batch_no}-{i}" for i in range(BATCH)]
                inputs = [{"n": batch_no * BATCH + i} for i in range(BATCH)]
                while True:  # what a careful caller does: the same ids again until acknowledged
                    try:
                        await client.submit_many("p", "item", inputs, job_ids=ids)
                        break
                    except NotReplicatedError:
                        refused_for_replication += 1
                    except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError, OSError):
                        pass
                    await asyncio.sleep(0.05)
                acknowledged.extend(ids)
                batch_no += 1
                await asyncio.sleep(0.02)

        replicas = 1 if durable_workers else 0
        async with start_worker(sentinels.url, reg, worker_name="w1", durable_replicas=replicas), \
                start_worker(sentinels.url, reg, worker_name="w2", durable_replicas=replicas):
            sending = asyncio.create_task(submitter())
            try:
                await until(lambda: len(runs) >= 100, 60, "100 jobs to run before the failover")
                old_port = sentinels.master_port()
                window_start = time.monotonic()
                if fault == "sentinel-failover":
                    new_port = await asyncio.to_thread(sentinels.failover)
                else:
                    new_port = await asyncio.to_thread(sentinels.kill_master)
                assert new_port != old_port
                window_end = time.monotonic()
                failed_over.set()
                submitted_before = len(acknowledged)
                await until(lambda: len(acknowledged) >= submitted_before + 100, 60,
                            "100 more durable submits acknowledged after the failover")
            finally:
                stop_submitting.set()
                with contextlib.suppress(asyncio.CancelledError):
                    await sending

            async def all_succeeded() -> bool:
                try:
                    records = [await client.get(j, pool="p") for j in acknowledged]
                except (redis.ConnectionError, OSError):
                    return False
                return all(r is not None and r.state is JobState.SUCCEEDED for r in records)

            try:
                await until(all_succeeded, 90, "every acknowledged job to succeed on the new master", every=0.5)
            except WaitTimeout as exc:
                raise AssertionError(f"{exc}\n{await stuck_jobs(sentinels, client, acknowledged)}") from exc
            records = {j: await client.get(j, pool="p") for j in acknowledged}

    # Nothing acknowledged was lost, and every run was a recorded attempt.
    assert len(set(acknowledged)) == len(acknowledged)
    rerun = {j for j, r in records.items() if r is not None and runs[j] > r.attempts}
    unexplained = {j: (runs[j], records[j].attempts) for j in rerun  # type: ignore[union-attr]
                   if durable_workers or not window_start <= first_run[j] <= window_end}
    assert unexplained == {}, f"jobs run more often than their records count attempts: {unexplained}"
    assert all(runs[j] >= 1 for j in acknowledged)
    # The workers followed: jobs ran on the new master.
    assert after_failover, "no job ran after the failover: the workers did not follow the new master"
    print(f"{fault}, {'durable' if durable_workers else 'plain'} workers: {len(acknowledged)} jobs, "
          f"{len(rerun)} run again under the same attempt within the failover window, "
          f"{sum(1 for j in acknowledged if runs[j] > 1)} run more than once in all, "
          f"{refused_for_replication} durable submit(s) refused for want of a replica and repeated")



async def test_a_live_worker_keeps_its_job_through_a_planned_failover_while_the_old_master_still_takes_writes(
    sentinels: SentinelSet,
) -> None:
    """A planned failover promotes the replica at once, but the Sentinels demote the old master
    only when they next look at it (about 10 s later): until then it is a master that takes
    writes, and loses them. A worker that kept renewing its leases there would look dead on the
    new master, and a worker already there (here one started after the promotion, so all its
    connections reach the new master) would hand its long job out again one lease later, though
    it still runs. A worker must follow the master the Sentinels name, not the one its
    connections happen to reach."""
    reg = Registry()
    runs: collections.Counter[str] = collections.Counter()
    release = asyncio.Event()

    @reg.handler("hold", timeout=120)
    async def hold(inp: Item, ctx: JobContext) -> None:
        runs[ctx.worker] += 1
        await release.wait()

    async def succeeded() -> bool:
        rec = await client.get(job_id, pool="p")
        return rec is not None and rec.state is JobState.SUCCEEDED

    async with AsyncClient(sentinels.url, registry=reg) as client, \
            start_worker(sentinels.url, reg, worker_name="first"):
        job_id = await client.submit("p", "hold", {"n": 1})
        await until(lambda: runs["first"] == 1, 20, "the job to start on the first worker")
        old = sentinels.master()
        with sentinels.node_client(old) as c:  # the replica has the start: the failover keeps it
            assert c.wait(1, 5000) == 1
        await asyncio.to_thread(sentinels.begin_failover)
        with sentinels.node_client(old) as c:
            assert c.info("replication")["role"] == "master", "the old master was demoted at once"
        async with start_worker(sentinels.url, reg, worker_name="second"):
            # Several leases pass while the old master still takes writes; then it is demoted.
            await asyncio.to_thread(sentinels.wait_replicas_linked)
            await asyncio.sleep(2 * LEASE)
            release.set()
            await until(succeeded, 30, "the job to succeed", every=0.2)
        rec = await client.get(job_id, pool="p")

    assert dict(runs) == {"first": 1}, f"the job ran again while its worker still ran it: {dict(runs)}"
    assert rec is not None and rec.attempts == 1
