"""Scale-down protects a pod that took a job after its last heartbeat (invariant 5).

This is the cause of the flaky e2e test
``test_autoscaling_operator.py::test_scale_down_with_jobs_running_on_some_pods_interrupts_none``,
made deterministic: a worker writes its registry entry (with ``in_flight``) when it starts and
then every heartbeat (5 s); a job it takes in between shows only as a pending entry of its
consumer. The decision counts those pending entries (``measure_load``: in-flight 2), but the
deletion costs are planned from the registry's ``in_flight`` alone
(``autoscaling/controller.py`` ``_protect_busy_pods`` → ``deletion_cost.plan_deletion_costs``),
so every pod gets cost 0 and the ReplicaSet may remove the busy one (its worker then drains, and
the test sees the idle pod survive). The audit log of a failing run shows the four
``pod-deletion-cost: "0"`` patches 20 ms before ``replicas: 2``. Fixed: busy-ness, for the
deletion costs as for the decision, now comes from the pending list (``load.held_by_consumer``).
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis
from kubeworkers.protocol import WORKER_GROUP, Priority, WorkerHeartbeat
from kubeworkers_operator.autoscaling import PoolAutoscaler

from tests.integration.test_autoscaling_controller import KEYS, NS, POOL, RecordingDeployment, spec


async def test_scale_down_keeps_a_pod_whose_job_started_after_its_last_heartbeat(r: aioredis.Redis) -> None:
    await r.xgroup_create(KEYS.stream(Priority.NORMAL), WORKER_GROUP, id="0", mkstream=True)
    await r.xadd(KEYS.stream(Priority.NORMAL), {"m": "job"})
    # pod-busy took the job after writing its registry entry, whose in_flight still says 0.
    await r.xreadgroup(WORKER_GROUP, "pod-busy", {KEYS.stream(Priority.NORMAL): ">"}, count=1)
    for name in ("pod-busy", "pod-idle"):
        hb = WorkerHeartbeat(worker=name, in_flight=0, concurrency=1, at=time.time())
        await r.hset(KEYS.workers, name, hb.model_dump_json())
    kube = RecordingDeployment(replicas=2, pods=["pod-busy", "pod-idle"])
    scaler = PoolAutoscaler(NS, POOL, r, kube, spec=spec(scaleDownStabilizationSeconds=0), clock=lambda: 1.0)

    await scaler.tick()

    assert kube.replicas == 1  # the decision saw the job in flight: it keeps one pod
    busy, idle = kube.pods["pod-busy"], kube.pods["pod-idle"]
    assert busy is not None and idle is not None
    assert busy > idle, f"the ReplicaSet may remove the busy pod: costs busy={busy}, idle={idle}"
