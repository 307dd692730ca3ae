"""The operator on a real three-master Redis Cluster: its own ``--redis-url`` a ``redis+cluster://``
URL, and a pool on a single Redis of its own beside it (its Secret names a plain server).

Job CRs of pools whose slots are on different masters are enqueued there, their statuses synced
from each pool's own events stream (no command spans two slots: the consumer reads them in a
pipelined round), their autoscalers read their backlog there, and the trim chore measures every
pool's stream. The Kubernetes side is the in-memory apiserver of
tests/integration/test_pools_on_their_own_redis.py, the workers are real and in-process.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AsyncExitStack

import pytest
from kubeworkers import connection
from kubeworkers.client import AsyncClient
from kubeworkers.protocol import PoolKeys, record_key_pattern
from kubeworkers.registry import Registry
from kubeworkers_operator.flows.orphans import OrphanSweep
from kubeworkers_operator.flows.status_sync import trim_and_measure
from kubeworkers_operator.model.index import ClusterIndex

from hack.polling import wait_for_async
from tests.integration.test_pools_on_their_own_redis import (
    NS,
    MemoryKube,
    operator,
    phase,
    pool,
    registry,
    secret,
    submit_cr,
)
from tests.support.redis_cluster import RedisClusterNodes
from tests.support.redis_fixtures import private_cluster
from tests.support.workers import start_worker


@pytest.fixture(scope="module")
def nodes() -> Iterator[RedisClusterNodes]:
    yield from private_cluster(masters=3)


def spread_pools(nodes: RedisClusterNodes) -> list[str]:
    """Pool names of namespace NS, one per master."""
    found: dict[int, str] = {}
    for i in range(200):
        name = f"pool-{i}"
        found.setdefault(nodes.master_of(nodes.key_slot(PoolKeys(NS, name).events)), name)
        if len(found) == 3:
            return list(found.values())
    raise AssertionError("no pool name for some master")


async def test_job_crs_on_pools_spread_over_the_cluster_are_enqueued_synced_and_scaled(
    nodes: RedisClusterNodes, redis_url: str,
) -> None:
    kube = MemoryKube()
    secret(kube, "single", redis_url)  # one pool on a plain redis-server beside the cluster
    names = spread_pools(nodes)
    async with operator(kube, nodes.url) as op, AsyncExitStack() as workers:
        assert connection.is_cluster_client(op.rt.redis)
        for name in names:
            pool(kube, op.rt, name)  # no spec.redis: on the operator's own Redis, the cluster
        pool(kube, op.rt, "single", redis_secret="single")
        for name in [*names, "single"]:
            await op.controllers.ensure_scaler(op.rt, op.rt.index.pools[(NS, name)])
        for name in [*names, "single"]:
            await submit_cr(kube, op.rt, f"job-{name}", name)
            assert phase(kube, f"job-{name}") == "Queued"

        # Each autoscaler reads its pool's backlog (on the pool's master) and scales it from zero.
        for name in [*names, "single"]:
            scaler = op.controllers.scalers[(NS, name)].scaler
            await wait_for_async(lambda s=scaler: s.last_load is not None and s.last_load.backlog == 1,  # type: ignore[misc]
                                 timeout=20, what=f"the {name} autoscaler to see its job")
            await wait_for_async(lambda n=name: kube.replicas(n) >= 1, timeout=20,  # type: ignore[misc]
                                 what=f"pool {name} scaled up from zero")

        for name in names:
            await workers.enter_async_context(start_worker(nodes.url, registry(), name, namespace=NS))
        await workers.enter_async_context(start_worker(redis_url, registry(), "single", namespace=NS))
        for name in [*names, "single"]:
            job = f"job-{name}"
            await wait_for_async(lambda j=job: phase(kube, j) == "Succeeded", timeout=30,  # type: ignore[misc]
                                 what=f"{job} Succeeded")
            assert kube.job(job)["status"]["output"] == {"echo": job}

        # Every event was acked on its pool's stream, and the trim chore keeps only the last one read
        # (MINID of the group's last-delivered id), on each pool's own stream.
        await trim_and_measure(op.rt)
        for name in names:
            stream = PoolKeys(NS, name).events
            summary = await op.rt.redis.xpending(stream, op.rt.settings.events_group)
            assert summary["pending"] == 0, (name, summary)
            assert await op.rt.redis.xlen(stream) == 1, name
        assert op.rt.metrics.events_stream_length._value.get() == 1  # type: ignore[attr-defined]



async def test_the_orphan_sweep_scans_the_records_of_every_master(nodes: RedisClusterNodes) -> None:
    r = connection.connect_async(nodes.url)
    names = spread_pools(nodes)
    try:
        async with AsyncClient(connection=r, registry=Registry(), namespace="sweep") as client:
            for name in names:
                await client.submit_many(name, "h", [{}] * 7)
        sweep = OrphanSweep([record_key_pattern("sweep")], keys_per_turn=5, scan_count=3, period_seconds=0.0)
        scanned = 0
        for _ in range(100):  # a pass takes several turns: each master has its own SCAN cursor
            result = await sweep.turn(r, ClusterIndex())
            scanned += result.keys
            if result.pass_completed:
                break
        assert result.pass_completed and scanned == 3 * 7  # SCAN may repeat a key; not here: no rehash
        assert all(h.namespace == "sweep" for h in result.suspects)
    finally:
        await connection.aclose(r)
