"""A rerun (``kubeworkers jobs retry``) folded into Job.status: a new run moves a finished Job back
to Queued, and what is left of the older run is ignored afterwards (issue 17, defect 3)."""

from __future__ import annotations

from typing import Any

from kubeworkers.protocol import JobError, JobEvent, JobRecord, JobState
from kubeworkers_operator.model.job_status import (
    COMPLETE,
    ENQUEUED,
    FAILED,
    RERUN,
    apply_event,
    apply_events,
    apply_record,
    narration,
)

QUEUED: dict[str, Any] = {"phase": "Queued", "attempts": 0, "queuedAt": "2026-11-23T10:00:00Z"}
BOOM = JobError(type="RuntimeError", message="boom")


def ev(state: JobState, attempt: int = 1, run: int | None = 0, **kw: Any) -> JobEvent:
    return JobEvent(job_id="ns/j", uid="u1", namespace="ns", pool="p", state=state, attempt=attempt, run=run,
                    worker=kw.pop("worker", "pod-a"), at=kw.pop("at", 1_800_000_000.0), **kw)


FAILED_STATUS = apply_events(QUEUED, [ev(JobState.RUNNING), ev(JobState.FAILED, error=BOOM)])
RERUN_EVENT = ev(JobState.QUEUED, attempt=0, run=1, worker=None, message="rerun 1 (kubeworkers jobs retry)",
                 at=1_800_000_100.0)


def types(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions") or []}


def test_failed_status_and_a_queued_event_of_run_1_is_queued_with_reruns_1_and_conditions_reset() -> None:
    assert FAILED_STATUS["phase"] == "Failed" and FAILED in types(FAILED_STATUS)
    s = apply_event(FAILED_STATUS, RERUN_EVENT)
    assert s["phase"] == "Queued"
    assert s["reruns"] == 1
    assert s["attempts"] == 0
    for gone in ("error", "completionTime", "startTime", "worker", "output"):
        assert gone not in s, gone
    assert s["lastWorker"] == "pod-a"
    assert FAILED not in types(s) and COMPLETE not in types(s)
    assert types(s)[ENQUEUED] == ("True", RERUN)
    note = narration(FAILED_STATUS, s, "p")
    assert note is not None and note.reason == RERUN and "run 1" in note.message


def test_events_of_the_older_run_are_ignored_after_a_rerun() -> None:
    s = apply_event(FAILED_STATUS, RERUN_EVENT)
    for late in (ev(JobState.RUNNING, attempt=1), ev(JobState.FAILED, attempt=1, error=BOOM),
                 ev(JobState.SUCCEEDED, attempt=2, output={"old": True})):
        assert apply_event(s, late) == s


def test_the_new_run_goes_on_to_succeed_with_its_own_attempts_and_complete_condition() -> None:
    s = apply_events(FAILED_STATUS, [RERUN_EVENT, ev(JobState.RUNNING, run=1, worker="pod-b"),
                                     ev(JobState.SUCCEEDED, run=1, worker="pod-b", output={"ok": 1})])
    assert (s["phase"], s["reruns"], s["attempts"], s["output"]) == ("Succeeded", 1, 1, {"ok": 1})
    assert "error" not in s
    assert types(s)[COMPLETE] == ("True", "Succeeded") and FAILED not in types(s)


def test_a_new_run_first_seen_by_its_running_event_still_resets_the_finished_status() -> None:
    # The rerun's Queued event was trimmed or lost: the next event of the run carries the news.
    s = apply_event(FAILED_STATUS, ev(JobState.RUNNING, attempt=1, run=1, worker="pod-b"))
    assert (s["phase"], s["reruns"], s["attempts"], s["worker"]) == ("Running", 1, 1, "pod-b")
    assert "error" not in s and FAILED not in types(s)


def test_an_event_that_names_no_run_is_folded_as_before() -> None:
    # Older workers write no run: their events belong to the run the status shows.
    s = apply_event(FAILED_STATUS, RERUN_EVENT)
    assert apply_event(s, ev(JobState.RUNNING, run=None))["phase"] == "Running"
    assert apply_event(FAILED_STATUS, ev(JobState.QUEUED, attempt=0, run=None)) == FAILED_STATUS


def test_the_resync_moves_a_failed_job_to_the_rerun_its_record_shows() -> None:
    record = JobRecord(job_id="ns/j", uid="u1", namespace="ns", pool="p", handler="h", state=JobState.QUEUED,
                       attempts=0, run=1, updated_at=1_800_000_100.0, message="rerun 1")
    s = apply_record(FAILED_STATUS, record)
    assert (s["phase"], s["reruns"], s["attempts"]) == ("Queued", 1, 0)
    assert FAILED not in types(s)
    older = record.model_copy(update={"run": 0, "state": JobState.FAILED})
    assert apply_record(s, older) == s
