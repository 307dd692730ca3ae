"""The per-pool loop against a real Redis; the Kubernetes side is a recording in-memory Deployment
(the real apiserver path is covered by tests/e2e/test_autoscaling_pool.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis.asyncio as aioredis
from kubeworkers.protocol import WORKER_GROUP, PoolKeys, Priority, WorkerHeartbeat
from kubeworkers_operator.autoscaling import AutoscalerMetrics, PoolAutoscaler
from kubeworkers_operator.autoscaling.deletion_cost import BUSY_COST, IDLE_COST
from kubeworkers_operator.autoscaling.pods import WorkerPod
from kubeworkers_operator.model.pool_conditions import ConditionValue

NS, POOL = "ns", "pool"
KEYS = PoolKeys(NS, POOL)


def spec(**autoscaling: Any) -> dict[str, Any]:
    return {
        "image": "w:1", "imports": ["app"], "concurrency": 2, "minReplicas": 0, "maxReplicas": 8,
        # A safety-net poll far longer than any test: only stream activity or a spec update can wake the loop.
        "autoscaling": {"pollSeconds": 300, "idleSecondsBeforeZero": 600, **autoscaling},
    }


class RecordingDeployment:
    """A :class:`KubeScaler` that keeps replicas in memory and records every call in order."""

    def __init__(self, replicas: int = 0, pods: list[str] | None = None) -> None:
        self.replicas = replicas
        self.pods: dict[str, int | None] = dict.fromkeys(pods or [])  # name -> deletion cost
        self.calls: list[tuple[str, Any]] = []
        self.statuses: list[dict[str, Any]] = []
        self.events: list[str] = []
        self.conditions: dict[str, ConditionValue] = {}
        self.fail_next_set = 0
        self.changed = asyncio.Event()
        self.reported = asyncio.Event()

    async def get_replicas(self) -> int | None:
        return self.replicas

    async def set_replicas(self, replicas: int) -> None:
        if self.fail_next_set:
            self.fail_next_set -= 1
            raise RuntimeError("apiserver unavailable")
        self.calls.append(("set_replicas", replicas))
        self.replicas = replicas
        self.changed.set()

    async def list_worker_pods(self) -> list[WorkerPod]:
        return [WorkerPod(name, cost) for name, cost in self.pods.items()]

    async def set_deletion_cost(self, pod: str, cost: int) -> None:
        self.calls.append(("set_deletion_cost", (pod, cost)))
        self.pods[pod] = cost

    async def patch_status(self, status: dict[str, Any]) -> None:
        self.statuses.append(status)
        self.reported.set()

    async def post_event(self, reason: str, message: str, *, warning: bool = False) -> None:
        self.events.append(f"{reason}: {message}")

    async def set_condition(self, type_: str, value: ConditionValue) -> bool:
        self.conditions[type_] = value
        return True

    async def wait_for(self, replicas: int) -> None:
        async with asyncio.timeout(30):
            while self.replicas != replicas:
                self.changed.clear()
                await self.changed.wait()


async def started(scaler: PoolAutoscaler, kube: RecordingDeployment) -> asyncio.Task[None]:
    task = asyncio.create_task(scaler.run())
    # The first tick reports a status; then the loop goes on to block in its XREAD.
    async with asyncio.timeout(30):
        await kube.reported.wait()
    await asyncio.sleep(0.05)
    return task


async def test_first_job_on_a_pool_at_zero_wakes_the_loop_without_waiting_for_the_poll(
    r: aioredis.Redis,
) -> None:
    kube = RecordingDeployment()
    scaler = PoolAutoscaler(NS, POOL, r, kube, spec=spec())
    task = await started(scaler, kube)
    assert kube.replicas == 0
    for _ in range(5):
        await r.xadd(KEYS.stream(Priority.NORMAL), {"m": "job"})
    await kube.wait_for(3)  # 5 jobs, 2 per pod
    await scaler.stop()
    await task
    assert kube.events[0].startswith("ScaledUp: scaled 0 → ")
    last = kube.statuses[-1]
    assert last["desiredReplicas"] == 3 and last["backlog"] == 5 and last["inFlight"] == 0
    assert last["lastScaleReason"].startswith("scaled 0 → ")
    assert "lastScaleTime" in last


async def test_spec_update_takes_effect_at_once(r: aioredis.Redis) -> None:
    await r.xadd(KEYS.stream(Priority.HIGH), {"m": "job"})
    kube = RecordingDeployment()
    scaler = PoolAutoscaler(NS, POOL, r, kube, spec=spec())
    task = await started(scaler, kube)
    assert kube.replicas == 1
    scaler.update_spec({**spec(), "minReplicas": 4})
    await kube.wait_for(4)
    await scaler.stop()
    await task


async def test_stop_ends_a_loop_blocked_waiting_for_jobs(r: aioredis.Redis) -> None:
    kube = RecordingDeployment()
    scaler = PoolAutoscaler(NS, POOL, r, kube, spec=spec())
    task = await started(scaler, kube)
    async with asyncio.timeout(10):
        await scaler.stop()
        await task
    assert task.done() and task.exception() is None


async def test_loop_survives_a_failed_scale_and_applies_it_on_retry(r: aioredis.Redis) -> None:
    metrics = AutoscalerMetrics()
    kube = RecordingDeployment()
    kube.fail_next_set = 1
    scaler = PoolAutoscaler(NS, POOL, r, kube, spec=spec(pollSeconds=0.1), metrics=metrics)
    await r.xadd(KEYS.stream(Priority.LOW), {"m": "job"})
    task = asyncio.create_task(scaler.run())
    await kube.wait_for(1)
    await scaler.stop()
    await task
    assert metrics.errors.labels(NS, POOL)._value.get() == 1


async def test_scale_down_marks_busy_pods_expensive_before_lowering_replicas(r: aioredis.Redis) -> None:
    now = 1.0
    await r.xgroup_create(KEYS.stream(Priority.NORMAL), WORKER_GROUP, id="0", mkstream=True)
    await r.xadd(KEYS.stream(Priority.NORMAL), {"m": "job"})
    await r.xreadgroup(WORKER_GROUP, "pod-busy", {KEYS.stream(Priority.NORMAL): ">"}, count=1)
    for name, in_flight in (("pod-busy", 1), ("pod-idle-1", 0), ("pod-idle-2", 0)):
        hb = WorkerHeartbeat(worker=name, in_flight=in_flight, concurrency=2, at=time.time())
        await r.hset(KEYS.workers, name, hb.model_dump_json())
    kube = RecordingDeployment(replicas=3, pods=["pod-busy", "pod-idle-1", "pod-idle-2"])
    scaler = PoolAutoscaler(
        NS, POOL, r, kube, spec=spec(scaleDownStabilizationSeconds=0), clock=lambda: now
    )
    await scaler.tick()
    assert kube.replicas == 1
    assert kube.pods == {"pod-busy": BUSY_COST + 1, "pod-idle-1": IDLE_COST, "pod-idle-2": IDLE_COST}
    # Every annotation was written before the replica count went down.
    assert kube.calls[-1] == ("set_replicas", 1)
    assert all(name == "set_deletion_cost" for name, _ in kube.calls[:-1])
    assert kube.events == [
        "ScaledDown: scaled 3 → 1: backlog 0, in-flight 1, one slot per job (no duration yet)"
    ]
