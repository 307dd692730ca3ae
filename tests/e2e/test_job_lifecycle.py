"""A Job's life on the real control plane: applied, enqueued, run by a worker process, status copied back."""

from __future__ import annotations

import json
import time

import redis
from kubeworkers.protocol import PoolKeys

from tests.e2e.operator_fixtures import REPO, OperatorProcess, get_job, pool_manifest, wait_for
from tests.support.cluster import Cluster
from tests.support.pod_runner import PodRunner

EXAMPLES = REPO / "examples"


def job_yaml(name: str, handler: str, input: dict[str, object], pool: str = "demo", **spec: object) -> str:
    body = {"pool": pool, "handler": handler, "input": input, **spec}
    return json.dumps({"apiVersion": "workers.io/v1alpha1", "kind": "Job", "metadata": {"name": name},
                       "spec": body})


def phase_of(cluster: Cluster, namespace: str, name: str) -> str | None:
    job = get_job(cluster, namespace, name)
    return None if job is None else job.get("status", {}).get("phase")


def wait_phase(cluster: Cluster, namespace: str, name: str, phases: set[str], timeout: float = 90) -> dict:
    def reached() -> dict | None:
        job = get_job(cluster, namespace, name)
        if job is not None and job.get("status", {}).get("phase") in phases:
            return job
        return None

    return wait_for(reached, timeout=timeout, what=f"job {name} in {phases}")  # type: ignore[no-any-return]


def events_for(cluster: Cluster, namespace: str, name: str) -> list[tuple[str, str]]:
    out = cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                          f"involvedObject.name={name},involvedObject.kind=Job", "-o", "json").stdout
    return [(e["reason"], e["message"]) for e in json.loads(out)["items"]]


def test_applied_example_job_succeeds_with_its_output_in_status(
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "workerpool.yaml"),
                    "-f", str(EXAMPLES / "job.yaml"))
    job = wait_phase(cluster, namespace, "word-count", {"Succeeded", "Failed"})
    status = job["status"]
    assert status["phase"] == "Succeeded", status
    assert status["output"]["words"] == 11
    assert status["output"]["counts"]["the"] == 3
    assert status["attempts"] == 1
    assert status["worker"].startswith("demo-workers-")
    assert status["outputTruncated"] is False
    table = cluster.kubectl("get", "jobs.workers.io", "-n", namespace).stdout
    assert "word-count" in table and "Succeeded" in table
    # One Event per phase the Job's status shows. A short job's Running and Succeeded often reach
    # the operator in one batch and become one write (docs/operations.md), so "Started" is not
    # promised here; the long jobs below show it.
    assert_events(cluster, namespace, "word-count", {"Queued", "Succeeded"})


def assert_events(cluster: Cluster, namespace: str, name: str, reasons: set[str]) -> list[tuple[str, str]]:
    """Wait until the Job's Events include every reason in ``reasons`` (Events are posted asynchronously)."""

    def seen() -> list[tuple[str, str]] | None:
        events = events_for(cluster, namespace, name)
        return events if reasons <= {r for r, _ in events} else None

    return wait_for(seen, timeout=30, what=f"events {reasons} on {name}")  # type: ignore[no-any-return]


def test_failing_handler_ends_failed_with_the_error_after_its_attempts(
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner
) -> None:
    cluster.apply(pool_manifest(), namespace)
    cluster.apply(job_yaml("doomed", "fail", {"message": "disk on fire"}), namespace)
    status = wait_phase(cluster, namespace, "doomed", {"Succeeded", "Failed", "Cancelled"})["status"]
    assert status["phase"] == "Failed"
    assert status["error"]["type"] == "RuntimeError"
    assert "disk on fire" in status["error"]["message"]
    assert status["attempts"] == 2  # the handler's max_attempts
    events = assert_events(cluster, namespace, "doomed", {"Queued", "Started", "Failed"})
    assert any("disk on fire" in msg for reason, msg in events if reason == "Failed")


