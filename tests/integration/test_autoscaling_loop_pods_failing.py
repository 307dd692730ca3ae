"""The autoscaler loop on a pool whose pods cannot start: held, reported once, grown again once they start."""

from __future__ import annotations

import redis.asyncio as aioredis
from kubeworkers.protocol import Priority
from kubeworkers_operator.autoscaling import PoolAutoscaler
from kubeworkers_operator.autoscaling.pods import WorkerPod

from tests.integration.test_autoscaling_controller import KEYS, NS, POOL, RecordingDeployment, spec


class CrashingPods(RecordingDeployment):
    def __init__(self, replicas: int, pods: list[str]) -> None:
        super().__init__(replicas=replicas, pods=pods)
        self.failure: str | None = "CrashLoopBackOff"

    async def list_worker_pods(self) -> list[WorkerPod]:
        return [WorkerPod(name, cost, ready=self.failure is None, failure=self.failure)
                for name, cost in self.pods.items()]


async def test_a_pool_whose_pods_crash_is_held_reported_once_and_grown_when_they_start(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    for i in range(200):
        await r.xadd(KEYS.stream(Priority.NORMAL), {"m": f"job-{i}"})
    kube = CrashingPods(replicas=3, pods=["p-1", "p-2", "p-3"])
    clock = [0.0]
    scaler = PoolAutoscaler(NS, POOL, r, kube, spec=spec(), clock=lambda: clock[0], pod_check_seconds=5.0)

    await scaler.tick()
    assert kube.replicas == 1  # not 8 (maxReplicas): more crashing pods would run nothing
    assert scaler.last_decision is not None and "cannot start (CrashLoopBackOff)" in scaler.last_decision.reason
    assert kube.conditions["PodsFailing"].status == "True"
    assert kube.conditions["PodsFailing"].reason == "CrashLoopBackOff"
    for t in (1.0, 6.0, 12.0):  # later ticks, pod checks included: no repeated Event
        clock[0] = t
        await scaler.tick()
    assert kube.replicas == 1
    assert sum(e.startswith("PodsFailing") for e in kube.events) == 1

    kube.failure = None  # the image was fixed, the pod started
    clock[0] = 20.0
    await scaler.tick()
    assert kube.conditions["PodsFailing"].status == "False"
    assert kube.replicas == 8
    assert sum(e.startswith("PodsStarted") for e in kube.events) == 1
    await r.aclose()
