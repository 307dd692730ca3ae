"""A delayed Job (``spec.notBefore``) on the real control plane: it waits held by no worker, its
pool stays at zero while the job is far off, and it starts within a second of its time."""

from __future__ import annotations

import datetime
import math
import time

from kubeworkers import connection
from kubeworkers.protocol import JobEvent, JobRecord, JobState, PoolKeys
from kubeworkers_operator.autoscaling.signals import DELAYED_KEEP_WARM_SECONDS

from tests.e2e.operator_fixtures import OperatorProcess, get_job, pool_manifest, wait_for
from tests.e2e.test_job_lifecycle import job_yaml, wait_phase
from tests.support.cluster import Cluster
from tests.support.pod_runner import PodRunner

#: Seconds from creation to notBefore: room to see the pool stay at zero while the job is due
#: later than the keep-warm horizon (then one worker is kept warm, then the lead counts it).
DELAY_SECONDS = DELAYED_KEEP_WARM_SECONDS + 15


def get_deployment(cluster: Cluster, namespace: str) -> bool:
    return cluster.kubectl("get", "deployment", "demo-workers", "-n", namespace, check=False).returncode == 0


def replicas(cluster: Cluster, namespace: str) -> int:
    out = cluster.kubectl("get", "deployment", "demo-workers", "-n", namespace, "-o",
                          "jsonpath={.spec.replicas}", check=False).stdout.strip()
    return int(out or 0)


def test_delayed_job_starts_within_1s_of_not_before_with_no_worker_activity_before_it(
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner, redis_url: str
) -> None:
    # Short idle-before-zero: the test starts from a pool at zero, as a quiet pool would be.
    cluster.apply(pool_manifest(autoscaling={"idleSecondsBeforeZero": 2, "scaleDownStabilizationSeconds": 0}),
                  namespace)
    # A new pool is woken once by the autoscaler's first tick; wait until it has gone back to zero
    # and stayed there for a few ticks.
    zero_since: list[float] = []

    def settled_at_zero() -> bool:
        if not get_deployment(cluster, namespace) or replicas(cluster, namespace) != 0:
            zero_since.clear()
            return False
        zero_since[:1] = zero_since[:1] or [time.monotonic()]
        return time.monotonic() - zero_since[0] >= 6

    wait_for(settled_at_zero, timeout=90, what="the pool's Deployment settled at zero")
    not_before = math.ceil(time.time()) + DELAY_SECONDS
    stamp = datetime.datetime.fromtimestamp(not_before, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    cluster.apply(job_yaml("later", "word_count", {"text": "a b c"}, notBefore=stamp), namespace)

    status = wait_for(lambda: (get_job(cluster, namespace, "later") or {}).get("status", {}).get("notBefore"),
                      timeout=30, what="status.notBefore")
    assert status == stamp
    job = get_job(cluster, namespace, "later")
    assert job is not None and job["status"]["phase"] == "Queued"
    [enqueued] = [c for c in job["status"]["conditions"] if c["type"] == "Enqueued"]
    assert enqueued["reason"] == "Delayed" and stamp in enqueued["message"]

    r = connection.connect(redis_url)
    record_key = PoolKeys(namespace, "demo").record(f"{namespace}/later")
    try:
        # While it is due later than the keep-warm horizon: no worker pod at all.
        while time.time() < not_before - DELAYED_KEEP_WARM_SECONDS - 1:
            assert replicas(cluster, namespace) == 0
            time.sleep(0.5)
        # Then a worker comes up, and still nothing takes the job before its time.
        while time.time() < not_before - 0.3:
            record = JobRecord.from_hash(r.hgetall(record_key))  # type: ignore[arg-type]
            assert record.state is JobState.QUEUED and record.attempts == 0, record
            time.sleep(0.1)
        assert replicas(cluster, namespace) >= 1, "no worker was up by the job's time"

        done = wait_phase(cluster, namespace, "later", {"Succeeded", "Failed"}, timeout=60)
        assert done["status"]["phase"] == "Succeeded", done["status"]
        record = JobRecord.from_hash(r.hgetall(record_key))  # type: ignore[arg-type]
        assert record.started_at is not None and record.attempts == 1
        assert not_before <= record.started_at < not_before + 1.0, record.started_at - not_before
        running = [JobEvent.from_fields(f) for _, f in r.xrange(PoolKeys(namespace, "demo").events)]  # type: ignore[union-attr]
        first = min(e.at for e in running if e.job_id == f"{namespace}/later" and e.state is JobState.RUNNING)
        assert first >= not_before
    finally:
        r.close()
