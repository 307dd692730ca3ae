"""The operator killed mid-run loses nothing and enqueues nothing twice."""

from __future__ import annotations

import collections
import json
import signal
import time

import redis
from kubeworkers import Client
from kubeworkers.protocol import EVENTS_MAXLEN, JobEvent, JobMessage, JobState, PoolKeys

from tests.e2e.operator_fixtures import OperatorProcess, list_jobs, pool_manifest, wait_for
from tests.support.cluster import Cluster
from tests.support.pod_runner import PodRunner

JOBS = 200


def many_jobs(count: int, handler: str, input: dict[str, object]) -> str:
    items = [
        {"apiVersion": "workers.io/v1alpha1", "kind": "Job", "metadata": {"name": f"job-{i:04d}"},
         "spec": {"pool": "demo", "handler": handler, "input": {**input, "n": i}}}
        for i in range(count)
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def phases(cluster: Cluster, namespace: str) -> collections.Counter[str]:
    return collections.Counter(j.get("status", {}).get("phase", "-") for j in list_jobs(cluster, namespace).values())


def restart_and_see_the_resync_repair(
    cluster: Cluster, namespace: str, operator: OperatorProcess, count: int, output: dict[str, float]
) -> None:
    """The statuses lag the records (their events were lost); a restarted operator's resync repairs them."""
    assert phases(cluster, namespace)["Succeeded"] < count
    operator.start()
    wait_for(lambda: phases(cluster, namespace)["Succeeded"] == count, timeout=120, what="resync to converge")
    assert operator.metric_sum("kubeworkers_operator_resync_corrections_total") >= 1
    for job in list_jobs(cluster, namespace).values():
        assert job["status"]["output"] == output


def test_operator_killed_and_restarted_mid_run_every_job_finishes_right_and_none_is_enqueued_twice(
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner, redis_url: str
) -> None:
    cluster.apply(pool_manifest(concurrency=8, maxReplicas=4), namespace)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=many_jobs(JOBS, "slow", {"seconds": 1.0, "steps": 2}))

    # Kill while jobs are queued, running and finished at once.
    wait_for(lambda: phases(cluster, namespace)["Succeeded"] >= 20, timeout=120, what="20 jobs done")
    operator.kill(signal.SIGKILL)
    before_restart = phases(cluster, namespace)
    assert before_restart["Succeeded"] < JOBS, "the run ended before the kill: nothing was tested"
    time.sleep(3)  # workers keep finishing jobs while no operator watches
    operator.start()

    def all_finished() -> bool:
        return phases(cluster, namespace)["Succeeded"] == JOBS

    wait_for(all_finished, timeout=240, every=2, what=f"all {JOBS} jobs Succeeded")

    jobs = list_jobs(cluster, namespace)
    for name, job in jobs.items():
        status = job["status"]
        n = int(name.split("-")[1])
        assert status["output"] == {"slept": 1.0}, (name, status)
        assert status["attempts"] >= 1
        assert status["completionTime"]
        assert {c["type"]: c["status"] for c in status["conditions"]}["Enqueued"] == "True", name
        assert job["spec"]["input"]["n"] == n

    r = redis.Redis.from_url(redis_url)
    keys = PoolKeys(namespace, "demo")
    assert int(r.hget(keys.stats, "enqueued") or 0) == JOBS
    entries = [JobMessage.from_fields(fields) for stream in keys.streams for _, fields in r.xrange(stream)]
    counts = collections.Counter(m.job_id for m in entries)
    assert not [job_id for job_id, c in counts.items() if c > 1]
    # Every job ran once: none was handed to a worker twice because of the restart.
    assert all(job["status"]["attempts"] == 1 for job in jobs.values())


