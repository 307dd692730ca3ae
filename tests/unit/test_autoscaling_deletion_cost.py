"""Deletion costs: the ReplicaSet removes idle pods first, busy ones last."""

from __future__ import annotations

from kubeworkers.protocol import WorkerHeartbeat
from kubeworkers_operator.autoscaling.deletion_cost import (
    BUSY_COST,
    IDLE_COST,
    UNKNOWN_COST,
    WorkerPod,
    deletion_cost,
    plan_deletion_costs,
)


def hb(name: str, in_flight: int, draining: bool = False) -> WorkerHeartbeat:
    return WorkerHeartbeat(worker=name, in_flight=in_flight, concurrency=4, draining=draining)


def test_busy_pods_cost_more_than_idle_pods_and_more_jobs_cost_more() -> None:
    assert deletion_cost(None) < deletion_cost(hb("a", 0)) < deletion_cost(hb("a", 1)) < deletion_cost(hb("a", 3))


def test_draining_pods_go_first_even_while_finishing_jobs() -> None:
    assert deletion_cost(hb("a", 2, draining=True)) < deletion_cost(hb("b", 0))


def test_plan_writes_only_out_of_date_annotations_and_skips_terminating_pods() -> None:
    pods = [
        WorkerPod("busy", deletion_cost=IDLE_COST),
        WorkerPod("idle", deletion_cost=IDLE_COST),
        WorkerPod("new", deletion_cost=None),
        WorkerPod("leaving", deletion_cost=None, terminating=True),
    ]
    live = {"busy": hb("busy", 2), "idle": hb("idle", 0)}
    assert plan_deletion_costs(pods, live) == {"busy": BUSY_COST + 2, "new": UNKNOWN_COST}
