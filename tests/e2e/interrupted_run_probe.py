"""Not collected by a normal run (no ``test_`` prefix): tests/e2e/test_interrupted_run_leaves_nothing.py
runs it as a pytest session of its own and interrupts it.

It starts one of everything a test run starts — an operator, the kubelet stand-in with a
worker process running a long job, a worker process of its own, a redis-server besides the
session's — writes their pids to ``$KW_PROBE_READY`` and waits to be interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from hack.polling import wait_for
from tests.e2e.operator_fixtures import OperatorProcess, get_job, pool_manifest
from tests.support.cluster import Cluster
from tests.support.pod_runner import PodRunner
from tests.support.redis_server import RedisServer
from tests.support.workers import WorkerProcess

# Ctrl-C must reach this session however the suite that runs it was started: a background job
# of a non-interactive shell (`make test &` in a script, CI runners) starts with SIGINT ignored,
# every child inherits that, and Python then keeps SIGINT ignored instead of raising
# KeyboardInterrupt; a terminal's Ctrl-C, what this probe stands for, always arrives.
signal.signal(signal.SIGINT, signal.default_int_handler)

LONG_JOB = """
apiVersion: workers.io/v1alpha1
kind: Job
metadata: {name: endless}
spec: {pool: demo, handler: slow, input: {seconds: 600, steps: 600}}
"""


def test_start_everything_then_wait_to_be_interrupted(  # noqa: PLR0917
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner, redis_url: str,
    redis_factory: Callable[..., RedisServer],
) -> None:
    ready = Path(os.environ["KW_PROBE_READY"])
    cluster.apply(pool_manifest(terminationGracePeriodSeconds=5), namespace)
    cluster.apply(LONG_JOB, namespace)
    wait_for(lambda: (get_job(cluster, namespace, "endless") or {}).get("status", {}).get("phase") == "Running",
             timeout=120, what="the long job to run on a worker pod")
    extra = redis_factory()
    worker = WorkerProcess(redis_url, "probe-worker")
    worker.wait_started()
    assert operator.proc is not None and extra.proc is not None
    pids = {
        "operator": [operator.proc.pid],
        "pod workers": list(demo_pool.processes().values()),
        "worker": [worker.proc.pid],
        "redis-server": [extra.proc.pid],
    }
    ready.write_text(json.dumps({"namespace": namespace, "pids": pids}))
    time.sleep(600)
