"""How an attempt ends, as data: backoff arithmetic, failure reasons, the writes and their events."""

from __future__ import annotations

import json

import pytest
from kubeworkers.attempts import (
    Delivery,
    backoff,
    failure_reason,
    finish_write,
    output_of,
    progress_write,
    requeue_write,
    retry_write,
)
from kubeworkers.protocol import JobError, JobEvent, JobMessage, JobState
from pydantic import BaseModel


def delivery(attempt: int = 2, max_attempts: int = 3) -> Delivery:
    msg = JobMessage(job_id="ns/j", uid="u1", namespace="ns", pool="p", handler="h")
    return Delivery(index=2, entry="1-0", stream="s", msg=msg, record="r", attempt=attempt,
                    max_attempts=max_attempts)


def test_backoff_doubles_per_attempt_with_jitter_between_half_and_all_of_it() -> None:
    assert [backoff(1.0, a, 300, rand=lambda: 1.0) for a in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert [backoff(1.0, a, 300, rand=lambda: 0.0) for a in (1, 2, 3)] == [0.5, 1.0, 2.0]


def test_backoff_is_capped() -> None:
    assert backoff(10.0, 20, 60, rand=lambda: 1.0) == 60
    assert backoff(10.0, 20, 60, rand=lambda: 0.0) == 30


def test_failure_reason_says_whether_attempts_ran_out_or_retrying_could_not_help() -> None:
    err = JobError(type="RuntimeError", message="boom")
    assert failure_reason(err, 3, 3) == "RuntimeError: boom (attempt 3 of 3)"
    assert failure_reason(err.model_copy(update={"retryable": False}), 1, 3) == "RuntimeError: boom (not retryable)"


def test_finish_write_carries_a_succeeded_event_with_the_output() -> None:
    body = finish_write(delivery(), JobState.SUCCEEDED, "pod-a", 0.25, out_json='{"n": 1}')
    assert (body["kind"], body["state"], body["output"], body["duration"]) == (
        "finish", "Succeeded", '{"n": 1}', "0.250000"
    )
    assert (body["stream"], body["entry"], body["job_id"]) == (2, "1-0", "ns/j")
    event = JobEvent.from_fields({"e": body["event"]})
    assert (event.job_id, event.uid, event.state, event.worker) == ("ns/j", "u1", "Succeeded", "pod-a")
    assert event.attempt == body["attempt"] == 2
    assert (event.output, event.progress, event.error) == ({"n": 1}, 1.0, None)


def test_finish_write_without_output_has_no_output_in_its_event() -> None:
    body = finish_write(delivery(), JobState.SUCCEEDED, "pod-a", 0.25, out_json="null")
    assert "output" not in json.loads(body["event"])


def test_finish_write_of_a_failure_carries_the_error_and_the_dead_letter_reason() -> None:
    err = JobError(type="Timeout", message="timed out after 1s")
    body = finish_write(delivery(), JobState.FAILED, "pod-a", 1.0, error=err, message="m", dead_letter_reason="r")
    assert JobError.model_validate(json.loads(body["error"])) == err
    assert (body["dead_letter_reason"], body["message"]) == ("r", "m")
    assert JobEvent.from_fields({"e": body["event"]}).error == err


def test_retry_write_schedules_a_queued_event_with_the_error() -> None:
    body, message = retry_write(delivery(1, 3), "pod-a", JobError(type="E", message="m"), 2.5)
    assert message == "attempt 1/3 failed (E: m); retrying in 2.50s"
    event = JobEvent.from_fields({"e": body["event"]})
    assert event.state is JobState.QUEUED and event.error is not None and event.message == message
    assert float(body["due"]) > 0


def test_requeue_and_progress_writes() -> None:
    assert requeue_write(delivery(), "bye", uncount=True) == {
        "kind": "requeue", "stream": 2, "entry": "1-0", "job_id": "ns/j", "message": "bye", "uncount": True
    }
    body = progress_write(delivery(), "pod-a", 0.5, "half")
    assert (body["stream"], body["entry"], body["job_id"], body["progress"], body["message"]) == (
        2, "1-0", "ns/j", "0.5", "half"
    )
    assert JobEvent.from_fields({"e": body["event"]}).progress == 0.5


class Out(BaseModel):
    n: int


@pytest.mark.parametrize(("result", "expected"), [(Out(n=1), {"n": 1}), ({"a": 1}, {"a": 1}), (None, None)])
def test_handler_results_become_json_data(result: object, expected: object) -> None:
    assert output_of(result) == expected


def test_a_result_that_is_not_json_data_is_refused() -> None:
    with pytest.raises(TypeError, match="must return"):
        output_of(object())
