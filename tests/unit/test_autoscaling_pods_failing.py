"""A pool whose pods cannot start: told from the pods' status, and not grown while it lasts."""

from __future__ import annotations

from typing import Any

from kubeworkers_operator.autoscaling.decision import Load, PodHealth, ScalerState, decide
from kubeworkers_operator.autoscaling.kube import worker_pod
from kubeworkers_operator.autoscaling.pods import WorkerPod, assess
from kubeworkers_operator.autoscaling.policy import AutoscalingPolicy

POLICY = AutoscalingPolicy(min_replicas=0, max_replicas=20, concurrency=4)
BURST = Load(backlog=500, in_flight=0)
CRASHING = PodHealth(ready=0, failing=3, reason="CrashLoopBackOff", message="3 of 3 worker pods cannot start")


def test_a_pool_whose_pods_cannot_start_is_not_grown_to_max() -> None:
    d = decide(BURST, POLICY, 3, ScalerState(), 0.0, health=CRASHING)
    assert d.desired == 1
    assert "cannot start" in d.reason and "CrashLoopBackOff" in d.reason and "not growing" in d.reason
    assert decide(BURST, POLICY, 1, d.state, 1.0, health=CRASHING).desired == 1  # and it stays there


def test_a_failing_pool_keeps_its_ready_and_busy_pods() -> None:
    some_ready = PodHealth(ready=4, failing=2, reason="ImagePullBackOff", message="m")
    assert decide(BURST, POLICY, 6, ScalerState(), 0.0, health=some_ready).desired == 4
    busy = Load(backlog=500, in_flight=5, busy_workers=5)
    assert decide(busy, POLICY, 6, ScalerState(), 0.0, health=some_ready).desired == 5


def test_growth_resumes_once_the_pods_start() -> None:
    assert decide(BURST, POLICY, 1, ScalerState(), 0.0, health=PodHealth(ready=1)).desired == 20
    assert decide(BURST, POLICY, 1, ScalerState(), 0.0).desired == 20  # no pod health known: no cap


def test_pods_that_cannot_start_are_told_by_their_waiting_reason_or_by_being_unschedulable() -> None:
    health = assess([
        WorkerPod("ok", None, ready=True),
        WorkerPod("crash", None, ready=False, failure="CrashLoopBackOff", failure_message="back-off 40s"),
        WorkerPod("pull", None, ready=False, failure="ImagePullBackOff"),
        WorkerPod("starting", None, ready=False),
        WorkerPod("leaving", None, terminating=True, ready=False, failure="CrashLoopBackOff"),
    ])
    assert (health.ready, health.failing, health.reason) == (1, 2, "CrashLoopBackOff")
    assert "2 of 4 worker pods cannot start" in health.message and "crash" in health.message
    assert assess([WorkerPod("a", None, ready=False)]) == PodHealth(ready=0)


def pod(status: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "p-1", "annotations": {}}, "status": status}


def test_the_kubelets_report_becomes_a_failure_reason() -> None:
    crash = pod({"conditions": [{"type": "Ready", "status": "False"}], "containerStatuses": [
        {"name": "worker", "ready": False, "restartCount": 4,
         "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 1m20s restarting"}}}]})
    assert (worker_pod(crash).failure, worker_pod(crash).ready) == ("CrashLoopBackOff", False)
    assert "back-off" in worker_pod(crash).failure_message
    unschedulable = pod({"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes are available"}]})
    assert worker_pod(unschedulable).failure == "Unschedulable"
    creating = pod({"phase": "Pending", "containerStatuses": [
        {"name": "worker", "ready": False, "state": {"waiting": {"reason": "ContainerCreating"}}}]})
    assert worker_pod(creating).failure is None
    ready = pod({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]})
    assert (worker_pod(ready).ready, worker_pod(ready).failure) == (True, None)