def test_job_over_its_timeout_fails_with_a_timeout_error(
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner
) -> None:
    cluster.apply(pool_manifest(), namespace)
    cluster.apply(job_yaml("too-slow", "slow", {"seconds": 30, "steps": 3}, timeoutSeconds=1), namespace)
    status = wait_phase(cluster, namespace, "too-slow", {"Succeeded", "Failed", "Cancelled"})["status"]
    assert status["phase"] == "Failed"
    assert "timeout" in status["error"]["type"].lower(), status["error"]


def test_a_spec_retry_policy_fails_a_non_retryable_error_type_at_once(
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner
) -> None:
    cluster.apply(pool_manifest(), namespace)
    cluster.apply(job_yaml("no-retry", "fail", {"message": "bad input"}, maxAttempts=5,
                           retry={"initialIntervalSeconds": 0.1, "nonRetryableErrorTypes": ["RuntimeError"]}),
                  namespace)
    status = wait_phase(cluster, namespace, "no-retry", {"Succeeded", "Failed", "Cancelled"})["status"]
    assert status["phase"] == "Failed"
    assert status["error"]["type"] == "RuntimeError"
    assert status["attempts"] == 1  # not the 5 the spec allows: the type is non-retryable


def test_transient_failure_is_retried_and_succeeds_on_attempt_two(
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner
) -> None:
    cluster.apply(pool_manifest(), namespace)
    cluster.apply(job_yaml("wobbly", "flaky", {"value": 7}), namespace)
    status = wait_phase(cluster, namespace, "wobbly", {"Succeeded", "Failed", "Cancelled"})["status"]
    assert status["phase"] == "Succeeded"
    assert status["attempts"] == 2
    assert status["output"] == {"value": 7, "attempt": 2}


def test_cancel_true_stops_a_running_job(
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner
) -> None:
    cluster.apply(pool_manifest(), namespace)
    cluster.apply(job_yaml("long", "slow", {"seconds": 120, "steps": 120}), namespace)
    wait_phase(cluster, namespace, "long", {"Running"})
    cluster.kubectl("patch", "jobs.workers.io", "long", "-n", namespace, "--type=merge",
                    "-p", '{"spec": {"cancel": true}}')
    status = wait_phase(cluster, namespace, "long", {"Succeeded", "Failed", "Cancelled"}, timeout=60)["status"]
    assert status["phase"] == "Cancelled"
    assert_events(cluster, namespace, "long", {"Started", "CancelRequested", "Cancelled"})


def test_cancel_true_on_a_queued_job_cancels_it_before_it_runs(
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner
) -> None:
    # No pool yet: the job waits in Pending, then is cancelled without ever reaching a worker.
    cluster.apply(job_yaml("never", "word_count", {"text": "x"}), namespace)
    wait_phase(cluster, namespace, "never", {"Pending"})
    cluster.kubectl("patch", "jobs.workers.io", "never", "-n", namespace, "--type=merge",
                    "-p", '{"spec": {"cancel": true}}')
    status = wait_phase(cluster, namespace, "never", {"Succeeded", "Failed", "Cancelled"}, timeout=60)["status"]
    assert status["phase"] == "Cancelled"


def test_finished_job_is_deleted_with_its_redis_record_after_its_ttl(
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner, redis_url: str
) -> None:

    cluster.apply(pool_manifest(), namespace)
    cluster.apply(job_yaml("ephemeral", "word_count", {"text": "a b"}, ttlSecondsAfterFinished=2), namespace)
    wait_phase(cluster, namespace, "ephemeral", {"Succeeded"})
    r = redis.Redis.from_url(redis_url)
    record_key = PoolKeys(namespace, "demo").record(f"{namespace}/ephemeral")
    assert r.exists(record_key)
    wait_for(lambda: get_job(cluster, namespace, "ephemeral") is None, timeout=30, what="TTL deletion")
    wait_for(lambda: not r.exists(record_key), timeout=10, what="record removal")
    assert operator.metric_sum("kubeworkers_operator_jobs_ttl_deleted_total") == 1


