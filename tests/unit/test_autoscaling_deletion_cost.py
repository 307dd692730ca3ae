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


def hb(name: str, in_flight: int = 0, draining: bool = False) -> WorkerHeartbeat:
    return WorkerHeartbeat(worker=name, in_flight=in_flight, concurrency=4, draining=draining)


def test_busy_pods_cost_more_than_idle_pods_and_more_jobs_cost_more() -> None:
    assert deletion_cost(None, 0) < deletion_cost(hb("a"), 0) < deletion_cost(hb("a"), 1) < deletion_cost(hb("a"), 3)


def test_draining_pods_go_first_even_while_finishing_jobs() -> None:
    assert deletion_cost(hb("a", draining=True), 2) < deletion_cost(hb("b"), 0)


def test_a_pod_holding_jobs_is_busy_whatever_its_last_heartbeat_says() -> None:
    # Invariant 5: a worker writes in_flight only every heartbeat (5 s); the jobs it took since
    # are already its pending entries, which take.lua writes atomically with the take.
    assert deletion_cost(hb("fresh", in_flight=0), 1) == BUSY_COST + 1
    assert deletion_cost(hb("done", in_flight=3), 0) == IDLE_COST  # its heartbeat lags the acks
    assert deletion_cost(None, 2) == BUSY_COST + 2  # heartbeat late, but the pod still holds jobs


def test_plan_writes_only_out_of_date_annotations_and_skips_terminating_pods() -> None:
    pods = [
        WorkerPod("busy", deletion_cost=IDLE_COST),
        WorkerPod("idle", deletion_cost=IDLE_COST),
        WorkerPod("new", deletion_cost=None),
        WorkerPod("leaving", deletion_cost=None, terminating=True),
    ]
    live = {"busy": hb("busy"), "idle": hb("idle")}
    held = {"busy": 2, "leaving": 1}
    assert plan_deletion_costs(pods, live, held) == {"busy": BUSY_COST + 2, "new": UNKNOWN_COST}
