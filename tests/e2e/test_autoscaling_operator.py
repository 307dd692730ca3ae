"""Autoscaling through the whole product: the operator process, Job CRs applied with kubectl,
worker pods run as local ``kubeworkers worker`` processes, Job statuses read back with kubectl."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.e2e.operator_fixtures import OperatorProcess, job_list_yaml, list_jobs, pool_manifest, wait_for
from tests.support.cluster import Cluster
from tests.support.pod_runner import PodRunner

FAST = {
    "targetDrainSeconds": 10,
    "scaleDownStabilizationSeconds": 5,
    "idleSecondsBeforeZero": 5,
    "pollSeconds": 1,
}


def apply_jobs(cluster: Cluster, namespace: str, text: str) -> None:
    # Through stdin: one-line JSON is not a path, whatever its length.
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=text, timeout=180)


def replicas(cluster: Cluster, namespace: str, pool: str) -> int | None:
    proc = cluster.kubectl("get", "deployment", f"{pool}-workers", "-n", namespace, "-o", "json", check=False)
    if proc.returncode != 0:
        return None
    return int(json.loads(proc.stdout)["spec"].get("replicas", 0))


def live_pods(cluster: Cluster, namespace: str, pool: str) -> set[str]:
    out = cluster.kubectl("get", "pods", "-n", namespace, "-l", f"workers.io/pool={pool}", "-o", "json").stdout
    return {p["metadata"]["name"] for p in json.loads(out)["items"] if not p["metadata"].get("deletionTimestamp")}


def pool_status(cluster: Cluster, namespace: str, pool: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "workerpools.workers.io", pool, "-n", namespace, "-o", "json").stdout
    status: dict[str, Any] = json.loads(out).get("status", {})
    return status


def pool_events(cluster: Cluster, namespace: str, pool: str) -> list[str]:
    out = cluster.kubectl("get", "events", "-n", namespace, "-o", "json", "--field-selector",
                          f"involvedObject.name={pool},involvedObject.kind=WorkerPool").stdout
    return [f"{e['reason']}: {e['message']}" for e in json.loads(out)["items"]]


def phases(jobs: dict[str, dict[str, Any]]) -> dict[str, str | None]:
    return {name: job.get("status", {}).get("phase") for name, job in jobs.items()}


def test_burst_of_500_jobs_on_a_pool_at_zero_scales_up_drains_and_returns_to_zero(
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner
) -> None:
    cluster.apply(pool_manifest("burst", concurrency=4, minReplicas=0, maxReplicas=5, autoscaling=FAST), namespace)
    wait_for(lambda: replicas(cluster, namespace, "burst") == 0, what="the pool's Deployment at zero")

    names = [f"b-{i:03d}" for i in range(500)]
    # 1 s jobs: 500 slot-seconds against a 10 s drain target ask for far more than maxReplicas
    # whatever the apply's pace. (With 0.2 s jobs a slow apply kept arrivals times duration under
    # five pods' slots, and the pool rightly stayed smaller: the test measured the machine.)
    apply_jobs(cluster, namespace, job_list_yaml(names, "burst", "slow", {"seconds": 1.0, "steps": 1}))

    peak = 0

    def at_max() -> bool:
        # The apply of 500 Jobs takes longer than the drain can: the pool may already be on its
        # way down when we look, so the scale-up Events count as well as the live replicas.
        nonlocal peak
        scaled_to = [int(m) for e in pool_events(cluster, namespace, "burst") if e.startswith("ScaledUp: ")
                     for m in re.findall(r"→ (\d+)", e)[:1]]
        peak = max([peak, replicas(cluster, namespace, "burst") or 0, *scaled_to])
        return peak == 5

    wait_for(at_max, timeout=120, what="scale-up to maxReplicas")

    def all_finished() -> dict[str, dict[str, Any]] | None:
        jobs = list_jobs(cluster, namespace)
        done = {"Succeeded", "Failed", "Cancelled"}
        return jobs if len(jobs) == 500 and all(p in done for p in phases(jobs).values()) else None

    jobs = wait_for(all_finished, timeout=300, every=2, what="all 500 Jobs finished")
    assert set(phases(jobs).values()) == {"Succeeded"}
    assert {job["status"]["attempts"] for job in jobs.values()} == {1}, "a job was interrupted and run again"
    assert len({job["status"]["worker"] for job in jobs.values()}) > 1

    wait_for(lambda: replicas(cluster, namespace, "burst") == 0, timeout=120, what="scale back to zero")
    status = pool_status(cluster, namespace, "burst")
    assert status["desiredReplicas"] == 0
    assert status["backlog"] == 0 and status["inFlight"] == 0
    assert status["lastScaleReason"].startswith("scaled ") and "idle for" in status["lastScaleReason"]
    events = pool_events(cluster, namespace, "burst")
    assert any(e.startswith("ScaledUp: scaled 0 → ") for e in events), events
    assert any(e.startswith("ScaledDown: ") and "→ 0: idle for" in e for e in events), events


def test_scale_down_with_jobs_running_on_some_pods_interrupts_none(
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner
) -> None:
    cluster.apply(pool_manifest("calm", concurrency=1, minReplicas=0, maxReplicas=4, autoscaling=FAST), namespace)
    wait_for(lambda: replicas(cluster, namespace, "calm") == 0, what="the pool's Deployment at zero")
    long_jobs, short_jobs = ["long-0", "long-1"], ["short-0", "short-1"]
    apply_jobs(cluster, namespace, job_list_yaml(long_jobs, "calm", "slow", {"seconds": 40, "steps": 4}))
    apply_jobs(cluster, namespace, job_list_yaml(short_jobs, "calm", "slow", {"seconds": 0.5, "steps": 1}))
    wait_for(lambda: replicas(cluster, namespace, "calm") == 4, what="four pods for four jobs")

    def long_running_short_done() -> dict[str, dict[str, Any]] | None:
        jobs = list_jobs(cluster, namespace)
        p = phases(jobs)
        ok = all(p.get(j) == "Running" for j in long_jobs) and all(p.get(j) == "Succeeded" for j in short_jobs)
        return jobs if ok else None

    jobs = wait_for(long_running_short_done, timeout=120, what="long jobs running, short jobs done")
    busy = {jobs[j]["status"]["worker"] for j in long_jobs}
    assert len(busy) == 2

    wait_for(lambda: replicas(cluster, namespace, "calm") == 2, timeout=120, what="scale-down to the busy pods")
    wait_for(lambda: live_pods(cluster, namespace, "calm") == busy, timeout=120, what="the idle pods removed")

    def long_finished() -> dict[str, dict[str, Any]] | None:
        jobs = list_jobs(cluster, namespace)
        return jobs if all(phases(jobs).get(j) in {"Succeeded", "Failed"} for j in long_jobs) else None

    jobs = wait_for(long_finished, timeout=120, what="the long jobs to finish")
    for name in long_jobs:
        status = jobs[name]["status"]
        assert (status["phase"], status["attempts"]) == ("Succeeded", 1), status
        assert status["worker"] in busy


def crash_loop(cluster: Cluster, namespace: str, pod: str) -> None:
    """Write the status a kubelet writes for a worker that exits at once (kwok's stand-in never does:
    it keeps the pod Ready whatever the local process does)."""
    status = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
                       {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady"},
                       {"type": "PodScheduled", "status": "True"}],
        "containerStatuses": [{
            "name": "worker", "ready": False, "restartCount": 5, "image": "kubeworkers-worker:dev", "imageID": "",
            "state": {"waiting": {"reason": "CrashLoopBackOff",
                                  "message": "back-off 2m40s restarting failed container=worker"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
        }],
    }
    cluster.kubectl("patch", "pod", pod, "-n", namespace, "--subresource=status", "--type=merge",
                    "-p", json.dumps({"status": status}))


def test_a_pool_whose_pods_crash_loop_says_so_and_is_not_grown_to_max(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.apply(pool_manifest("crashy", concurrency=1, minReplicas=0, maxReplicas=4, imports=["no_such_module"],
                                autoscaling=FAST), namespace)
    wait_for(lambda: replicas(cluster, namespace, "crashy") == 0, what="the pool's Deployment at zero")
    apply_jobs(cluster, namespace, job_list_yaml([f"j-{i}" for i in range(4)], "crashy", "word_count", {"text": "a"}))
    wait_for(lambda: len(live_pods(cluster, namespace, "crashy")) == 4, what="four pods for four jobs")
    for pod in live_pods(cluster, namespace, "crashy"):
        crash_loop(cluster, namespace, pod)

    def failing() -> dict[str, Any] | None:
        status = pool_status(cluster, namespace, "crashy")
        conds = {c["type"]: c for c in status.get("conditions", [])}
        cond = conds.get("PodsFailing")
        return cond if cond and cond["status"] == "True" else None

    cond = wait_for(failing, timeout=60, what="PodsFailing=True on the pool")
    assert cond["reason"] == "CrashLoopBackOff" and "cannot start" in cond["message"]
    wait_for(lambda: replicas(cluster, namespace, "crashy") == 1, timeout=60, what="the pool held at one pod")
    assert "cannot start (CrashLoopBackOff)" in pool_status(cluster, namespace, "crashy")["lastScaleReason"]
    available = {c["type"]: c for c in pool_status(cluster, namespace, "crashy")["conditions"]}["Available"]
    assert available["status"] == "False"
    wait_for(lambda: any(e.startswith("PodsFailing: ") for e in pool_events(cluster, namespace, "crashy")),
             timeout=30, what="a PodsFailing Warning Event")
    assert sum(e.startswith("PodsFailing: ") for e in pool_events(cluster, namespace, "crashy")) == 1
