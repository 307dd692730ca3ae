"""Redis unreachable: Jobs wait with a clear reason instead of crashing the operator, then run."""

from __future__ import annotations

from collections.abc import Callable

from tests.e2e.operator_fixtures import LOG_ROOT, OperatorProcess, get_job, pool_manifest, wait_for
from tests.support.cluster import Cluster
from tests.support.pod_runner import PodRunner
from tests.support.redis_server import RedisServer


def test_job_applied_while_redis_is_down_waits_as_pending_and_runs_once_redis_is_back(
    cluster: Cluster, namespace: str, crds: None, redis_factory: Callable[..., RedisServer]
) -> None:
    server = redis_factory(aof=True)
    cluster.kubectl("create", "secret", "generic", "kubeworkers-redis", "-n", namespace,
                    f"--from-literal=url={server.url}")
    op = OperatorProcess(cluster, server.url, [namespace], LOG_ROOT / "redis-outage").start()
    runner = PodRunner(cluster, namespace, "workers.io/pool", extra_env={"KUBEWORKERS_METRICS_PORT": "0"},
                       log_dir=LOG_ROOT / "redis-outage" / "pods")
    try:
        with runner:
            cluster.apply(pool_manifest(), namespace)
            server.stop()
            cluster.apply("""
apiVersion: workers.io/v1alpha1
kind: Job
metadata: {name: patient}
spec: {pool: demo, handler: word_count, input: {text: "still here"}}
""", namespace)

            def pending_for_redis() -> bool:
                job = get_job(cluster, namespace, "patient") or {}
                conds = {c["type"]: c for c in job.get("status", {}).get("conditions", [])}
                return conds.get("Enqueued", {}).get("reason") == "RedisUnavailable"

            wait_for(pending_for_redis, timeout=60, what="Pending with reason RedisUnavailable")
            assert op.healthy()

            server.start()

            def succeeded() -> dict | None:
                job = get_job(cluster, namespace, "patient") or {}
                return job if job.get("status", {}).get("phase") == "Succeeded" else None

            job = wait_for(succeeded, timeout=120, what="the job to run once Redis is back")
            assert job["status"]["output"]["words"] == 2
            assert {c["type"]: c["status"] for c in job["status"]["conditions"]}["Enqueued"] == "True"
    finally:
        op.stop()