def test_job_for_a_missing_pool_waits_with_a_condition_and_runs_when_the_pool_appears(
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner
) -> None:
    cluster.apply(job_yaml("early", "word_count", {"text": "one two"}), namespace)
    job = wait_phase(cluster, namespace, "early", {"Pending"})
    (cond,) = [c for c in job["status"]["conditions"] if c["type"] == "Enqueued"]
    assert (cond["status"], cond["reason"]) == ("False", "PoolNotFound")
    assert_events(cluster, namespace, "early", {"PoolNotFound"})
    cluster.apply(pool_manifest(), namespace)
    status = wait_phase(cluster, namespace, "early", {"Succeeded", "Failed"})["status"]
    assert status["phase"] == "Succeeded"
    assert status["output"]["words"] == 2


def test_job_for_a_handler_the_pool_does_not_declare_fails_at_once_with_a_condition_and_an_event(
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner
) -> None:
    cluster.apply(pool_manifest(), namespace)
    cluster.apply(job_yaml("typo", "wordcount", {"text": "x"}), namespace)
    job = wait_phase(cluster, namespace, "typo", {"Failed", "Pending", "Queued", "Succeeded"})
    assert job["status"]["phase"] == "Failed"
    assert job["status"]["error"]["type"] == "UnknownHandler"
    assert job["status"]["attempts"] == 0
    (cond,) = [c for c in job["status"]["conditions"] if c["type"] == "Enqueued"]
    assert (cond["status"], cond["reason"]) == ("False", "UnknownHandler")
    assert "wordcount" in cond["message"]
    events = assert_events(cluster, namespace, "typo", {"UnknownHandler"})
    assert any("word_count" in msg for _, msg in events)
    assert operator.healthy()


def test_deleting_a_running_job_cancels_it_in_redis(
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner, redis_url: str
) -> None:

    cluster.apply(pool_manifest(), namespace)
    cluster.apply(job_yaml("doomed-run", "slow", {"seconds": 120, "steps": 120}), namespace)
    wait_phase(cluster, namespace, "doomed-run", {"Running"})
    cluster.kubectl("delete", "jobs.workers.io", "doomed-run", "-n", namespace)
    r = redis.Redis.from_url(redis_url)
    key = PoolKeys(namespace, "demo").record(f"{namespace}/doomed-run")

    def cancelled() -> bool:
        state = r.hget(key, "state")
        return state is None or state == b"Cancelled"

    wait_for(cancelled, timeout=60, what="the deleted job's record to be cancelled")


def test_progress_shows_in_status_while_running_and_is_written_less_often_than_reported(
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner
) -> None:
    cluster.apply(pool_manifest(), namespace)
    cluster.apply(job_yaml("steady", "slow", {"seconds": 6, "steps": 30}), namespace)

    def midway() -> dict | None:
        job = get_job(cluster, namespace, "steady")
        progress = (job or {}).get("status", {}).get("progress") or {}
        running = (job or {}).get("status", {}).get("phase") == "Running"
        return job if running and 0 < progress.get("fraction", 0) < 1 else None

    job = wait_for(midway, timeout=90, what="a Running job with partial progress")
    assert job["status"]["progress"]["message"].startswith("step ")
    status = wait_phase(cluster, namespace, "steady", {"Succeeded", "Failed"})["status"]
    assert status["phase"] == "Succeeded"
    assert status["progress"]["fraction"] == 1.0
    # 30 progress reports + Running + Succeeded reached the operator; far fewer became writes.
    consumed = operator.metric_sum("kubeworkers_operator_events_consumed_total")
    writes = operator.metric_sum("kubeworkers_operator_job_status_patches_total")
    assert consumed >= 32
    assert writes <= consumed / 2


