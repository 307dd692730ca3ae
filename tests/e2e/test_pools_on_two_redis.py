"""Two WorkerPools on two different Redis servers, on the real control plane: the operator enqueues
each pool's Job CRs on the Redis the pool's Secret names, syncs both pools' statuses and scales both
pools from zero on their own Redis's backlog.

The operator's own Redis (``--redis-url``, the ``kubeworkers-redis`` Secret) carries pool
``alpha``; pool ``beta`` names a Secret of its own (``spec.redis``) holding the URL, with a
password, of a second ``redis-server``. The worker pods run as local processes (the kubelet
stand-in), each with the URL its pod's ``secretKeyRef`` resolves to.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kubeworkers.protocol import PoolKeys

from tests.e2e.operator_fixtures import OperatorProcess, pool_manifest, wait_for
from tests.e2e.test_job_lifecycle import job_yaml, wait_phase
from tests.support.cluster import Cluster
from tests.support.pod_runner import PodRunner
from tests.support.redis_fixtures import private_redis
from tests.support.redis_server import RedisServer

PASSWORD = "beta-only-s3cret"


@pytest.fixture
def beta_redis() -> Iterator[RedisServer]:
    yield from private_redis(password=PASSWORD)


def replicas(cluster: Cluster, namespace: str, pool: str) -> int | None:
    proc = cluster.kubectl("get", "deployment", f"{pool}-workers", "-n", namespace, "-o", "json", check=False)
    if proc.returncode != 0:
        return None
    return int(json.loads(proc.stdout)["spec"].get("replicas") or 0)


def run_a_job_on_each_of_two_pools(
    cluster: Cluster, namespace: str, other: str, other_url: str, text: str,
) -> dict[str, dict[str, Any]]:
    """Pool ``alpha`` on the operator's own Redis and pool ``other`` on ``other_url`` (through a
    Secret ``<other>-redis``), both waited at zero replicas; then a word_count Job CR on each
    (``count-a``, ``count-<first letter of other>``), waited to an end. Their statuses by name."""
    cluster.kubectl("create", "secret", "generic", f"{other}-redis", "-n", namespace,
                    f"--from-literal=url={other_url}")
    cluster.apply(pool_manifest("alpha"), namespace)
    cluster.apply(pool_manifest(other, redis={"secretName": f"{other}-redis"}), namespace)
    for pool in ("alpha", other):
        wait_for(lambda p=pool: replicas(cluster, namespace, p) == 0, timeout=60,  # type: ignore[misc]
                 what=f"pool {pool}'s Deployment, at zero replicas")
    jobs = {"count-a": ("alpha", "a b a"), f"count-{other[0]}": (other, text)}
    for name, (pool, words) in jobs.items():
        cluster.apply(job_yaml(name, "word_count", {"text": words}, pool=pool), namespace)
    return {name: wait_phase(cluster, namespace, name, {"Succeeded", "Failed"}, timeout=120)["status"]
            for name in jobs}


def test_job_crs_on_two_pools_on_two_redis_servers_succeed_and_both_pools_scale_from_zero(  # noqa: PLR0917
    cluster: Cluster, namespace: str, redis_url: str, operator: OperatorProcess, demo_pool: PodRunner,
    beta_redis: RedisServer,
) -> None:
    beta_url = f"redis://:{PASSWORD}@127.0.0.1:{beta_redis.port}/0"
    done = run_a_job_on_each_of_two_pools(cluster, namespace, "beta", beta_url, "b b b c")
    assert done["count-a"]["phase"] == "Succeeded", done["count-a"]
    assert done["count-b"]["phase"] == "Succeeded", done["count-b"]
    assert done["count-a"]["output"]["counts"] == {"a": 2, "b": 1}
    assert done["count-b"]["output"]["counts"] == {"b": 3, "c": 1}
    # Each pool scaled up from zero and its own pods ran its Job.
    assert done["count-a"]["worker"].startswith("alpha-workers-")
    assert done["count-b"]["worker"].startswith("beta-workers-")

    # Each Job ran on its own pool's Redis, and nothing of beta's is on the operator's own.
    own = redis.Redis.from_url(redis_url)
    beta = redis.Redis.from_url(beta_url)
    try:
        assert own.exists(PoolKeys(namespace, "alpha").record(f"{namespace}/count-a"))
        assert beta.exists(PoolKeys(namespace, "beta").record(f"{namespace}/count-b"))
        assert not own.exists(PoolKeys(namespace, "beta").record(f"{namespace}/count-b"))
        assert not own.keys(f"kw:{{{namespace}/beta}}:*")
    finally:
        own.close()
        beta.close()

    # The password of beta's Redis is in its Secret only: not in the Job's status, the pool, Events or logs.
    seen = "".join(cluster.kubectl("get", kind, "-n", namespace, "-o", "json").stdout
                   for kind in ("jobs.workers.io", "workerpools.workers.io", "events", "deployments"))
    assert PASSWORD not in seen
    logs = "".join(path.read_text(errors="replace") for path in operator.log_dir.glob("operator-*.log"))
    assert PASSWORD not in logs
