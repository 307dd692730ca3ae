"""Fault scenario: the operator leader SIGKILLed again and again while Job CRs arrive (the Job CR path).

Two operator replicas on the real control plane; Job CRs of mixed duration are created in
batches throughout; the replica that leads is SIGKILLed, the standby takes over, the killed one
comes back (same pod name) as the new standby, and so on. At the end every Job reached exactly
one terminal state (Succeeded), none was enqueued twice (the pool's enqueue count equals the
number of Jobs) and none ran twice (no worker was harmed, so nothing may run twice). Bounded:
a few kills of at most ~15 s each, a few hundred short jobs.
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kubeworkers.protocol import PoolKeys

from tests.chaos.harness import RESULTS, Outcome
from tests.e2e.operator_fixtures import (
    LOG_ROOT,
    OperatorProcess,
    install_crds,
    list_jobs,
    pool_manifest,
    wait_for,
)
from tests.support.cluster import Cluster
from tests.support.pod_runner import PodRunner

pytestmark = pytest.mark.e2e

JOBS = 240
BATCH = 12
KILLS = 4
SCENARIO = "operator leader SIGKILL loop (Job CR path)"


def batch_yaml(rng: random.Random, first: int, count: int) -> str:
    items = [
        {"apiVersion": "workers.io/v1alpha1", "kind": "Job", "metadata": {"name": f"job-{i:04d}"},
         "spec": {"pool": "demo", "handler": "slow",
                  "input": {"seconds": rng.choice([0.2, 0.5, 1.0, 3.0]), "steps": 1, "n": i}}}
        for i in range(first, first + count)
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


class JobCreator:
    """Creates the Job CRs in batches, one batch a second, in a thread (kubectl apply)."""

    def __init__(self, cluster: Cluster, namespace: str, rng: random.Random) -> None:
        self.cluster, self.namespace, self.rng = cluster, namespace, rng
        self.created = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> JobCreator:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while self.created < JOBS:
                self.cluster.kubectl("apply", "-n", self.namespace, "-f", "-",
                                     input=batch_yaml(self.rng, self.created, BATCH))
                self.created += BATCH
                time.sleep(1.0)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def join(self) -> None:
        self._thread.join(timeout=300)
        if self.error is not None:
            raise self.error


@pytest.fixture
def replicas(cluster: Cluster, namespace: str, redis_url: str,
             request: pytest.FixtureRequest) -> Iterator[dict[str, OperatorProcess]]:
    install_crds(cluster)
    cluster.kubectl("create", "secret", "generic", "kubeworkers-redis", "-n", namespace,
                    f"--from-literal=url={redis_url}")
    log_dir = LOG_ROOT / request.node.name
    ops = {name: OperatorProcess(cluster, redis_url, [namespace], log_dir / name, name=name)
           for name in ("operator-a", "operator-b")}
    for op in ops.values():
        op.start()
    yield ops
    for op in ops.values():
        op.stop()


def leader_of(ops: dict[str, OperatorProcess]) -> str | None:
    leading = [name for name, op in ops.items() if op.proc is not None and op.proc.poll() is None
               and _role(op) == "leader"]
    assert len(leading) <= 1, f"two leaders at once: {leading}"
    return leading[0] if leading else None


def _role(op: OperatorProcess) -> str:
    try:
        return op.role()
    except OSError:
        return "down"


def test_operator_leader_sigkill_loop_every_job_ends_once_and_nothing_is_enqueued_twice(
    cluster: Cluster, namespace: str, redis_url: str, replicas: dict[str, OperatorProcess],
    request: pytest.FixtureRequest,
) -> None:
    rng = random.Random(20261202)
    pods = PodRunner(cluster, namespace, "workers.io/pool", extra_env={"KUBEWORKERS_METRICS_PORT": "0"},
                     log_dir=LOG_ROOT / request.node.name / "pods")
    with pods:
        cluster.apply(pool_manifest(concurrency=8, minReplicas=1, maxReplicas=3), namespace)
        wait_for(lambda: leader_of(replicas) is not None, timeout=30, what="a leader")
        creator = JobCreator(cluster, namespace, rng).start()
        takeovers: list[float] = []
        last_kill = time.monotonic()
        for _ in range(KILLS):
            time.sleep(rng.uniform(2.0, 5.0))
            victim = wait_for(lambda: leader_of(replicas), timeout=30, what="a leader to kill")
            replicas[victim].kill(signal.SIGKILL)
            last_kill = killed_at = time.monotonic()
            heir = wait_for(lambda: leader_of(replicas), timeout=30, every=0.2, what="the standby to lead")
            takeovers.append(time.monotonic() - killed_at)
            assert heir != victim
            replicas[victim].start()  # back under the same pod name: the new standby
        creator.join()

        def succeeded() -> int:
            return phases_count(list_jobs(cluster, namespace), "Succeeded")

        wait_for(lambda: succeeded() == JOBS, timeout=240, every=2, what=f"all {JOBS} Jobs Succeeded")
        recovered_in = time.monotonic() - last_kill

    jobs = list_jobs(cluster, namespace)
    ran_twice = [name for name, job in jobs.items() if job["status"].get("attempts") != 1]
    r = redis.Redis.from_url(redis_url)
    enqueued = int(r.hget(PoolKeys(namespace, "demo").stats, "enqueued") or 0)
    RESULTS.append(Outcome(
        SCENARIO, JOBS, JOBS - phases_count(jobs, "Succeeded"), len(ran_twice), 0, recovered_in,
        f"{KILLS} leader kills; standby led in {max(takeovers):.1f} s at worst; {enqueued} enqueues",
    ))
    assert len(jobs) == JOBS and phases_count(jobs, "Succeeded") == JOBS
    assert enqueued == JOBS, f"{enqueued} enqueues for {JOBS} Jobs"
    assert not ran_twice, f"Jobs that ran more than once with no worker harmed: {ran_twice[:10]}"
    assert max(takeovers) <= 15.0, takeovers


def phases_count(jobs: dict[str, dict[str, Any]], phase: str) -> int:
    return sum(1 for job in jobs.values() if (job.get("status") or {}).get("phase") == phase)
