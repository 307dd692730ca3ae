"""A sequence's events fold into status.steps and currentStep (docs/workflows.md, *Sequences*):
ordered by (step, attempt), so attempts start again at each step, and folding stays idempotent."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubeworkers.protocol import JobError, JobEvent, JobRecord, JobState, StepRef
from kubeworkers.resources import HANDLER_OR_STEPS, JobSpec, JobStatus
from kubeworkers_operator.model.admission import message_for
from kubeworkers_operator.model.index import TrackedJob
from kubeworkers_operator.model.job_status import apply_event, apply_events, apply_record, narration
from pydantic import ValidationError

NAMES = ["parse", "extract", "store"]
clock = itertools.count(1_700_000_000)


def ev(step: int | None, state: JobState, attempt: int, error: str | None = None) -> JobEvent:
    return JobEvent(
        job_id="ns/x", uid="u", namespace="ns", pool="demo", state=state, attempt=attempt, worker="w-1",
        at=float(next(clock)), step=StepRef(index=step, names=NAMES) if step is not None else None,
        error=JobError(type=error, message=f"{error} happened") if error else None,
    )


#: A whole run: parse once, extract retried once (a transient error), store once.
RUN = [
    ev(0, JobState.RUNNING, 1), ev(1, JobState.QUEUED, 0), ev(1, JobState.RUNNING, 1),
    ev(1, JobState.QUEUED, 1, "ConnectionError"), ev(1, JobState.RUNNING, 2), ev(2, JobState.QUEUED, 0),
    ev(2, JobState.RUNNING, 1), ev(2, JobState.SUCCEEDED, 1),
]


def phases(status: dict[str, object]) -> list[tuple[str, str, int | None]]:
    steps = status["steps"]
    assert isinstance(steps, list)
    return [(s["name"], s["phase"], s.get("attempts")) for s in steps]


def test_a_sequence_run_folds_into_one_entry_per_step_with_its_own_attempts() -> None:
    status = apply_events({"phase": "Queued", "attempts": 0}, RUN)
    assert status["phase"] == "Succeeded"
    assert phases(status) == [("parse", "Succeeded", 1), ("extract", "Succeeded", 2), ("store", "Succeeded", 1)]
    assert status["currentStep"] == "step 3/3 store"
    assert all("startTime" in s and "completionTime" in s for s in status["steps"])
    # The transient failure of the extract step stays visible after its retry succeeded.
    assert status["steps"][1]["error"]["type"] == "ConnectionError" and "error" not in status
    JobStatus.model_validate(status)  # the CRD's shape


def test_while_a_step_runs_the_later_steps_are_pending_and_the_retry_error_is_on_its_step() -> None:
    status = apply_events({"phase": "Queued"}, RUN[:4])
    assert status["phase"] == "Queued" and status["currentStep"] == "step 2/3 extract"
    assert phases(status) == [("parse", "Succeeded", 1), ("extract", "Queued", 1), ("store", "Pending", None)]
    assert status["steps"][1]["error"]["type"] == "ConnectionError"


def test_the_next_step_counts_its_attempts_from_zero_and_an_older_steps_event_is_stale() -> None:
    at_extract = apply_events({"phase": "Queued"}, [ev(0, JobState.RUNNING, 3), ev(1, JobState.QUEUED, 0),
                                                    ev(1, JobState.RUNNING, 1)])
    assert at_extract["attempts"] == 1
    # The same when the advance's event was lost (trimmed): the next step's start says it all.
    skipped = apply_events({"phase": "Queued"}, [ev(0, JobState.RUNNING, 3), ev(1, JobState.RUNNING, 1)])
    assert skipped["attempts"] == 1 and phases(skipped)[:2] == [("parse", "Succeeded", 3), ("extract", "Running", 1)]
    # A late event of the first step (its third attempt) cannot move the status back.
    assert apply_event(at_extract, ev(0, JobState.RUNNING, 3)) == at_extract


def test_a_step_that_fails_for_good_fails_the_job_and_names_the_step() -> None:
    status = apply_events({"phase": "Queued"}, [*RUN[:3], ev(1, JobState.FAILED, 1, "ValueError")])
    assert status["phase"] == "Failed"
    assert phases(status) == [("parse", "Succeeded", 1), ("extract", "Failed", 1), ("store", "Pending", None)]
    assert status["steps"][1]["error"] == {"type": "ValueError", "message": "ValueError happened"}


def test_a_finish_that_names_no_step_lands_on_the_current_step() -> None:
    # cancel.lua does not know the steps: its Cancelled event is about the step the status is at.
    cancel = JobEvent(job_id="ns/x", uid="u", namespace="ns", pool="demo", state=JobState.CANCELLED, attempt=0)
    status = apply_events({"phase": "Queued"}, [*RUN[:2], cancel])
    assert phases(status)[1] == ("extract", "Cancelled", None)


def test_the_step_advance_is_narrated_as_the_previous_step_succeeding() -> None:
    before = apply_events({"phase": "Queued"}, RUN[:1])
    after = apply_event(before, RUN[1].model_copy(update={"message": "step 2/3 extract: parse succeeded"}))
    told = narration(before, after, "demo")
    assert told is not None and told.reason == "StepSucceeded" and not told.warning


@given(st.lists(st.sampled_from(RUN), max_size=12))
def test_folding_a_sequence_is_idempotent_whatever_is_replayed(replayed: list[JobEvent]) -> None:
    once = apply_events({"phase": "Queued"}, RUN)
    assert apply_events(once, replayed) == once


def test_the_resync_from_a_record_moves_the_status_to_the_records_step() -> None:
    status = apply_events({"phase": "Queued"}, RUN[:1])
    record = JobRecord(job_id="ns/x", uid="u", namespace="ns", pool="demo", handler="llm_extract",
                       state=JobState.RUNNING, attempts=1, step=StepRef(index=1, names=NAMES), updated_at=1.0)
    new = apply_record(status, record)
    assert phases(new)[:2] == [("parse", "Succeeded", 1), ("extract", "Running", 1)]
    assert apply_record(new, record) == new


# --------------------------------------------------------------------------- the spec


def test_a_job_has_a_handler_or_steps_never_both_nor_neither() -> None:
    with pytest.raises(ValidationError, match=HANDLER_OR_STEPS.replace("(", r"\(").replace(")", r"\)")):
        JobSpec.model_validate({"pool": "p", "handler": "h", "steps": [{"name": "a", "handler": "h"}]})
    with pytest.raises(ValidationError, match="exactly one"):
        JobSpec.model_validate({"pool": "p"})
    with pytest.raises(ValidationError, match="unique"):
        JobSpec.model_validate({"pool": "p", "steps": [{"name": "a", "handler": "h"}, {"name": "a", "handler": "g"}]})


def test_a_sequence_job_is_enqueued_as_its_first_step_with_each_steps_limits_over_the_jobs() -> None:
    spec = JobSpec.model_validate({
        "pool": "p", "input": {"text": "x"}, "timeoutSeconds": 60, "maxAttempts": 2,
        "retry": {"initialIntervalSeconds": 3},
        "steps": [{"name": "parse", "handler": "parse_document"},
                  {"name": "extract", "handler": "llm_extract", "timeoutSeconds": 5, "maxAttempts": 4,
                   "retry": {"backoffCoefficient": 3}}],
    })
    msg = message_for(TrackedJob(namespace="ns", name="x", uid="u", resource_version="1", spec={}, status={}), spec)
    assert (msg.handler, msg.input, msg.step, msg.timeout_seconds, msg.max_attempts) == (
        "parse_document", {"text": "x"}, 0, 60, 2)
    assert msg.steps is not None
    extract = msg.steps[1]
    assert (extract.timeout_seconds, extract.max_attempts) == (5, 4)
    assert extract.retry is not None
    assert (extract.retry.initial_interval_seconds, extract.retry.backoff_coefficient) == (3, 3)
    second = msg.at_step(1, {"sentences": []})
    assert (second.handler, second.timeout_seconds, second.max_attempts, second.step) == ("llm_extract", 5, 4, 1)
