"""Folding worker events and job records into Job.status: idempotent, never backwards."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from kubeworkers.protocol import JobError, JobEvent, JobRecord, JobState
from kubeworkers_operator.model.job_status import (
    apply_event,
    apply_events,
    apply_record,
    cap_output,
    merge_patch,
    only_progress_changed,
)

QUEUED: dict[str, Any] = {"phase": "Queued", "attempts": 0, "queuedAt": "2026-11-23T10:00:00Z"}


def ev(state: JobState, attempt: int = 1, **kw: Any) -> JobEvent:
    return JobEvent(job_id="ns/j", uid="u1", namespace="ns", pool="p", state=state, attempt=attempt,
                    worker=kw.pop("worker", "pod-a"), at=kw.pop("at", 1_800_000_000.0), **kw)


def test_running_then_succeeded_fold_into_one_status_with_output_worker_and_attempts() -> None:
    s = apply_events(QUEUED, [ev(JobState.RUNNING), ev(JobState.SUCCEEDED, output={"words": 3})])
    assert s["phase"] == "Succeeded"
    assert s["output"] == {"words": 3}
    assert s["outputTruncated"] is False
    assert s["attempts"] == 1
    assert s["worker"] == "pod-a"
    assert s["startTime"] and s["completionTime"]
    assert s["queuedAt"] == QUEUED["queuedAt"]


def test_finished_phase_never_moves_backwards() -> None:
    done = apply_events(QUEUED, [ev(JobState.RUNNING), ev(JobState.SUCCEEDED, output=1)])
    for late in (ev(JobState.RUNNING), ev(JobState.QUEUED), ev(JobState.RUNNING, attempt=2),
                 ev(JobState.FAILED, error=JobError(type="X", message="m"))):
        assert apply_event(done, late) == done


def test_replaying_a_batch_changes_nothing() -> None:
    batch = [ev(JobState.RUNNING), ev(JobState.RUNNING, progress=0.5, message="half"),
             ev(JobState.FAILED, error=JobError(type="ValueError", message="bad"))]
    once = apply_events(QUEUED, batch)
    assert apply_events(once, batch) == once
    assert merge_patch(once, apply_events(once, batch)) == {}


def test_late_event_of_an_older_attempt_does_not_overwrite_the_newer_attempt() -> None:
    s = apply_events(QUEUED, [ev(JobState.RUNNING, attempt=2, worker="pod-b")])
    assert apply_event(s, ev(JobState.RUNNING, attempt=1, worker="pod-a")) == s
    stale_failure = ev(JobState.FAILED, attempt=1, error=JobError(type="LeaseLost", message="x"))
    assert apply_event(s, stale_failure)["phase"] == "Running"


def test_retry_goes_back_to_queued_with_the_error_then_succeeds_on_attempt_two() -> None:
    err = JobError(type="RuntimeError", message="flaky")
    s = apply_events(QUEUED, [ev(JobState.RUNNING, attempt=1), ev(JobState.QUEUED, attempt=1, error=err)])
    assert s["phase"] == "Queued"
    assert s["error"] == {"type": "RuntimeError", "message": "flaky"}
    s = apply_events(s, [ev(JobState.RUNNING, attempt=2), ev(JobState.SUCCEEDED, attempt=2, output="ok")])
    assert (s["phase"], s["attempts"], s["output"]) == ("Succeeded", 2, "ok")
    assert "error" not in s


def test_failure_copies_the_error() -> None:
    s = apply_event(QUEUED, ev(JobState.FAILED, attempt=3, error=JobError(type="Timeout", message="after 1s")))
    assert s["phase"] == "Failed"
    assert s["error"] == {"type": "Timeout", "message": "after 1s"}
    assert s["attempts"] == 3


def test_cancel_while_queued_finishes_the_job_as_cancelled() -> None:
    s = apply_event(QUEUED, ev(JobState.CANCELLED, attempt=0, worker=None, message="cancelled while queued"))
    assert s["phase"] == "Cancelled"
    assert s["error"]["type"] == "Cancelled"


def test_large_output_is_cut_and_flagged_small_output_is_kept() -> None:
    assert cap_output({"a": 1}, 100) == ({"a": 1}, False)
    cut, truncated = cap_output({"blob": "x" * 5000}, 400)
    assert truncated is True
    assert isinstance(cut, dict) and cut["truncated"] is True and len(json.dumps(cut).encode()) <= 400
    s = apply_event(QUEUED, ev(JobState.SUCCEEDED, output={"blob": "x" * 5000}), output_limit=100)
    assert s["outputTruncated"] is True


def test_progress_only_patches_are_recognised_for_rate_limiting() -> None:
    running = apply_event(QUEUED, ev(JobState.RUNNING))
    moved = apply_event(running, ev(JobState.RUNNING, progress=0.4, message="40%"))
    patch = merge_patch(running, moved)
    assert patch == {"progress": {"fraction": 0.4, "message": "40%"}}
    assert only_progress_changed(patch)
    assert not only_progress_changed(merge_patch(QUEUED, running))


def test_merge_patch_nulls_removed_keys() -> None:
    assert merge_patch({"a": 1, "b": 2}, {"a": 1}) == {"b": None}


def record(state: JobState, **kw: Any) -> JobRecord:
    return JobRecord(job_id="ns/j", uid="u1", namespace="ns", pool="p", handler="h", state=state, **kw)


def test_resync_from_record_brings_a_missed_finish_into_the_status() -> None:
    s = apply_record(QUEUED, record(JobState.SUCCEEDED, attempts=1, worker="pod-a", started_at=1.0,
                                    finished_at=2.0, output={"n": 1}))
    assert (s["phase"], s["output"], s["attempts"], s["worker"]) == ("Succeeded", {"n": 1}, 1, "pod-a")


def test_resync_never_moves_a_finished_status_backwards() -> None:
    done = {"phase": "Cancelled", "attempts": 1}
    assert apply_record(done, record(JobState.RUNNING, attempts=1)) == done


def test_resync_of_an_up_to_date_status_changes_nothing() -> None:
    running = apply_event(QUEUED, ev(JobState.RUNNING))
    assert merge_patch(running, apply_record(running, record(JobState.RUNNING, attempts=1, worker="pod-a"))) == {}


RANK = {"Queued": 1, "Running": 2, "Succeeded": 3, "Failed": 3, "Cancelled": 3}
states = st.sampled_from([JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED,
                          JobState.CANCELLED])


@given(st.lists(st.tuples(states, st.integers(min_value=0, max_value=3)), max_size=12))
def test_any_event_sequence_keeps_a_finished_phase_and_folding_is_idempotent(
    seq: list[tuple[JobState, int]],
) -> None:
    events = [ev(state, attempt=attempt) for state, attempt in seq]
    s: dict[str, Any] = dict(QUEUED)
    finished: str | None = None
    for e in events:
        s = apply_event(s, e)
        if finished is not None:
            assert s["phase"] == finished
        elif RANK[s["phase"]] == 3:
            finished = s["phase"]
    assert apply_events(s, events) == s
