"""Two operator replicas: the leader SIGKILLed while 300 Job CRs are in flight and the pool scales;
the standby leads within 15 s, every Job Succeeds, and nothing is enqueued or run twice.

Half of the Jobs are created *after* the kill, while no replica leads: the standby saw them only
through its watch (it acts on nothing while standing by) and must enqueue them when it takes over.
"""

from __future__ import annotations

import collections
import json
import signal
import time
from collections.abc import Iterator

import pytest
import redis
from kubeworkers.protocol import PoolKeys

from tests.e2e.operator_fixtures import LOG_ROOT, OperatorProcess, list_jobs, pool_manifest, wait_for
from tests.support.cluster import Cluster
from tests.support.pod_runner import PodRunner

JOBS = 300
TAKEOVER_LIMIT_SECONDS = 15.0


def jobs_yaml(first: int, count: int) -> str:
    items = [
        {"apiVersion": "workers.io/v1alpha1", "kind": "Job", "metadata": {"name": f"job-{i:04d}"},
         "spec": {"pool": "demo", "handler": "slow", "input": {"seconds": 2.0, "steps": 2, "n": i}}}
        for i in range(first, first + count)
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def phases(cluster: Cluster, namespace: str) -> collections.Counter[str]:
    return collections.Counter(j.get("status", {}).get("phase", "-") for j in list_jobs(cluster, namespace).values())


@pytest.fixture
def replicas(cluster: Cluster, crds: None, namespace: str, redis_url: str, redis_secret: str,  # noqa: PLR0917
             request: pytest.FixtureRequest) -> Iterator[tuple[OperatorProcess, OperatorProcess]]:
    """operator-a started first (it leads), then operator-b (it stands by), sharing one Lease."""
    log_dir = LOG_ROOT / request.node.name
    a = OperatorProcess(cluster, redis_url, [namespace], log_dir / "a", name="operator-a").start()
    wait_for(lambda: a.role() == "leader", timeout=30, what="operator-a to lead")
    b = OperatorProcess(cluster, redis_url, [namespace], log_dir / "b", name="operator-b").start()
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture
def pods(cluster: Cluster, namespace: str, request: pytest.FixtureRequest) -> Iterator[PodRunner]:
    runner = PodRunner(cluster, namespace, "workers.io/pool", extra_env={"KUBEWORKERS_METRICS_PORT": "0"},
                       log_dir=LOG_ROOT / request.node.name / "pods")
    with runner:
        yield runner


def test_standby_leads_within_15_s_of_the_leaders_sigkill_and_every_job_succeeds_once(
    cluster: Cluster, namespace: str, redis_url: str, replicas: tuple[OperatorProcess, OperatorProcess],
    pods: PodRunner,
) -> None:
    a, b = replicas
    assert b.role() == "standby"
    cluster.apply(pool_manifest(concurrency=4, minReplicas=0, maxReplicas=3), namespace)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=jobs_yaml(0, JOBS // 2))

    # Kill while Jobs are queued, running and done, and the autoscaler is still growing the pool.
    wait_for(lambda: phases(cluster, namespace)["Succeeded"] >= 20, timeout=180, what="20 jobs done")
    scaled_by_a = a.metric_sum("kubeworkers_autoscaler_scale_events_total")
    # The standby has done nothing but watch: no enqueue, no status write, no scaling.
    assert b.metric_sum("kubeworkers_operator_jobs_enqueued_total") == 0
    assert b.metric_sum("kubeworkers_operator_job_status_patches_total") == 0
    assert b.metric_sum("kubeworkers_autoscaler_scale_events_total") == 0
    assert b.metrics()['kubeworkers_operator_leader{identity="operator-b"}'] == 0
    assert a.metrics()['kubeworkers_operator_leader{identity="operator-a"}'] == 1
    killed_at = time.monotonic()
    a.kill(signal.SIGKILL)
    # The other half arrives while nobody leads: only the standby's watch sees these Jobs.
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=jobs_yaml(JOBS // 2, JOBS - JOBS // 2))
    assert phases(cluster, namespace)["Succeeded"] < JOBS // 2, "the first half finished before the kill"

    wait_for(lambda: b.role() == "leader", timeout=30, every=0.2, what="operator-b to lead")
    took_over_in = time.monotonic() - killed_at
    assert took_over_in <= TAKEOVER_LIMIT_SECONDS, f"the standby led {took_over_in:.1f} s after the kill"
    assert b.metrics()['kubeworkers_operator_leader{identity="operator-b"}'] == 1

    # The new leader acts on pool changes: more room, and its autoscaler grows the pool into it.
    cluster.kubectl("patch", "workerpool", "demo", "-n", namespace, "--type", "merge", "-p",
                    json.dumps({"spec": {"maxReplicas": 6}}))
    wait_for(lambda: b.metric_sum("kubeworkers_autoscaler_scale_events_total") >= 1, timeout=60,
             what="operator-b's autoscaler to scale the pool")

    # The killed pod comes back (same name, as a restarted container would) and stands by.
    a.start()
    time.sleep(3)  # more than a Lease read: it has looked and found operator-b holding it
    assert (a.role(), b.role()) == ("standby", "leader")

    wait_for(lambda: phases(cluster, namespace)["Succeeded"] == JOBS, timeout=300, every=2,
             what=f"all {JOBS} jobs Succeeded")
    jobs = list_jobs(cluster, namespace)
    for name, job in jobs.items():
        status = job["status"]
        assert status["output"] == {"slept": 2.0}, (name, status)
        # Never run twice: the failover handed nothing to a second worker.
        assert status["attempts"] == 1, (name, status)
    r = redis.Redis.from_url(redis_url)
    keys = PoolKeys(namespace, "demo")
    # enqueue.lua counts a job only when it writes it: 300 Jobs, 300 enqueues, whoever did them.
    assert int(r.hget(keys.stats, "enqueued") or 0) == JOBS
    enqueued_by_b = b.metric_sum("kubeworkers_operator_jobs_enqueued_total")
    assert enqueued_by_b >= JOBS - JOBS // 2, "the Jobs created while nobody led were not enqueued by the new leader"
    assert a.metric_sum("kubeworkers_operator_jobs_enqueued_total") == 0  # the restarted a stood by
    # The pool was scaled by a before the kill and by b after it, never by the restarted standby.
    assert scaled_by_a >= 1
    assert a.metric_sum("kubeworkers_autoscaler_scale_events_total") == 0
    lease = json.loads(cluster.kubectl("get", "lease", "kubeworkers-operator", "-n", namespace, "-o", "json").stdout)
    assert lease["spec"]["holderIdentity"] == "operator-b"
    assert lease["spec"]["leaseTransitions"] == 1
    print(f"\nstandby led {took_over_in:.1f} s after the leader's SIGKILL; it enqueued {enqueued_by_b:.0f} Jobs")

