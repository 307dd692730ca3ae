"""Fault scenario: Redis Sentinel failovers mid-run, a planned one and then a crash of the master.

A master, its replica and three ``redis-sentinel`` processes (tests/support/sentinel.py);
three durable worker processes (``--durable-replicas 1``) and a durable SDK client, all given
the ``redis+sentinel://`` URL and nothing else. Jobs of mixed duration (some longer than the
lease) are submitted in batches under fixed ids; while they run the master is failed over on
purpose (``SENTINEL FAILOVER``: the replica is promoted at once, the old master stays writable
until the Sentinels demote it about 10 s later), then SIGKILLed (the Sentinels promote the
replica; the killed node comes back, empty, as its replica). A batch is submitted again, under
the same ids, until a replica acknowledged it: enqueue is idempotent per id, so a repeat never
makes a second job.

Judged like every scenario, on the Redis the Sentinels name at the end: every durably
acknowledged job succeeded exactly once, none is lost, and no job ran twice (no worker was
harmed). Bounded: two failovers of about 15 s each (each lasts until the old master is a
replica again), 250 jobs, about 50 s in all.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from kubeworkers import Durability, NotReplicatedError, Registry
from kubeworkers.client import Client
from kubeworkers.connection import close, connect

from tests.chaos.harness import ATTEMPTS, POOL, Fleet, judge, settle, workload
from tests.support.sentinel import SentinelSet
from tests.support.workers import as_job_objects

JOBS = 250
BATCH = 25
#: Seconds between the batches of the second half (the first half is submitted at once).
LATER_EVERY = 2.5
SCENARIO = "Sentinel: SENTINEL FAILOVER, then master SIGKILL (durable workers and submits)"
#: What a careful caller retries on: the submit may or may not have been applied, and the ids make it safe.
RETRIED = (NotReplicatedError, redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError, OSError)


@pytest.fixture
def sentinels() -> Iterator[SentinelSet]:
    try:
        with SentinelSet() as s:
            yield s
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


class BatchSubmitter:
    """Submits ``JOBS`` jobs in batches of ``BATCH`` with fixed ids, each batch again until acknowledged:
    half at once, the rest one batch every ``LATER_EVERY`` seconds, into the failovers."""

    def __init__(self, client: Client, rng: random.Random) -> None:
        self.client = client
        self.inputs = workload(rng, JOBS)
        self.acknowledged: list[str] = []
        self.repeats = 0
        self.thread = threading.Thread(target=self._run, name="chaos-sentinel-submitter", daemon=True)

    def start(self) -> BatchSubmitter:
        self.thread.start()
        return self

    def _run(self) -> None:
        for first in range(0, JOBS, BATCH):
            ids = [f"default/s{n}" for n in range(first, first + BATCH)]  # Job objects' ids (as_job_objects)
            while True:
                try:
                    self.client.submit_many(POOL, "slow", self.inputs[first:first + BATCH], job_ids=ids,
                                            max_attempts=ATTEMPTS)
                    break
                except RETRIED:
                    self.repeats += 1
                    time.sleep(0.05)
            self.acknowledged.extend(ids)
            if first >= JOBS // 2:
                time.sleep(LATER_EVERY)  # the second half arrives during the failovers

    def join(self) -> None:
        self.thread.join(120)
        assert not self.thread.is_alive(), "the submitter did not get every batch acknowledged within 120 s"


def test_sentinel_failovers_mid_run_lose_no_durable_submit_and_rerun_nothing(
    sentinels: SentinelSet, rng: random.Random
) -> None:
    fleet = Fleet(sentinels.url, extra_args=["--durable-replicas", "1"])
    with Client(sentinels.url, registry=Registry(), durable=Durability(replicas=1, timeout_s=1.0)) as plain:
        sdk = as_job_objects(plain)  # the ledger reads the events (harness.py)
        try:
            submitter = BatchSubmitter(sdk, rng).start()
            time.sleep(1.5)
            sentinels.failover()
            sentinels.kill_master()
            last = time.time()
            submitter.join()
            truth = connect(sentinels.url, socket_timeout=5)
            settle(truth, submitter.acknowledged)
        finally:
            fleet.close()
    try:
        judge(SCENARIO, truth, submitter.acknowledged, fleet.signalled, last,
              note=f"{submitter.repeats} batch submits refused (no replica acknowledged them, or no master) "
                   "and repeated under the same ids")
    finally:
        close(truth)
