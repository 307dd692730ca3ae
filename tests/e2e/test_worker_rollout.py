"""A WorkerPool spec change rolls its workers without interrupting long jobs.

The Deployment surges new pods before old ones go (``maxUnavailable: 0``); an old pod's worker,
told to stop, reads nothing more and finishes its running jobs within the pool's grace period.
Only a job that cannot finish within it is handed back, at once and uncounted: it is requeued
(a ``Requeued`` Event, not a failure) and runs again on a new pod. The ``slow`` handler allows a
single attempt, so a hand-back counted as an attempt would fail that job.
"""

from __future__ import annotations

import json
import time
from typing import Any

from tests.e2e.operator_fixtures import OperatorProcess, pool_manifest, wait_for
from tests.e2e.test_job_lifecycle import assert_events, events_for, job_yaml, wait_phase
from tests.support.cluster import Cluster
from tests.support.pod_runner import PodRunner

FITS = [f"fits-{i}" for i in range(5)]
FITS_SECONDS = 10.0
OUTLASTS_SECONDS = 45.0
GRACE = 25  # terminationGracePeriodSeconds: a worker drains for GRACE - 5 s = 20 s


def pool(concurrency: int) -> str:
    return pool_manifest(autoscaling={"enabled": False}, replicas=2, concurrency=concurrency,
                         terminationGracePeriodSeconds=GRACE)


def worker_pods(cluster: Cluster, namespace: str) -> set[str]:
    out = cluster.kubectl("get", "pods", "-n", namespace, "-l", "workers.io/pool=demo", "-o", "json").stdout
    return {p["metadata"]["name"] for p in json.loads(out)["items"] if not p["metadata"].get("deletionTimestamp")}


def test_a_pool_spec_change_finishes_running_jobs_on_the_old_pods_and_requeues_only_what_outlasts_the_grace(
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner
) -> None:
    cluster.apply(pool(concurrency=3), namespace)
    wait_for(lambda: len(worker_pods(cluster, namespace)) == 2, timeout=90, what="two worker pods")
    pdb = json.loads(cluster.kubectl("get", "pdb", "demo-workers", "-n", namespace, "-o", "json").stdout)
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["metadata"]["ownerReferences"][0]["kind"] == "WorkerPool"

    for name in FITS:
        cluster.apply(job_yaml(name, "slow", {"seconds": FITS_SECONDS, "steps": 10}), namespace)
    cluster.apply(job_yaml("outlasts", "slow", {"seconds": OUTLASTS_SECONDS, "steps": 45}), namespace)
    running: dict[str, dict[str, Any]] = {}
    for name in [*FITS, "outlasts"]:
        running[name] = wait_phase(cluster, namespace, name, {"Running"}, timeout=60)
    old_pods = worker_pods(cluster, namespace)
    assert {job["status"]["worker"] for job in running.values()} <= old_pods

    rolled_at = time.monotonic()
    cluster.apply(pool(concurrency=4), namespace)  # a new pod template: the Deployment rolls

    for name in FITS:
        job = wait_phase(cluster, namespace, name, {"Succeeded", "Failed"}, timeout=120)
        status = job["status"]
        assert status["phase"] == "Succeeded", (name, status)
        # Finished by the attempt that was running when the rollout began, on its old pod: never restarted.
        assert status["attempts"] == 1, (name, status)
        assert status["worker"] == running[name]["status"]["worker"], (name, status)
        assert "Requeued" not in {reason for reason, _ in events_for(cluster, namespace, name)}, name
    fits_done_in = time.monotonic() - rolled_at
    assert fits_done_in < GRACE + FITS_SECONDS, f"the short jobs took {fits_done_in:.0f} s after the rollout began"

    def rolled() -> bool:
        pods = worker_pods(cluster, namespace)
        return len(pods) == 2 and not pods & old_pods

    wait_for(rolled, timeout=120, what="the rollout to replace both old pods")
    job = wait_phase(cluster, namespace, "outlasts", {"Succeeded", "Failed"}, timeout=180)
    assert job["status"]["phase"] == "Succeeded", job["status"]  # one attempt allowed: the hand-back was uncounted
    events = assert_events(cluster, namespace, "outlasts", {"Requeued"})
    assert not {"Retrying", "Failed"} & {reason for reason, _ in events}, events
    assert job["status"]["worker"] not in old_pods  # it ran to its end on a new pod
