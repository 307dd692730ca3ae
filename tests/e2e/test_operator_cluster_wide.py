"""The operator's default mode, cluster-wide (no ``--namespace``), as the chart and ``make demo`` run it.

One operator serves every namespace of its own control plane (see tests/e2e/conftest.py for
why it gets one), and a cluster-wide operator on one control plane never reaches another:
that is what lets ``make demo`` and ``make test`` run side by side.
"""

from __future__ import annotations

import json
from typing import Any

import redis
from kubeworkers.protocol import OPERATOR_GROUP, PoolKeys

from hack.polling import WaitTimeout, wait_for
from tests.e2e.operator_fixtures import REPO, OperatorProcess, get_job, pool_manifest
from tests.support.cluster import Cluster

EXAMPLES = REPO / "examples"
FINISHED = {"Succeeded", "Failed", "Cancelled"}


def job_yaml(name: str, handler: str, input: dict[str, object]) -> str:
    return json.dumps({"apiVersion": "workers.io/v1alpha1", "kind": "Job", "metadata": {"name": name},
                       "spec": {"pool": "demo", "handler": handler, "input": input}})


def phase_in(cluster: Cluster, namespace: str, name: str, phases: set[str]) -> dict[str, Any] | None:
    job = get_job(cluster, namespace, name)
    return job if job is not None and job.get("status", {}).get("phase") in phases else None


def reasons(cluster: Cluster, namespace: str, name: str) -> set[str]:
    out = cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                          f"involvedObject.name={name},involvedObject.kind=Job", "-o", "json").stdout
    return {e["reason"] for e in json.loads(out)["items"]}


def test_one_cluster_wide_operator_runs_the_jobs_of_every_namespace_through_their_whole_life(
    cluster_wide_cluster: Cluster, cluster_wide_operator: OperatorProcess, cluster_wide_namespaces: list[str]
) -> None:
    cluster = cluster_wide_cluster
    first, second = cluster_wide_namespaces
    for ns in (first, second):
        cluster.kubectl("apply", "-n", ns, "-f", str(EXAMPLES / "workerpool.yaml"), "-f", str(EXAMPLES / "job.yaml"))
    cluster.apply(job_yaml("doomed", "fail", {"message": "disk on fire"}), first)
    cluster.apply(job_yaml("long", "slow", {"seconds": 120, "steps": 120}), second)

    for ns in (first, second):
        status = wait_for(lambda ns=ns: phase_in(cluster, ns, "word-count", FINISHED), timeout=120,
                          what=f"word-count in {ns} to finish")["status"]
        assert (status["phase"], status["attempts"], status["output"]["words"]) == ("Succeeded", 1, 11), status
        assert status["worker"].startswith("demo-workers-")
        try:
            # Running and Succeeded of a short job are often one write, so no "Started" is promised.
            wait_for(lambda ns=ns: {"Queued", "Succeeded"} <= reasons(cluster, ns, "word-count"),
                     timeout=30, what=f"the Events of word-count in {ns}")
        except WaitTimeout as exc:
            raise AssertionError(f"{exc}: {events_of(cluster, ns)}") from None

    failed = wait_for(lambda: phase_in(cluster, first, "doomed", FINISHED), timeout=120,
                      what="doomed to finish")["status"]
    assert (failed["phase"], failed["error"]["type"], failed["attempts"]) == ("Failed", "RuntimeError", 2)

    wait_for(lambda: phase_in(cluster, second, "long", {"Running"}), timeout=90, what="long to run")
    wait_for(lambda: "Started" in reasons(cluster, second, "long"), timeout=30, what="the Started Event of long")
    cluster.kubectl("patch", "jobs.workers.io", "long", "-n", second, "--type=merge",
                    "-p", '{"spec": {"cancel": true}}')
    cancelled = wait_for(lambda: phase_in(cluster, second, "long", FINISHED), timeout=60, what="long to stop")
    assert cancelled["status"]["phase"] == "Cancelled"

    assert cluster_wide_operator.metric_sum("kubeworkers_operator_jobs_enqueued_total") >= 4
    # It read the workers' events through the cluster-wide consumer group, not a namespaced one.
    r = redis.Redis.from_url(cluster_wide_operator.redis_url, decode_responses=True)
    groups = r.xinfo_groups(PoolKeys(second, "demo").events)
    assert [g["name"] for g in groups] == [OPERATOR_GROUP]
    assert cluster_wide_operator.healthy()


def test_a_cluster_wide_operator_on_another_control_plane_never_touches_the_test_clusters_namespaces(
    cluster: Cluster, crds: None, namespace: str, *,
    cluster_wide_cluster: Cluster, cluster_wide_operator: OperatorProcess, cluster_wide_namespaces: list[str],
) -> None:
    # This is make demo beside make test: the demo's operator is cluster-wide on its own control plane.
    assert cluster_wide_cluster.kubeconfig != cluster.kubeconfig
    assert server_of(cluster_wide_cluster) != server_of(cluster)

    cluster.apply(pool_manifest(), namespace)
    cluster.apply(job_yaml("untouched", "word_count", {"text": "nobody runs me"}), namespace)

    # The other operator is alive and acting: it runs a Job of its own to the end meanwhile.
    theirs = cluster_wide_namespaces[0]
    cluster_wide_cluster.apply(pool_manifest(), theirs)
    cluster_wide_cluster.apply(job_yaml("theirs", "word_count", {"text": "a b"}), theirs)
    wait_for(lambda: phase_in(cluster_wide_cluster, theirs, "theirs", {"Succeeded"}), timeout=120,
             what="the other cluster's Job to succeed")

    job = get_job(cluster, namespace, "untouched")
    assert job is not None and "status" not in job, job.get("status") if job else None
    assert cluster.kubectl("get", "deployments", "-n", namespace, "-o", "name").stdout == ""
    assert cluster.kubectl("get", "events", "-n", namespace, "-o", "name").stdout == ""
    unknown = cluster_wide_cluster.kubectl("get", "namespace", namespace, check=False)
    assert unknown.returncode != 0 and "NotFound" in unknown.stderr


def events_of(cluster: Cluster, namespace: str) -> list[str]:
    out = cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    return [f"{e['involvedObject']['kind']}/{e['involvedObject']['name']} {e['reason']}: {e['message']} "
            f"x{e.get('count', 1)}" for e in json.loads(out)["items"]]


def server_of(cluster: Cluster) -> str:
    return cluster.kubectl("config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}").stdout
