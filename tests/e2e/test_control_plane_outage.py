"""The kube-apiserver stopped for 30 s mid-run (issue 14's fault suite, on the Job CR path).

Kubernetes is the control plane, not the data path: while the apiserver is away the worker pods
keep taking and finishing jobs from Redis (SDK jobs submitted during the outage finish during it),
the operator keeps running instead of crash-looping, and once the apiserver is back every Job CR's
status converges to what Redis recorded — each Job enqueued once, each run once.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import time

import pytest
import redis
from kubeworkers import Client, Registry
from kubeworkers.protocol import JobMessage, JobState, PoolKeys, job_id_of

from tests.e2e.operator_fixtures import OperatorProcess, list_jobs, pool_manifest, wait_for
from tests.support.cluster import Cluster, keep_clusters
from tests.support.pod_runner import PodRunner

pytestmark = pytest.mark.chaos

JOBS = 150
SDK_JOBS = 40
OUTAGE_SECONDS = 30.0


def mixed_jobs(rng: random.Random) -> str:
    items = [
        {"apiVersion": "workers.io/v1alpha1", "kind": "Job", "metadata": {"name": f"job-{i:04d}"},
         "spec": {"pool": "demo", "handler": "slow",
                  "input": {"seconds": round(rng.choice([0.2, 0.5, 1.0, 3.0, 8.0]), 1), "steps": 2}}}
        for i in range(JOBS)
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def phases(cluster: Cluster, namespace: str) -> collections.Counter[str]:
    return collections.Counter(j.get("status", {}).get("phase", "-") for j in list_jobs(cluster, namespace).values())


def stop_apiserver(cluster: Cluster) -> None:
    assert cluster.local is not None
    pid = cluster.local._alive("kube-apiserver")
    assert pid, "the tests' kube-apiserver is not running"
    os.kill(pid, signal.SIGKILL)  # a crash: SIGTERM's graceful drain of watches can take a minute
    wait_for(lambda: not cluster.local._alive("kube-apiserver"), timeout=30, every=0.2,  # type: ignore[union-attr]
             what="the kube-apiserver to exit")


def test_kube_apiserver_stopped_for_30s_workers_keep_working_and_every_status_converges(
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner, redis_url: str
) -> None:
    if cluster.local is None:
        pytest.skip("stopping the kube-apiserver needs the tests' own local control plane, not KUBEWORKERS_KUBECONFIG")
    rng = random.Random(20261202)
    cluster.apply(pool_manifest(concurrency=8, minReplicas=2, maxReplicas=3), namespace)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=mixed_jobs(rng))
    wait_for(lambda: phases(cluster, namespace)["Succeeded"] >= 20, timeout=180, every=1, what="20 jobs done")

    r = redis.Redis.from_url(redis_url)
    keys = PoolKeys(namespace, "demo")
    record_keys = [keys.record(job_id_of(namespace, f"job-{i:04d}")) for i in range(JOBS)]

    def finished_in_redis() -> int:
        states = r.pipeline(transaction=False)
        for key in record_keys:
            states.hget(key, "state")
        return sum(s == b"Succeeded" for s in states.execute())

    stop_apiserver(cluster)
    down_at = time.monotonic()
    try:
        finished_at_stop = finished_in_redis()
        assert finished_at_stop < JOBS, "the run ended before the outage: nothing was tested"
        with Client(redis_url, registry=Registry(), namespace=namespace) as sdk:
            sdk_ids = sdk.submit_many("demo", "slow", [{"seconds": 0.2, "steps": 1}] * SDK_JOBS)
            sdk_records = [sdk.wait(job_id, OUTAGE_SECONDS - 5) for job_id in sdk_ids]
        finished_during = finished_in_redis() - finished_at_stop
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
        assert operator.proc.poll() is None, "the operator exited while the kube-apiserver was away"
    finally:
        restart_at = time.monotonic()
        cluster.local.up(owned=not keep_clusters())  # type: ignore[union-attr]

    wait_for(lambda: phases(cluster, namespace)["Succeeded"] == JOBS, timeout=240, every=2,
             what=f"all {JOBS} Job statuses to converge to Succeeded")
    converged_in = time.monotonic() - restart_at

    assert [rec.state for rec in sdk_records] == [JobState.SUCCEEDED] * SDK_JOBS, "SDK jobs stalled in the outage"
    assert finished_during > 0, "no Job CR's work finished while the kube-apiserver was away"
    jobs = list_jobs(cluster, namespace)
    for name, job in jobs.items():
        status = job["status"]
        conditions = {c["type"]: c["status"] for c in status["conditions"]}
        assert status["attempts"] == 1, (name, status)  # no worker died: nothing ran twice
        assert status["completionTime"] and conditions.get("Complete") == "True", (name, status)
    assert int(r.hget(keys.stats, "enqueued") or 0) == JOBS + SDK_JOBS
    entries = [JobMessage.from_fields(fields) for stream in keys.streams for _, fields in r.xrange(stream)]
    assert not [j for j, n in collections.Counter(m.job_id for m in entries).items() if n > 1], "enqueued twice"
    assert operator.healthy()
    r.close()
    print(f"\napiserver outage {OUTAGE_SECONDS:.0f}s: {finished_during} Job CRs and {SDK_JOBS} SDK jobs finished "
          f"during it; statuses converged {converged_in:.1f}s after its restart began (its own start included)")
