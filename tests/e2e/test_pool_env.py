"""``KUBEWORKERS_*`` in a WorkerPool's ``spec.env`` on the real control plane: a worker setting reaches
the workers, a variable the operator owns is refused by the apiserver with the reason."""

from __future__ import annotations

import redis
from kubeworkers.protocol import PoolKeys
from kubeworkers.resources import POOL_ENV_REFUSED

from tests.e2e.operator_fixtures import OperatorProcess, pool_manifest
from tests.e2e.test_job_lifecycle import job_yaml, wait_phase
from tests.support.cluster import Cluster
from tests.support.pod_runner import PodRunner


def test_a_variable_the_operator_owns_is_refused_at_admission_with_the_settable_ones_named(
    cluster: Cluster, namespace: str, crds: None
) -> None:
    proc = cluster.apply(pool_manifest(env=[{"name": "KUBEWORKERS_REDIS_URL", "value": "redis://elsewhere"}]),
                         namespace, check=False)
    assert proc.returncode != 0
    assert "spec.env[0].name" in proc.stderr
    assert POOL_ENV_REFUSED.split(" (")[0] in proc.stderr and "KUBEWORKERS_RESULT_TTL" in proc.stderr


def test_a_worker_setting_in_spec_env_is_honoured_by_the_pools_workers(
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner, redis_url: str
) -> None:
    cluster.apply(pool_manifest(env=[{"name": "KUBEWORKERS_RESULT_TTL", "value": "600"}]), namespace)
    cluster.apply(job_yaml("short-lived", "word_count", {"text": "a"}), namespace)
    wait_phase(cluster, namespace, "short-lived", {"Succeeded"})
    ttl = redis.Redis.from_url(redis_url).ttl(PoolKeys(namespace, "demo").record(f"{namespace}/short-lived"))
    assert 0 < ttl <= 600  # the default keeps records 7 days
