"""Fan-out and joins on the real control plane: a Job CR whose handler spawns children."""

from __future__ import annotations

import json

from kubeworkers import connection
from kubeworkers.client import Client

from tests.e2e.operator_fixtures import OperatorProcess, get_job, pool_manifest, wait_for
from tests.e2e.test_job_lifecycle import EXAMPLES, job_yaml, wait_phase
from tests.support.cluster import Cluster
from tests.support.pod_runner import PodRunner


def test_parent_job_with_200_children_on_a_pool_of_concurrency_2_finishes(
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner
) -> None:
    cluster.apply(pool_manifest(concurrency=2, maxReplicas=1), namespace)
    cluster.apply(job_yaml("fan", "fan_out", {"n": 200}), namespace)
    status = wait_phase(cluster, namespace, "fan", {"Succeeded", "Failed", "Cancelled"}, timeout=180)["status"]
    assert status["phase"] == "Succeeded", status
    assert status["output"] == {"succeeded": 200, "failed": 0, "sum": sum(i * i for i in range(200))}
    children = wait_for(lambda: (get_job(cluster, namespace, "fan") or {}).get("status", {}).get("children"),
                        timeout=30, what="status.children")
    assert children == {"total": 200, "active": 0, "succeeded": 200, "failed": 0, "cancelled": 0}
    # No object per child: the namespace holds the one Job.
    names = [j["metadata"]["name"] for j in json.loads(
        cluster.kubectl("get", "jobs.workers.io", "-n", namespace, "-o", "json").stdout)["items"]]
    assert names == ["fan"]


def test_cancelling_a_parent_job_cancels_its_running_children(
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner, redis_url: str
) -> None:
    cluster.apply(pool_manifest(concurrency=2, maxReplicas=1), namespace)
    cluster.apply(job_yaml("long-fan", "fan_out", {"n": 4, "child": "slow", "seconds": 120}), namespace)
    wait_phase(cluster, namespace, "long-fan", {"Waiting"}, timeout=90)
    parent_id = f"{namespace}/long-fan"
    with Client(connection=connection.connect(redis_url), namespace=namespace) as client:
        wait_for(lambda: sum(k.state.value == "Running" for k in client.children(parent_id)) >= 2,
                 timeout=60, what="two running children")
        cluster.kubectl("patch", "jobs.workers.io", "long-fan", "-n", namespace, "--type", "merge",
                        "-p", '{"spec": {"cancel": true}}')
        status = wait_phase(cluster, namespace, "long-fan", {"Cancelled", "Succeeded", "Failed"})["status"]
        assert status["phase"] == "Cancelled", status
        kids = wait_for(lambda: (ks := client.children(parent_id)) and all(k.state.finished for k in ks) and ks,
                        timeout=60, what="children finished")
    assert [k.state.value for k in kids] == ["Cancelled"] * 4


def test_orchestrator_example_completes_with_counts_and_shows_the_failed_child(
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "orchestrator.yaml"))
    status = wait_phase(cluster, namespace, "ingest-ada", {"Succeeded", "Failed", "Cancelled"}, timeout=120)["status"]
    assert status["phase"] == "Succeeded", status
    assert status["output"] == {"persona": "ada", "works": 4, "quotes": 2,
                                "failed": [f"{namespace}/ingest-ada:persona_profiled:quote-0"]}
    children = wait_for(lambda: (c := (get_job(cluster, namespace, "ingest-ada") or {}).get("status", {})
                                 .get("children")) and c.get("active") == 0 and c,
                        timeout=30, what="status.children settled")
    assert children == {"total": 8, "active": 0, "succeeded": 7, "failed": 1, "cancelled": 0}
