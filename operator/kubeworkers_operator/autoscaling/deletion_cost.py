"""Which worker pods the ReplicaSet should remove first: ``pod-deletion-cost`` from the registry.

When a ReplicaSet shrinks it deletes pods with the *lowest*
``controller.kubernetes.io/pod-deletion-cost`` first (after unscheduled, pending
and not-ready pods). Before lowering replicas the autoscaler gives idle pods a
low cost and busy pods a cost that grows with the jobs they hold, so the
pods removed are idle ones; workers drain on SIGTERM as the backstop for a pod
that picked up a job in between.

A pod is busy when its consumer holds pending entries in the pool's consumer
group (``take.lua`` adds them in the same call that hands the jobs out, the
settle acks them): the heartbeat's ``in_flight`` is up to one beat old, so a
worker that took a job since its last beat would read as idle. The heartbeat
only says whether the worker lives and whether it is draining.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from kubeworkers.protocol import WorkerHeartbeat

from kubeworkers_operator.autoscaling.pods import WorkerPod

#: The annotation the ReplicaSet controller reads (PodDeletionCost, beta and on since 1.22).
DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
#: Cost of a pod with no live heartbeat (starting, or dead): removed first among ready pods.
UNKNOWN_COST = -100
#: Cost of an idle, live worker.
IDLE_COST = 0
#: Cost of a busy worker, plus its in-flight count (so the least busy of busy pods goes first).
BUSY_COST = 1000
#: Cost of a worker already draining: it is on its way out, let it be the one removed.
DRAINING_COST = -1000


def deletion_cost(heartbeat: WorkerHeartbeat | None, held: int) -> int:
    """The cost of a pod whose worker has this live heartbeat (None: none) and holds ``held`` jobs."""
    if heartbeat is not None and heartbeat.draining:
        return DRAINING_COST
    if held > 0:
        # Even without a fresh heartbeat: a pod still holding jobs is never the cheap one.
        return BUSY_COST + held
    if heartbeat is None:
        return UNKNOWN_COST
    return IDLE_COST


def plan_deletion_costs(
    pods: Iterable[WorkerPod], live: Mapping[str, WorkerHeartbeat], held: Mapping[str, int]
) -> dict[str, int]:
    """Annotations to write: pod name -> cost, only for pods whose annotation is out of date.

    ``live``: fresh heartbeats by worker; ``held``: pending entries by consumer (= pod) name.
    """
    changes: dict[str, int] = {}
    for pod in pods:
        if pod.terminating:
            continue
        cost = deletion_cost(live.get(pod.name), held.get(pod.name, 0))
        if pod.deletion_cost != cost:
            changes[pod.name] = cost
    return changes
