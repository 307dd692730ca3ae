"""A WorkerPool on a real three-master Redis Cluster, on the real control plane: its Secret holds a
``redis+cluster://`` URL; the operator enqueues the pool's Job CRs on the cluster, scales the pool
from zero on its backlog there and syncs the statuses from the pool's events stream, beside a pool
on the operator's own single Redis.

The worker pods run as local processes (the kubelet stand-in), with the URL their pod's
``secretKeyRef`` resolves to.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubeworkers import connection
from kubeworkers.protocol import PoolKeys

from tests.e2e.operator_fixtures import OperatorProcess
from tests.e2e.test_pools_on_two_redis import run_a_job_on_each_of_two_pools
from tests.support.cluster import Cluster
from tests.support.pod_runner import PodRunner
from tests.support.redis_cluster import RedisClusterNodes
from tests.support.redis_fixtures import private_cluster


@pytest.fixture
def redis_cluster() -> Iterator[RedisClusterNodes]:
    yield from private_cluster(masters=3)


def test_job_crs_on_a_pool_on_a_redis_cluster_succeed_and_the_pool_scales_from_zero(  # noqa: PLR0917
    cluster: Cluster, namespace: str, redis_url: str, operator: OperatorProcess, demo_pool: PodRunner,
    redis_cluster: RedisClusterNodes,
) -> None:
    done = run_a_job_on_each_of_two_pools(cluster, namespace, "gamma", redis_cluster.url, "g g h")
    assert done["count-a"]["phase"] == "Succeeded", done["count-a"]
    assert done["count-g"]["phase"] == "Succeeded", done["count-g"]
    assert done["count-g"]["output"]["counts"] == {"g": 2, "h": 1}
    assert done["count-g"]["worker"].startswith("gamma-workers-")  # scaled from zero, its own pod ran it

    # The Job ran on the cluster, on the master of the pool's slot.
    r = connection.connect(redis_cluster.url)
    try:
        keys = PoolKeys(namespace, "gamma")
        assert r.hget(keys.record(f"{namespace}/count-g"), "state") == b"Succeeded"
        assert r.xlen(keys.events) >= 1
    finally:
        connection.close(r)
