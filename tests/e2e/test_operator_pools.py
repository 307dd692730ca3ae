"""WorkerPool -> Deployment on the real control plane: built, owned, kept in sync, never fighting the scaler."""

from __future__ import annotations

import json
from typing import Any

from tests.e2e.operator_fixtures import LOG_ROOT, OperatorProcess, pool_manifest, wait_for
from tests.e2e.test_job_lifecycle import assert_events, job_yaml, wait_phase
from tests.support.cluster import Cluster
from tests.support.pod_runner import PodRunner


def deployment(cluster: Cluster, namespace: str, name: str = "demo-workers") -> dict[str, Any] | None:
    proc = cluster.kubectl("get", "deployment", name, "-n", namespace, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def test_pool_gets_an_owned_locked_down_deployment_and_its_status_shows_replicas(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.apply(pool_manifest(autoscaling={"enabled": False}, replicas=2), namespace)
    d = wait_for(lambda: deployment(cluster, namespace), what="the worker Deployment")
    pool = json.loads(cluster.kubectl("get", "wp", "demo", "-n", namespace, "-o", "json").stdout)
    (owner,) = d["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "WorkerPool", "demo", pool["metadata"]["uid"], True)
    assert d["spec"]["replicas"] == 2
    container = d["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["kubeworkers", "worker"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "KUBEWORKERS_REDIS_URL",
            "valueFrom": {"secretKeyRef": {"name": "kubeworkers-redis", "key": "url"}}} in container["env"]

    def pool_status() -> dict[str, Any] | None:
        status = json.loads(cluster.kubectl("get", "wp", "demo", "-n", namespace, "-o", "json").stdout).get(
            "status", {})
        return status if status.get("replicas") == 2 and status.get("readyReplicas") == 2 else None

    wait_for(pool_status, timeout=90, what="pool status replicas=2 readyReplicas=2")


def test_deleting_the_pool_deletes_its_deployment(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.apply(pool_manifest(autoscaling={"enabled": False}, replicas=1), namespace)
    wait_for(lambda: deployment(cluster, namespace), what="the worker Deployment")
    cluster.kubectl("delete", "wp", "demo", "-n", namespace)
    wait_for(lambda: deployment(cluster, namespace) is None, timeout=60, what="garbage collection")


def test_pool_spec_change_updates_the_deployment_but_never_the_replicas_someone_else_scaled(
    cluster: Cluster, namespace: str, crds: None, redis_url: str, redis_secret: str
) -> None:
    # No autoscaler in this operator: the test plays the scaler with `kubectl scale`.
    op = OperatorProcess(cluster, redis_url, [namespace], LOG_ROOT / "pool-spec-change",
                         extra_args=["--no-autoscaling"]).start()
    try:
        cluster.apply(pool_manifest(concurrency=4), namespace)
        wait_for(lambda: deployment(cluster, namespace), what="the worker Deployment")
        cluster.kubectl("scale", "deployment", "demo-workers", "-n", namespace, "--replicas=3")
        cluster.apply(pool_manifest(concurrency=6, imports=["kubeworkers.examples", "json"]), namespace)

        def updated() -> dict[str, Any] | None:
            d = deployment(cluster, namespace)
            args = d["spec"]["template"]["spec"]["containers"][0]["args"] if d else []
            return d if "6" in args and "kubeworkers.examples,json" in args else None

        d = wait_for(updated, timeout=60, what="the Deployment to follow the pool spec")
        assert d["spec"]["replicas"] == 3
    finally:
        op.stop()


def test_an_autoscaled_pool_shows_on_the_operators_metrics_until_it_is_deleted(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    series = f'kubeworkers_autoscaler_desired_replicas{{namespace="{namespace}",pool="demo"}}'
    cluster.apply(pool_manifest(), namespace)
    wait_for(lambda: series in operator.metrics(), what="the pool's autoscaler series on /metrics")
    cluster.kubectl("delete", "wp", "demo", "-n", namespace)
    wait_for(lambda: not any(key.startswith("kubeworkers_autoscaler_") and f'namespace="{namespace}"' in key
                             for key in operator.metrics()),
             timeout=60, what="the deleted pool's series gone from /metrics")


def pool_of(cluster: Cluster, namespace: str, name: str = "demo") -> dict[str, Any]:
    return json.loads(cluster.kubectl("get", "wp", name, "-n", namespace, "-o", "json").stdout)  # type: ignore[no-any-return]


def test_pool_status_has_the_selector_the_scale_subresource_points_at_its_generation_and_availability(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.apply(pool_manifest(autoscaling={"enabled": False}, replicas=1), namespace)
    d = wait_for(lambda: deployment(cluster, namespace), what="the worker Deployment")

    def written() -> dict[str, Any] | None:
        status = pool_of(cluster, namespace).get("status", {})
        available = [c for c in status.get("conditions", []) if c["type"] == "Available"]
        return status if status.get("selector") and available and available[0]["status"] == "True" else None

    status = wait_for(written, timeout=90, what="selector, observedGeneration and Available on the pool")
    assert status["observedGeneration"] == pool_of(cluster, namespace)["metadata"]["generation"]
    # What `kubectl scale` and a HorizontalPodAutoscaler read: the scale subresource.
    scale = json.loads(cluster.kubectl(
        "get", "--raw", f"/apis/workers.io/v1alpha1/namespaces/{namespace}/workerpools/demo/scale").stdout)
    assert scale["status"]["selector"] == status["selector"]
    wanted = d["spec"]["selector"]["matchLabels"]
    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-l", scale["status"]["selector"],
                                      "-o", "json").stdout)["items"]
    assert pods and all(wanted.items() <= p["metadata"]["labels"].items() for p in pods)


def test_jobs_of_a_deleted_pool_wait_as_pending_and_run_when_the_pool_is_recreated(
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner
) -> None:
    # A 1 s drain (grace 6 s - 5 s margin): the job outlasts it, so its worker hands it back.
    cluster.apply(pool_manifest(terminationGracePeriodSeconds=6), namespace)
    cluster.apply(job_yaml("long", "slow", {"seconds": 20, "steps": 20}), namespace)
    wait_phase(cluster, namespace, "long", {"Running"})
    cluster.kubectl("delete", "wp", "demo", "-n", namespace)
    cluster.apply(job_yaml("later", "word_count", {"text": "x y"}), namespace)  # no pool: PoolNotFound
    job = wait_phase(cluster, namespace, "long", {"Pending", "Succeeded", "Failed"})
    assert job["status"]["phase"] == "Pending"
    (cond,) = [c for c in job["status"]["conditions"] if c["type"] == "Enqueued"]
    assert (cond["status"], cond["reason"]) == ("False", "PoolDeleted")
    assert job["status"]["attempts"] == 1 and "worker" not in job["status"]
    assert job["status"]["lastWorker"].startswith("demo-workers-")
    assert_events(cluster, namespace, "long", {"PoolDeleted"})
    wait_for(lambda: deployment(cluster, namespace) is None, timeout=60, what="garbage collection")
    cluster.apply(pool_manifest(), namespace)
    for name in ("long", "later"):
        status = wait_phase(cluster, namespace, name, {"Succeeded", "Failed"}, timeout=120)["status"]
        assert status["phase"] == "Succeeded", status
