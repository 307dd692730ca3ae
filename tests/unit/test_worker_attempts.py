"""How an attempt ends, as data: backoff arithmetic, failure reasons, size caps, the writes and their events."""

from __future__ import annotations

import json
import math

import pytest
from kubeworkers import attempts, errors
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
from kubeworkers.context import JobContext
from kubeworkers.protocol import DEFAULT_RETRY, JobError, JobEvent, JobState, RetryPolicy
from pydantic import BaseModel


def delivery(attempt: int = 2, max_attempts: int = 3) -> Delivery:
    return Delivery(index=2, entry="1-0", stream="s", job_id="ns/j", uid="u1", namespace="ns", pool="p",
                    handler="h", record="r", attempt=attempt, max_attempts=max_attempts)


def _every(initial: float, **more: float) -> RetryPolicy:
    return RetryPolicy(initial_interval_seconds=initial, **more)  # type: ignore[arg-type]


def test_backoff_doubles_per_attempt_with_jitter_between_half_and_all_of_it() -> None:
    assert [backoff(_every(1.0), a, 300, rand=lambda: 1.0) for a in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert [backoff(_every(1.0), a, 300, rand=lambda: 0.0) for a in (1, 2, 3)] == [0.5, 1.0, 2.0]


def test_backoff_is_capped_even_after_a_thousand_attempts() -> None:
    assert backoff(_every(10.0), 20, 60, rand=lambda: 1.0) == 60
    assert backoff(_every(10.0), 20, 60, rand=lambda: 0.0) == 30
    assert backoff(_every(1.0), 1000, 300, rand=lambda: 1.0) == 300
    assert backoff(_every(1.0, backoff_coefficient=100), 1000, 300, rand=lambda: 1.0) == 300


def test_backoff_follows_the_policys_coefficient_and_maximum_interval() -> None:
    policy = _every(0.5, backoff_coefficient=3.0, maximum_interval_seconds=10.0)
    assert [backoff(policy, a, 300, rand=lambda: 1.0) for a in (1, 2, 3, 4)] == [0.5, 1.5, 4.5, 10.0]
    assert backoff(_every(2.0, backoff_coefficient=1.0), 7, 300, rand=lambda: 1.0) == 2.0


def test_an_error_type_the_policy_names_is_not_retryable_and_says_so() -> None:
    policy = RetryPolicy(non_retryable_error_types=("ValueError",))
    error = JobError(type="ValueError", message="bad", retryable=True)
    seen = attempts.with_policy(error, policy)
    assert not seen.retryable and "non-retryable" in seen.message
    other = JobError(type="KeyError", message="k", retryable=True)
    assert attempts.with_policy(other, policy) == other


def test_a_job_policy_overrides_its_handlers_field_by_field() -> None:
    handler = RetryPolicy(initial_interval_seconds=5.0, backoff_coefficient=3.0).over(DEFAULT_RETRY)
    job = RetryPolicy(initial_interval_seconds=0.1, non_retryable_error_types=("Timeout",))
    merged = job.over(handler)
    assert (merged.initial_interval_seconds, merged.backoff_coefficient, merged.maximum_attempts,
            merged.non_retryable_error_types) == (0.1, 3.0, 3, ("Timeout",))


def test_failure_reason_says_whether_attempts_ran_out_or_retrying_could_not_help() -> None:
    err = JobError(type="RuntimeError", message="boom")
    assert failure_reason(err, 3, 3) == "RuntimeError: boom (attempt 3 of 3)"
    assert failure_reason(err.model_copy(update={"retryable": False}), 1, 3) == "RuntimeError: boom (not retryable)"


def test_finish_write_carries_a_succeeded_event_whose_output_the_script_adds() -> None:
    body = finish_write(delivery(), JobState.SUCCEEDED, "pod-a", 0.25, out_json='{"n": 1}')
    assert (body["kind"], body["state"], body["output"], body["duration"], body["ran"]) == (
        "finish", "Succeeded", '{"n": 1}', "0.250000", True
    )
    assert (body["stream"], body["entry"], body["job_id"]) == (2, "1-0", "ns/j")
    event = JobEvent.from_fields({"e": body["event"]})
    assert (event.job_id, event.uid, event.state, event.worker) == ("ns/j", "u1", "Succeeded", "pod-a")
    assert event.attempt == body["attempt"] == 2
    # The output crosses the wire once: settle.lua splices it into the event.
    assert (event.output, event.progress, event.error) == (None, 1.0, None)


def test_finish_write_of_a_failure_carries_the_error_and_the_dead_letter_reason() -> None:
    err = JobError(type="Timeout", message="timed out after 1s")
    body = finish_write(delivery(), JobState.FAILED, "pod-a", 1.0, error=err, message="m", dead_letter_reason="r",
                        ran=False)
    assert JobError.model_validate(json.loads(body["error"])) == err
    assert (body["dead_letter_reason"], body["message"], body["ran"]) == ("r", "m", False)
    assert JobEvent.from_fields({"e": body["event"]}).error == err


def test_retry_write_schedules_a_queued_event_with_the_error() -> None:
    body, message = retry_write(delivery(1, 3), "pod-a", JobError(type="E", message="m"), 2.5)
    assert message == "attempt 1/3 failed (E: m); retrying in 2.50s"
    event = JobEvent.from_fields({"e": body["event"]})
    assert event.state is JobState.QUEUED and event.error is not None and event.message == message
    assert float(body["due"]) > 0 and body["attempt"] == 1


def test_requeue_and_progress_writes() -> None:
    assert requeue_write(delivery(), "bye", uncount=True, owner="pod-a") == {
        "kind": "requeue", "stream": 2, "entry": "1-0", "job_id": "ns/j", "message": "bye", "uncount": True,
        "owner": "pod-a",
    }
    body = progress_write(delivery(), "pod-a", 0.5, "half")
    assert (body["stream"], body["entry"], body["job_id"], body["progress"], body["message"]) == (
        2, "1-0", "ns/j", "0.5", "half"
    )
    assert JobEvent.from_fields({"e": body["event"]}).progress == 0.5


def test_a_result_that_cannot_be_written_becomes_a_small_non_retryable_failure() -> None:
    body = attempts.unwritten_write(delivery(), "pod-a", "Connection closed by server." * 1000, 1.5)
    err = JobError.model_validate_json(body["error"])
    assert (body["state"], err.type, err.retryable) == ("Failed", "ResultNotWritten", False)
    assert body["dead_letter_reason"] and len(body["error"]) < 2 * errors.MESSAGE_LIMIT


class Out(BaseModel):
    n: int


@pytest.mark.parametrize(("result", "expected"), [(Out(n=1), {"n": 1}), ({"a": 1}, {"a": 1}), (None, None)])
def test_handler_results_become_json_data(result: object, expected: object) -> None:
    assert output_of(result) == expected


def recursive() -> dict[str, object]:
    d: dict[str, object] = {}
    d["d"] = d
    return d


def deep() -> list[object]:
    nested: list[object] = []
    for _ in range(100_000):
        nested = [nested]
    return nested


@pytest.mark.parametrize("result", [object(), {"x": object()}, {"x": math.nan}, [math.inf], recursive(), deep()],
                         ids=["object", "nested object", "nan", "infinity", "recursive", "too deep"])
def test_a_result_that_is_not_json_is_refused(result: object) -> None:
    with pytest.raises(attempts.InvalidOutputError, match="not JSON"):
        attempts.encode_output(result, 1024)


def test_an_output_over_the_limit_is_stored_as_a_marker_object_saying_so() -> None:
    out = attempts.encode_output({"blob": "x" * 5000}, 1024)
    marker = json.loads(out.json)
    assert marker["truncated"] is True and marker["limit_bytes"] == 1024 and marker["size_bytes"] > 5000
    assert marker["preview"].startswith('{"blob": "xxx') and len(marker["preview"]) == attempts.PREVIEW_CHARS
    assert "5" in out.note and "limit" in out.note
    assert attempts.encode_output({"small": 1}, 1024) == attempts.Output('{"small": 1}')


def test_long_messages_are_cut_visibly_to_the_limit() -> None:
    text = errors.cap_text("e" * 100_000)
    assert len(text) == errors.MESSAGE_LIMIT and text.endswith("[truncated: 100000 characters]")
    assert errors.cap_text("short") == "short"


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_an_exception_whose_str_raises_is_still_summarised() -> None:
    err = errors.job_error(Unprintable())
    assert err.type == "Unprintable" and "str() raised RuntimeError" in err.message


def context() -> JobContext:
    return JobContext(job_id="j", uid="u", namespace="ns", pool="p", handler="h", attempt=1, max_attempts=1,
                      worker="w", enqueued_at=0.0)


@pytest.mark.parametrize(("fraction", "message"), [(0.5, {"a": 1}), (0.5, 3), ("half", None), (math.nan, None),
                                                   (True, None)])
def test_progress_refuses_what_it_cannot_record_where_the_handler_calls_it(fraction: object, message: object) -> None:
    with pytest.raises(TypeError):
        context().progress(fraction, message)  # type: ignore[arg-type]


def test_progress_clamps_the_fraction_and_caps_the_message() -> None:
    ctx = context()
    ctx.progress(7, "m" * 10_000)
    assert ctx.last_progress is not None
    fraction, message = ctx.last_progress
    assert fraction == 1.0 and message is not None and len(message) == errors.MESSAGE_LIMIT
