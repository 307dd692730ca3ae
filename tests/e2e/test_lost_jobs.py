"""A Job whose job nothing in Redis can run any more ends Failed with a reason and an Event, instead
of staying Queued (and its record kept) for ever (issue 17, defect 2)."""

from __future__ import annotations

import redis
from kubeworkers.protocol import PoolKeys

from tests.e2e.operator_fixtures import OperatorProcess, get_job, pool_manifest, wait_for
from tests.e2e.test_job_lifecycle import events_for
from tests.support.cluster import Cluster

JOB = """
apiVersion: workers.io/v1alpha1
kind: Job
metadata: {name: lost}
spec: {pool: idle, handler: slow, input: {seconds: 1}}
"""


def test_a_queued_job_whose_stream_entry_vanished_is_failed_as_lost_with_an_event(
    cluster: Cluster, namespace: str, operator: OperatorProcess, redis_url: str
) -> None:
    operator.stop()
    operator.extra_args = ["--lost-job-age", "2"]
    operator.start()
    # No workers: the job stays Queued until something happens to it.
    cluster.apply(pool_manifest("idle", autoscaling={"enabled": False}, replicas=0), namespace)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=JOB)
    wait_for(lambda: (get_job(cluster, namespace, "lost") or {}).get("status", {}).get("phase") == "Queued",
             timeout=60, what="the Job Queued")
    r = redis.Redis.from_url(redis_url)
    keys = PoolKeys(namespace, "idle")
    entry = r.hget(keys.record(f"{namespace}/lost"), "entry")
    assert entry and r.xdel(keys.stream("normal"), entry) == 1  # Redis lost the entry (a hand-made XDEL)

    def failed() -> bool:
        job = get_job(cluster, namespace, "lost") or {}
        return bool(job.get("status", {}).get("phase") == "Failed")

    wait_for(failed, timeout=90, what="the lost job Failed")
    status = (get_job(cluster, namespace, "lost") or {})["status"]
    assert status["error"]["type"] == "JobLost"
    assert "Queued for over 2" in status["error"]["message"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Failed"]["status"] == "True" and conditions["Failed"]["reason"] == "JobLost"
    wait_for(lambda: any(reason == "Failed" and "JobLost" in message
                         for reason, message in events_for(cluster, namespace, "lost")),
             timeout=30, what="a Failed Event naming JobLost")
    assert r.xlen(keys.dead_letter) == 1  # replayable
    assert r.ttl(keys.record(f"{namespace}/lost")) > 0
    assert operator.metric_sum("kubeworkers_operator_lost_jobs_failed_total") == 1