def finish_jobs_with_the_operator_down(
    cluster: Cluster, namespace: str, operator: OperatorProcess, redis_url: str, *, count: int, seconds: float
) -> redis.Redis:
    """Enqueue ``count`` Jobs, kill the operator, let the workers finish them all; a client of the Redis."""
    cluster.apply(pool_manifest(), namespace)
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=many_jobs(count, "slow", {"seconds": seconds, "steps": 1}))

    def all_enqueued() -> bool:
        # One read per poll; quick jobs may already have Succeeded by the time the last one is Queued.
        seen = phases(cluster, namespace)
        return seen["Queued"] + seen["Running"] + seen["Succeeded"] == count

    wait_for(all_enqueued, timeout=60, what="all jobs enqueued")
    operator.kill(signal.SIGKILL)
    r = redis.Redis.from_url(redis_url)
    keys = PoolKeys(namespace, "demo")

    def all_records_succeeded() -> bool:
        return all(r.hget(keys.record(f"{namespace}/job-{i:04d}"), "state") == b"Succeeded" for i in range(count))

    wait_for(all_records_succeeded, timeout=120, what="the workers to finish every job")
    return r


def test_statuses_converge_from_redis_records_when_the_events_were_lost_while_the_operator_was_down(
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner, redis_url: str
) -> None:
    r = finish_jobs_with_the_operator_down(cluster, namespace, operator, redis_url, count=20, seconds=2)
    r.delete(PoolKeys(namespace, "demo").events)  # every event of the run is gone
    restart_and_see_the_resync_repair(cluster, namespace, operator, 20, {"slept": 2.0})


def test_an_operator_that_falls_behind_the_events_cap_loses_those_events_and_its_resync_repairs_the_jobs(
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner, redis_url: str
) -> None:
    count = 10
    r = finish_jobs_with_the_operator_down(cluster, namespace, operator, redis_url, count=count, seconds=1)
    events = PoolKeys(namespace, "demo").events
    [(last_of_run, _)] = r.xrevrange(events, count=1)
    # Other writers go on while the operator is away: past the cap, the oldest events go (the
    # trim is the cap's, done by a real writer: an SDK cancel through cancel.lua, on the pool's stream).
    filler = JobEvent(job_id="other-sdk-job", uid="other-sdk-job", namespace=namespace, pool="demo",
                      state=JobState.RUNNING).to_fields()
    # The cap is an approximate trim (MAXLEN ~): Redis drops only whole stream nodes, so the filler
    # goes two nodes past the cap; the node that holds the run's last event is then dropped whole.
    node_entries = int(r.config_get("stream-node-max-entries")["stream-node-max-entries"])
    with r.pipeline(transaction=False) as pipe:
        for _ in range(EVENTS_MAXLEN + 2 * node_entries):
            pipe.xadd(events, filler)  # type: ignore[arg-type]
        pipe.execute()
    sdk = Client(connection=r, namespace=namespace)
    assert sdk.cancel(sdk.submit("demo", "h", delay=3600))  # delayed: no worker takes it first
    [(first_left, _)] = r.xrange(events, count=1)
    assert first_left > last_of_run, "the cap trimmed none of the run's events: nothing was tested"
    assert r.xlen(events) <= EVENTS_MAXLEN + node_entries
    restart_and_see_the_resync_repair(cluster, namespace, operator, count, {"slept": 1.0})


def test_job_deleted_while_the_operator_was_down_is_cancelled_once_it_is_back(
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner, redis_url: str
) -> None:
    cluster.apply(pool_manifest(), namespace)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=many_jobs(2, "slow", {"seconds": 300, "steps": 300}))
    wait_for(lambda: phases(cluster, namespace)["Running"] == 2, timeout=90, what="both jobs running")
    operator.kill(signal.SIGKILL)
    cluster.kubectl("delete", "jobs.workers.io", "job-0000", "-n", namespace)

    r = redis.Redis.from_url(redis_url)
    keys = PoolKeys(namespace, "demo")
    assert r.hget(keys.record(f"{namespace}/job-0000"), "state") == b"Running"  # nobody told Redis yet
    operator.start()
    wait_for(lambda: r.hget(keys.record(f"{namespace}/job-0000"), "state") == b"Cancelled", timeout=60,
             what="the orphaned job cancelled")
    assert r.hget(keys.record(f"{namespace}/job-0001"), "state") == b"Running"  # its Job still exists
    assert phases(cluster, namespace)["Running"] == 1
    # Let the other job go too, so the workers stop at once at teardown.
    cluster.kubectl("patch", "jobs.workers.io", "job-0001", "-n", namespace, "--type=merge",
                    "-p", '{"spec": {"cancel": true}}')
    wait_for(lambda: phases(cluster, namespace)["Cancelled"] == 1, timeout=60, what="job-0001 cancelled")
