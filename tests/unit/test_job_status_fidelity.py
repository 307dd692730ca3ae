"""Job.status tells the truth a Kubernetes user looks for: batch-Job conditions, the last attempt,
a requeue, a deleted pool, an output too large for the status."""

from __future__ import annotations

from typing import Any

from kubeworkers.protocol import JobError, JobEvent, JobRecord, JobState
from kubeworkers_operator.model import job_status
from kubeworkers_operator.model.conditions import find
from kubeworkers_operator.model.job_status import apply_event, apply_events, apply_record

QUEUED: dict[str, Any] = {"phase": "Queued", "attempts": 0, "queuedAt": "2026-11-23T10:00:00Z"}
T0 = 1_800_000_000.0


def ev(state: JobState, attempt: int = 1, **kw: Any) -> JobEvent:
    return JobEvent(job_id="ns/j", uid="u1", namespace="ns", pool="p", state=state, attempt=attempt,
                    worker=kw.pop("worker", "pod-a"), at=kw.pop("at", T0), **kw)


def condition(status: dict[str, Any], type_: str) -> tuple[str, str] | None:
    cond = find(status.get("conditions"), type_)
    return None if cond is None else (cond["status"], cond["reason"])


def test_a_succeeded_job_has_complete_true_as_a_batch_job_does() -> None:
    s = apply_events(QUEUED, [ev(JobState.RUNNING), ev(JobState.SUCCEEDED, output={"n": 1})])
    assert condition(s, "Complete") == ("True", "Succeeded")
    assert condition(s, "Failed") is None


def test_a_failed_job_has_failed_true_with_its_error_type_as_reason() -> None:
    s = apply_event(QUEUED, ev(JobState.FAILED, attempt=2, error=JobError(type="Timeout", message="after 1s")))
    assert condition(s, "Failed") == ("True", "Timeout")
    assert condition(s, "Complete") is None
    odd = apply_event(QUEUED, ev(JobState.FAILED, error=JobError(type="my.errors.Boom!", message="x")))
    assert condition(odd, "Failed") == ("True", "my_errors_Boom")  # a valid metav1.Condition reason


def test_a_cancelled_job_is_failed_with_reason_cancelled_so_waiting_for_failed_ends_too() -> None:
    s = apply_event(QUEUED, ev(JobState.CANCELLED, attempt=0, worker=None, message="cancelled while queued"))
    assert condition(s, "Failed") == ("True", "Cancelled")
    early = job_status.cancelled_before_enqueue({}, now=T0)
    assert early is not None and condition(early, "Failed") == ("True", "Cancelled")


def test_a_job_failed_at_admission_has_failed_true_with_the_admission_reason() -> None:
    s = job_status.rejected({}, "UnknownHandler", "no such handler", now=T0)
    assert s is not None and condition(s, "Failed") == ("True", "UnknownHandler")


def test_a_job_requeued_by_the_reaper_shows_queued_again_keeping_its_attempts_and_last_worker() -> None:
    running = apply_event(QUEUED, ev(JobState.RUNNING, attempt=1, worker="pod-dead", at=T0))
    lost = ev(JobState.QUEUED, attempt=1, worker="pod-reaper", at=T0 + 40,
              message="lease expired: its worker stopped heartbeating; queued again")
    s = apply_event(running, lost)
    assert (s["phase"], s["attempts"]) == ("Queued", 1)
    assert "worker" not in s and s["lastWorker"] == "pod-dead"
    assert "progress" not in s
    assert condition(s, "Enqueued") == ("True", "Requeued")
    note = job_status.narration(running, s, "p")
    assert note is not None and note.reason == "Requeued" and note.warning
    assert apply_event(s, lost) == s  # a replay changes nothing


def test_a_hand_back_that_uncounted_the_attempt_also_shows_queued() -> None:
    running = apply_event(QUEUED, ev(JobState.RUNNING, attempt=2, worker="pod-leaving", at=T0))
    s = apply_event(running, ev(JobState.QUEUED, attempt=1, worker="pod-leaving", at=T0 + 1, message="handed back"))
    assert (s["phase"], s["attempts"], s["lastWorker"]) == ("Queued", 2, "pod-leaving")


def test_a_stale_hand_back_from_before_the_current_attempt_started_is_ignored() -> None:
    running = apply_event(QUEUED, ev(JobState.RUNNING, attempt=1, worker="pod-b", at=T0 + 60))
    assert apply_event(running, ev(JobState.QUEUED, attempt=0, worker="pod-a", at=T0, message="handed back")) == running


def test_start_time_is_the_last_attempts() -> None:
    first = apply_event(QUEUED, ev(JobState.RUNNING, attempt=1, at=T0))
    retried = apply_events(first, [ev(JobState.QUEUED, attempt=1, at=T0 + 5, error=JobError(type="E", message="m")),
                                   ev(JobState.RUNNING, attempt=2, at=T0 + 65)])
    assert retried["startTime"] == job_status.rfc3339(T0 + 65)
    again = apply_record(first, JobRecord(job_id="ns/j", uid="u1", namespace="ns", pool="p", handler="h",
                                          state=JobState.RUNNING, attempts=2, started_at=T0 + 120))
    assert again["startTime"] == job_status.rfc3339(T0 + 120)


def test_an_over_limit_output_becomes_a_structured_marker_not_a_string() -> None:
    big = {"blob": "x" * 5000}
    s = apply_event(QUEUED, ev(JobState.SUCCEEDED, output=big), output_limit=1000)
    marker = s["output"]
    assert s["outputTruncated"] is True
    assert marker["truncated"] is True and marker["bytes"] == len('{"blob":"' + "x" * 5000 + '"}')
    assert marker["preview"].startswith('{"blob":"xxx') and "kubeworkers get" in marker["message"]
    assert len(job_status.json.dumps(marker).encode()) <= 1000


def test_a_queued_or_running_job_of_a_deleted_pool_waits_as_pending_with_reason_pool_deleted() -> None:
    running = apply_event(QUEUED, ev(JobState.RUNNING, attempt=1, worker="pod-a", progress=0.5))
    s = job_status.pool_deleted(running, "pool p was deleted", now=T0)
    assert s is not None
    assert (s["phase"], s["attempts"], s["lastWorker"]) == ("Pending", 1, "pod-a")
    assert "worker" not in s and "progress" not in s
    assert condition(s, "Enqueued") == ("False", "PoolDeleted")
    done = apply_event(running, ev(JobState.SUCCEEDED, output=1))
    assert job_status.pool_deleted(done, "x", now=T0) is None  # finished Jobs stay as they are


def test_a_parked_job_is_not_moved_back_to_queued_by_its_draining_workers_hand_back() -> None:
    running = apply_event(QUEUED, ev(JobState.RUNNING, attempt=1, worker="pod-a", at=T0))
    parked = job_status.pool_deleted(running, "pool p was deleted", now=T0 + 1)
    assert parked is not None
    hand_back = ev(JobState.QUEUED, attempt=0, worker="pod-a", at=T0 + 2, message="handed back")
    assert apply_event(parked, hand_back) == parked
    # ... but a worker of the re-created pool running it, or a finish during the drain, does move it.
    assert apply_event(parked, ev(JobState.RUNNING, attempt=1, worker="pod-new", at=T0 + 90))["phase"] == "Running"
    assert apply_event(parked, ev(JobState.SUCCEEDED, attempt=1, output=1))["phase"] == "Succeeded"
