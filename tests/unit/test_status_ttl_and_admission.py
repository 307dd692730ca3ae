"""TTL deadlines and Job admission: pure decisions of the Job path."""

from __future__ import annotations

from typing import Any

from kubeworkers.resources import JobSpec, WorkerPoolSpec
from kubeworkers_operator.model.admission import check_admission, message_for
from kubeworkers_operator.model.index import ClusterIndex, TrackedJob, TrackedPool
from kubeworkers_operator.model.job_status import set_condition, with_enqueued_condition
from kubeworkers_operator.model.ttl import TtlQueue, deadline


def job(name: str = "j", uid: str = "u1", status: dict[str, Any] | None = None, **spec: Any) -> TrackedJob:
    return TrackedJob("ns", name, uid, "1", {"pool": "p", "handler": "h", **spec}, status or {})


DONE = {"phase": "Succeeded", "completionTime": "2026-11-23T10:00:00Z"}


def test_finished_job_with_ttl_is_due_ttl_seconds_after_completion() -> None:
    j = job(status=DONE, ttlSecondsAfterFinished=30)
    d = deadline(j)
    assert d is not None
    assert d - deadline(job(status=DONE, ttlSecondsAfterFinished=0)) == 30  # type: ignore[operator]


def test_unfinished_or_ttl_less_jobs_are_never_due() -> None:
    assert deadline(job(status={"phase": "Running"}, ttlSecondsAfterFinished=1)) is None
    assert deadline(job(status=DONE)) is None


def test_ttl_queue_pops_due_jobs_once_in_deadline_order() -> None:
    q = TtlQueue()
    q.consider(job("late", status=DONE, ttlSecondsAfterFinished=100))
    q.consider(job("early", status=DONE, ttlSecondsAfterFinished=10))
    q.consider(job("early", status=DONE, ttlSecondsAfterFinished=10))  # seen again on a watch event
    t = deadline(job(status=DONE, ttlSecondsAfterFinished=0))
    assert t is not None
    assert q.pop_due(t + 5) == []
    assert q.pop_due(t + 50) == [("ns/early", "u1")]
    assert q.pop_due(t + 500) == [("ns/late", "u1")]
    assert q.pop_due(t + 5000) == []


def test_ttl_queue_forgets_deleted_jobs_and_tracks_a_recreated_namesake_separately() -> None:
    q = TtlQueue()
    q.consider(job("a", uid="old", status=DONE, ttlSecondsAfterFinished=1))
    q.forget("ns/a")
    q.consider(job("a", uid="new", status=DONE, ttlSecondsAfterFinished=1))
    assert q.pop_due(10**10) == [("ns/a", "new")]


def pool(handlers: list[str] | None) -> TrackedPool:
    spec = WorkerPoolSpec.model_validate({"image": "i", "imports": ["m"], "handlers": handlers})
    return TrackedPool("ns", "p", "pu", spec)


def test_a_jobs_spec_policies_travel_in_its_message() -> None:
    j = job(timeoutSeconds=60, softTimeoutSeconds=50, maxAttempts=4, expiresAfterSeconds=30,
            retry={"initialIntervalSeconds": 0.5, "backoffCoefficient": 3, "nonRetryableErrorTypes": ["KeyError"]})
    msg = message_for(j, JobSpec.model_validate(j.spec))
    assert (msg.timeout_seconds, msg.soft_timeout_seconds, msg.max_attempts) == (60, 50, 4)
    assert msg.retry is not None
    assert (msg.retry.initial_interval_seconds, msg.retry.backoff_coefficient, msg.retry.non_retryable_error_types,
            msg.retry.maximum_interval_seconds) == (0.5, 3.0, ("KeyError",), None)
    assert msg.expires_at == msg.enqueued_at + 30


def test_a_job_without_policies_leaves_them_to_its_handler() -> None:
    j = job()
    msg = message_for(j, JobSpec.model_validate(j.spec))
    assert (msg.soft_timeout_seconds, msg.retry, msg.expires_at) == (None, None, None)


def test_job_for_a_missing_pool_waits_with_reason_pool_not_found() -> None:
    j = job()
    reason, message = check_admission(j, JobSpec.model_validate(j.spec), None) or ("", "")
    assert reason == "PoolNotFound"
    assert "'p'" in message


def test_job_for_an_undeclared_handler_waits_with_reason_unknown_handler_naming_the_known_ones() -> None:
    j = job()
    reason, message = check_admission(j, JobSpec.model_validate(j.spec), pool(["a", "b"])) or ("", "")
    assert reason == "UnknownHandler"
    assert "a, b" in message


def test_job_is_admitted_when_the_pool_declares_its_handler_or_declares_none() -> None:
    j = job()
    spec = JobSpec.model_validate(j.spec)
    assert check_admission(j, spec, pool(["h"])) is None
    assert check_admission(j, spec, pool(None)) is None


def test_condition_transition_time_moves_only_when_the_status_flips() -> None:
    c1 = set_condition([], "Enqueued", "False", "PoolNotFound", "m", now=100.0)
    c2 = set_condition(c1, "Enqueued", "False", "UnknownHandler", "m2", now=200.0)
    assert c2[0]["lastTransitionTime"] == c1[0]["lastTransitionTime"]
    assert c2[0]["reason"] == "UnknownHandler"
    c3 = set_condition(c2, "Enqueued", "True", "Enqueued", "ok", now=300.0)
    assert c3[0]["lastTransitionTime"] != c1[0]["lastTransitionTime"]
    assert len(c3) == 1


def test_a_status_written_first_by_the_sync_still_says_enqueued() -> None:
    s = with_enqueued_condition({"phase": "Succeeded"}, "p")
    assert [(c["type"], c["status"]) for c in s["conditions"]] == [("Enqueued", "True")]
    assert with_enqueued_condition({"phase": "Pending"}, "p") == {"phase": "Pending"}


def test_index_never_rolls_back_to_an_older_resource_version() -> None:
    idx = ClusterIndex()
    body = {"metadata": {"namespace": "ns", "name": "j", "uid": "u", "resourceVersion": "10"},
            "spec": {}, "status": {"phase": "Succeeded"}}
    older = {"metadata": {"namespace": "ns", "name": "j", "uid": "u", "resourceVersion": "9"},
             "spec": {}, "status": {"phase": "Queued"}}
    idx.observe_job(body)
    assert idx.observe_job(older).status["phase"] == "Succeeded"
    recreated = {"metadata": {"namespace": "ns", "name": "j", "uid": "u2", "resourceVersion": "5"},
                 "spec": {}, "status": {}}
    assert idx.observe_job(recreated).uid == "u2"
