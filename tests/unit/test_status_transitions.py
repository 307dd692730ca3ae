"""Every Job status transition is a pure function; none of them ever moves a finished phase."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from kubeworkers.protocol import JobError, JobEvent, JobRecord, JobState
from kubeworkers_operator.model import job_status
from kubeworkers_operator.model.job_status import Narration, narration

NOW = 1_800_000_000.0


def conditions(status: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    return [(c["type"], c["status"], c["reason"]) for c in (status or {}).get("conditions", [])]


def test_an_enqueued_job_becomes_queued_with_enqueued_true_and_its_stream_named() -> None:
    s = job_status.queued({}, pool="p", priority="high", now=NOW)
    assert s is not None
    assert (s["phase"], s["attempts"], s["queuedAt"]) == ("Queued", 0, job_status.rfc3339(NOW))
    assert conditions(s) == [("Enqueued", "True", "Enqueued")]
    assert "high-priority stream of pool p" in s["conditions"][0]["message"]


def test_a_job_that_waits_is_pending_with_the_reason_in_its_condition() -> None:
    s = job_status.pending({}, "PoolNotFound", "no pool", now=NOW)
    assert s is not None and s["phase"] == "Pending"
    assert conditions(s) == [("Enqueued", "False", "PoolNotFound")]
    assert job_status.enqueued_reason(s) == "PoolNotFound"
    assert job_status.enqueued_reason({}) is None
    # Still waiting, another reason: the same condition, updated.
    again = job_status.pending(s, "RedisUnavailable", "down", now=NOW + 5)
    assert conditions(again) == [("Enqueued", "False", "RedisUnavailable")]


def test_a_job_that_can_never_run_fails_with_the_reason_as_error_and_condition() -> None:
    s = job_status.rejected({"phase": "Pending"}, "UnknownHandler", "no such handler", now=NOW)
    assert s is not None
    assert (s["phase"], s["attempts"], s["completionTime"]) == ("Failed", 0, job_status.rfc3339(NOW))
    assert s["error"] == {"type": "UnknownHandler", "message": "no such handler"}
    assert conditions(s) == [("Enqueued", "False", "UnknownHandler"), ("Failed", "True", "UnknownHandler")]


def test_a_cancelled_job_that_never_reached_redis_is_cancelled_at_once() -> None:
    s = job_status.cancelled_before_enqueue({"phase": "Pending"}, now=NOW)
    assert s is not None
    assert (s["phase"], s["error"]["type"]) == ("Cancelled", "Cancelled")


def test_the_admission_path_leaves_a_job_the_status_sync_already_moved() -> None:
    running = {"phase": "Running", "attempts": 1}
    assert job_status.queued(running, pool="p", priority="normal", now=NOW) is None
    assert job_status.pending(running, "RedisUnavailable", "m", now=NOW) is None
    assert job_status.cancelled_before_enqueue(running, now=NOW) is None


def test_each_phase_change_deserves_one_event_worded_for_describe() -> None:
    queued = {"phase": "Queued", "attempts": 0}
    running = {"phase": "Running", "attempts": 1, "worker": "pod-a"}
    retry = {"phase": "Queued", "attempts": 1, "error": {"type": "IOError", "message": "flaky"}}
    failed = {"phase": "Failed", "attempts": 3, "error": {"type": "Timeout", "message": "after 1s"}}
    assert narration({}, queued, "p") == Narration("Queued", "enqueued on pool p")
    assert narration(queued, running, "p") == Narration("Started", "attempt 1 running on worker pod-a")
    assert narration(running, retry, "p") == Narration(
        "Retrying", "attempt 1 failed (IOError: flaky); retrying", warning=True)
    assert narration(running, failed, "p") == Narration(
        "Failed", "failed after 3 attempt(s): Timeout: after 1s", warning=True)
    done = {"phase": "Succeeded", "attempts": 1, "worker": "pod-a", "outputTruncated": True}
    assert narration(running, done, "p") == Narration(
        "Succeeded", "succeeded on attempt 1 on worker pod-a (output truncated in status)")
    assert narration({}, {"phase": "Cancelled", "error": {"message": "bye"}}, "p") == Narration("Cancelled", "bye")


def test_no_event_when_the_phase_stays_or_the_job_only_waits() -> None:
    running = {"phase": "Running", "attempts": 1}
    assert narration(running, {**running, "progress": {"fraction": 0.5}}, "p") is None
    assert narration({}, {"phase": "Pending"}, "p") is None  # the admission path posts its reason itself


# ---------------------------------------------------------------------- the invariant

finished_states = st.sampled_from([JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED])
any_state = st.sampled_from(list(JobState))
texts = st.text(max_size=20)


@st.composite
def finished_statuses(draw: st.DrawFn) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": draw(finished_states).value, "attempts": draw(st.integers(0, 5))}
    if draw(st.booleans()):
        status["error"] = {"type": draw(texts), "message": draw(texts)}
    if draw(st.booleans()):
        status["conditions"] = [{"type": "Enqueued", "status": "True", "reason": "Enqueued", "message": "m",
                                 "lastTransitionTime": "2026-11-23T10:00:00Z"}]
    return status


errors = st.none() | st.builds(JobError, type=texts, message=texts)
events = st.builds(
    JobEvent, job_id=st.just("ns/j"), uid=st.just("u1"), namespace=st.just("ns"), pool=st.just("p"),
    state=any_state, attempt=st.integers(0, 6), worker=st.none() | texts, at=st.floats(0, 2e9),
    progress=st.none() | st.floats(0, 1), message=st.none() | texts, error=errors,
)
records = st.builds(
    JobRecord, job_id=st.just("ns/j"), uid=st.just("u1"), namespace=st.just("ns"), pool=st.just("p"),
    handler=st.just("h"), state=any_state, attempts=st.integers(0, 6), worker=st.none() | texts,
    started_at=st.none() | st.floats(0, 2e9), finished_at=st.none() | st.floats(0, 2e9),
    progress=st.none() | st.floats(0, 1), message=st.none() | texts, error=errors,
)

Transition = Callable[[dict[str, Any]], dict[str, Any] | None]


@st.composite
def transitions(draw: st.DrawFn) -> Transition:
    reason, message = draw(texts), draw(texts)
    event, record = draw(events), draw(records)
    return draw(st.sampled_from([
        lambda s: job_status.queued(s, pool="p", priority="normal", now=NOW),
        lambda s: job_status.pending(s, reason, message, now=NOW),
        lambda s: job_status.rejected(s, reason, message, now=NOW),
        lambda s: job_status.cancelled_before_enqueue(s, now=NOW),
        lambda s: job_status.apply_event(s, event),
        lambda s: job_status.apply_record(s, record),
        lambda s: job_status.with_enqueued_condition(s, "p"),
    ]))


@given(finished_statuses(), st.lists(transitions(), min_size=1, max_size=8))
def test_no_transition_ever_moves_a_finished_phase(status: dict[str, Any], steps: list[Transition]) -> None:
    current = dict(status)
    for step in steps:
        after = step(current)
        if after is None:
            continue  # the transition declined: the writer leaves the status alone
        assert after["phase"] == status["phase"]
        current = after


def test_a_delayed_job_queued_says_until_when_in_its_status_and_condition() -> None:
    s = job_status.queued({}, pool="p", priority="normal", now=NOW, not_before=NOW + 3600)
    assert s is not None
    assert (s["phase"], s["notBefore"]) == ("Queued", job_status.rfc3339(NOW + 3600))
    [cond] = [c for c in s["conditions"] if c["type"] == job_status.ENQUEUED]
    assert cond["reason"] == job_status.DELAYED and s["notBefore"] in cond["message"]


def test_a_not_before_already_past_is_an_ordinary_queued_job() -> None:
    s = job_status.queued({}, pool="p", priority="normal", now=NOW, not_before=NOW - 5)
    assert s is not None and "notBefore" not in s
    [cond] = [c for c in s["conditions"] if c["type"] == job_status.ENQUEUED]
    assert cond["reason"] == "Enqueued"