def test_kubectl_wait_for_condition_complete_or_failed_ends_with_the_job(
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner
) -> None:
    cluster.apply(pool_manifest(), namespace)
    cluster.apply(job_yaml("fine", "word_count", {"text": "a b c"}), namespace)
    cluster.apply(job_yaml("broken", "fail", {"message": "no"}), namespace)
    cluster.apply(job_yaml("stopped", "slow", {"seconds": 120, "steps": 120}), namespace)
    cluster.kubectl("wait", "--for=condition=Complete", "jobs.workers.io/fine", "-n", namespace, "--timeout=90s",
                    timeout=100)
    cluster.kubectl("wait", "--for=condition=Failed", "jobs.workers.io/broken", "-n", namespace, "--timeout=90s",
                    timeout=100)
    wait_phase(cluster, namespace, "stopped", {"Running"})
    cluster.kubectl("patch", "jobs.workers.io", "stopped", "-n", namespace, "--type=merge",
                    "-p", '{"spec": {"cancel": true}}')
    cluster.kubectl("wait", "--for=condition=Failed", "jobs.workers.io/stopped", "-n", namespace, "--timeout=60s",
                    timeout=70)
    conditions = {name: {c["type"]: (c["status"], c["reason"]) for c in get_job(cluster, namespace, name)["status"][
        "conditions"]} for name in ("fine", "broken", "stopped")}  # type: ignore[index]
    assert conditions["fine"]["Complete"] == ("True", "Succeeded") and "Failed" not in conditions["fine"]
    assert conditions["broken"]["Failed"] == ("True", "RuntimeError") and "Complete" not in conditions["broken"]
    assert conditions["stopped"]["Failed"] == ("True", "Cancelled")  # a cancel is told apart by its reason
    job = get_job(cluster, namespace, "fine")
    assert job is not None and job["status"]["observedGeneration"] == job["metadata"]["generation"]


def test_ttl_edited_after_the_job_finished_is_honoured(
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner
) -> None:
    cluster.apply(pool_manifest(), namespace)
    cluster.apply(job_yaml("kept", "word_count", {"text": "a b"}, ttlSecondsAfterFinished=86400), namespace)
    wait_phase(cluster, namespace, "kept", {"Succeeded"})
    cluster.kubectl("patch", "jobs.workers.io", "kept", "-n", namespace, "--type=merge",
                    "-p", '{"spec": {"ttlSecondsAfterFinished": 1}}')
    wait_for(lambda: get_job(cluster, namespace, "kept") is None, timeout=30, what="TTL deletion after the edit")



def test_a_job_whose_worker_died_shows_requeued_then_runs_again_with_its_last_start_time(
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner
) -> None:
    cluster.apply(pool_manifest(leaseSeconds=6), namespace)
    cluster.apply(job_yaml("orphaned", "slow", {"seconds": 8, "steps": 8}, maxAttempts=3), namespace)
    first = wait_phase(cluster, namespace, "orphaned", {"Running"})["status"]
    # startTime has one-second resolution, and the killed container's restart can reclaim and start
    # the job again at once: kill only once the first attempt is over a second old, so that the last
    # attempt's startTime is a later second than the first's (seen once: both at the same second).
    time.sleep(1.1)
    demo_pool.kill(first["worker"])  # SIGKILL: no hand-back
    events = assert_events(cluster, namespace, "orphaned", {"Requeued"})
    # Whichever comes first hands the job back, each with its true reason: the reaper after the
    # lease, or the killed container's restart (same pod name) reclaiming what it held.
    requeues = [message for reason, message in events if reason == "Requeued"]
    assert any("lease expired" in m or f"its worker {first['worker']} restarted" in m for m in requeues), requeues
    status = wait_phase(cluster, namespace, "orphaned", {"Succeeded", "Failed"}, timeout=120)["status"]
    assert (status["phase"], status["attempts"]) == ("Succeeded", 2), status
    assert status["startTime"] > first["startTime"]  # the last attempt's start, as the CRD says
    (enqueued,) = [c for c in status["conditions"] if c["type"] == "Enqueued"]
    assert enqueued["reason"] == "Requeued"
