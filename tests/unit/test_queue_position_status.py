"""When a queued Job's position and estimated start are worth a status write (pure)."""

from __future__ import annotations

from kubeworkers_operator.model import job_status, queue_position
from kubeworkers_operator.model.conditions import rfc3339

NOW = 1_900_000_000.0
QUEUED = {"phase": "Queued", "queuedAt": rfc3339(NOW - 60)}
RATE = queue_position.PoolRate(measured=2.0, capacity=10.0)


def test_a_job_queued_for_long_enough_gets_its_position_and_estimated_start() -> None:
    start = queue_position.estimated_start(10, RATE, NOW)
    new = queue_position.position_status(QUEUED, 10, start, now=NOW, last_written=None)
    assert new is not None
    assert (new["position"], new["estimatedStartTime"]) == (10, rfc3339(NOW + 5))


def test_a_job_that_just_arrived_gets_no_position_write() -> None:
    fresh = {"phase": "Queued", "queuedAt": rfc3339(NOW - 1)}
    assert queue_position.position_status(fresh, 3, NOW + 2, now=NOW, last_written=None) is None


def test_positions_are_rewritten_at_most_once_per_interval_and_only_when_they_moved() -> None:
    written = queue_position.position_status(QUEUED, 100, NOW + 50, now=NOW, last_written=None)
    assert written is not None
    soon = NOW + queue_position.MIN_INTERVAL_SECONDS - 1
    assert queue_position.position_status(written, 10, NOW + 5, now=soon, last_written=NOW) is None
    later = NOW + queue_position.MIN_INTERVAL_SECONDS
    assert queue_position.position_status(written, 99, NOW + 50, now=later, last_written=NOW) is None
    assert queue_position.position_status(written, 80, NOW + 40, now=later, last_written=NOW) is not None


def test_without_a_take_rate_the_estimate_uses_the_pools_capacity_and_a_paused_pool_has_none() -> None:
    idle = queue_position.PoolRate(measured=0.0, capacity=queue_position.capacity(
        concurrency=4, max_pods=2, mean_duration=2.0))
    assert queue_position.estimated_start(8, idle, NOW) == NOW + 2
    paused = queue_position.PoolRate(measured=0.0, capacity=queue_position.capacity(
        concurrency=4, max_pods=0, mean_duration=2.0))
    assert queue_position.estimated_start(8, paused, NOW) is None


def test_the_position_is_cleared_when_the_job_starts() -> None:
    from kubeworkers.protocol import JobEvent, JobState

    queued = {**QUEUED, "position": 4, "estimatedStartTime": rfc3339(NOW + 9)}
    running = job_status.apply_event(queued, JobEvent(
        job_id="ns/j", uid="u", namespace="ns", pool="p", state=JobState.RUNNING, attempt=1, worker="w", at=NOW))
    assert running["phase"] == "Running"
    assert "position" not in running and "estimatedStartTime" not in running
