"""Which worker pods the ReplicaSet should remove first: ``pod-deletion-cost`` from the registry.

When a ReplicaSet shrinks it deletes pods with the *lowest*
``controller.kubernetes.io/pod-deletion-cost`` first (after unscheduled, pending
and not-ready pods). Before lowering replicas the autoscaler gives idle pods a
low cost and busy pods a cost that grows with their in-flight count, so the
pods removed are idle ones; workers drain on SIGTERM as the backstop for a pod
that picked up a job in between.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kubeworkers.protocol import WorkerHeartbeat

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


@dataclass(frozen=True)
class WorkerPod:
    """A worker pod as the autoscaler needs to see it."""

    name: str
    deletion_cost: int | None
    """The current annotation value (None: unset or unparsable)."""
    terminating: bool = False


def deletion_cost(heartbeat: WorkerHeartbeat | None) -> int:
    """The cost a pod with this (live) heartbeat should carry; None: no live heartbeat."""
    if heartbeat is None:
        return UNKNOWN_COST
    if heartbeat.draining:
        return DRAINING_COST
    if heartbeat.in_flight > 0:
        return BUSY_COST + heartbeat.in_flight
    return IDLE_COST


def plan_deletion_costs(pods: Iterable[WorkerPod], live: Mapping[str, WorkerHeartbeat]) -> dict[str, int]:
    """Annotations to write: pod name -> cost, only for pods whose annotation is out of date."""
    changes: dict[str, int] = {}
    for pod in pods:
        if pod.terminating:
            continue
        cost = deletion_cost(live.get(pod.name))
        if pod.deletion_cost != cost:
            changes[pod.name] = cost
    return changes
