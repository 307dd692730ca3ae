"""``kubeworkers jobs retry`` of a failed Job CR on the real control plane (issue 12, issue 17 defect 3):
the CR moves back to Queued, with ``status.reruns`` and a Rerun Event, and then to Succeeded."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.e2e.operator_fixtures import REPO, OperatorProcess, pool_manifest, wait_for
from tests.e2e.test_job_lifecycle import assert_events, job_yaml, wait_phase
from tests.support.cluster import Cluster
from tests.support.pod_runner import PodRunner


def types(status: dict) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions") or []}


def test_jobs_retry_moves_a_failed_job_back_to_queued_and_then_to_succeeded(
    cluster: Cluster, namespace: str, redis_url: str, operator: OperatorProcess, demo_pool: PodRunner
) -> None:
    cluster.apply(pool_manifest(), namespace)  # declares fails_first_run
    cluster.apply(job_yaml("second-time", "fails_first_run", {"value": 3}), namespace)
    failed = wait_phase(cluster, namespace, "second-time", {"Succeeded", "Failed", "Cancelled"})["status"]
    assert failed["phase"] == "Failed", failed
    assert types(failed)["Failed"][0] == "True"

    # Pause the pool (maxReplicas 0) so that the rerun waits, Queued, where the test can see it.
    cluster.kubectl("patch", "wp", "demo", "-n", namespace, "--type=merge", "-p", '{"spec": {"maxReplicas": 0}}')
    wait_for(lambda: not demo_pool.processes(), timeout=90, what="the paused pool's workers to stop")

    retried = subprocess.run(
        [sys.executable, "-m", "kubeworkers", "jobs", "retry", f"{namespace}/second-time", "--namespace", namespace,
         "--redis-url", redis_url],
        capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
    )
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout == f"{namespace}/second-time\trerun 1 queued on pool demo\n"

    queued = wait_phase(cluster, namespace, "second-time", {"Queued"})["status"]
    assert (queued["reruns"], queued["attempts"]) == (1, 0)
    assert "error" not in queued and "completionTime" not in queued
    assert "Failed" not in types(queued) and types(queued)["Enqueued"] == ("True", "Rerun")
    table = cluster.kubectl("get", "jobs.workers.io", "second-time", "-n", namespace).stdout
    assert "Queued" in table

    cluster.kubectl("patch", "wp", "demo", "-n", namespace, "--type=merge", "-p", '{"spec": {"maxReplicas": 5}}')
    done = wait_phase(cluster, namespace, "second-time", {"Succeeded", "Failed", "Cancelled"})["status"]
    assert done["phase"] == "Succeeded", done
    assert (done["reruns"], done["attempts"], done["output"]) == (1, 1, {"value": 3, "run": 1, "attempt": 1})
    assert types(done)["Complete"] == ("True", "Succeeded") and "Failed" not in types(done)
    events = assert_events(cluster, namespace, "second-time", {"Failed", "Rerun", "Succeeded"})
    assert any("run 1" in message for reason, message in events if reason == "Rerun"), json.dumps(events)
