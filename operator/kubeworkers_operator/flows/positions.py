"""Queued Jobs' places in their pools' queues: ``status.position`` and ``estimatedStartTime`` (a chore).

Every :data:`PASS_SECONDS`, for each pool with Queued Jobs, one ``positions.lua`` call reads the
positions of (up to :data:`MAX_JOBS_PER_POOL`) of them and the pool's take counter, from which
the take rate is measured between passes (:class:`~kubeworkers_operator.autoscaling.load.ArrivalRate`
over the counter of entries handed to workers). Whether a Job's status is written is the pure
:func:`~kubeworkers_operator.model.queue_position.position_status`'s decision: first after 5 s in
Queued, then at most every 30 s and only when it moved, so positions add at most one status
write per Job per 30 s of waiting and none to a Job that starts quickly. The status sync clears
both fields with the phase change that starts the Job (``job_status`` folds).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kubeworkers import queue
from kubeworkers.protocol import JobState, PoolKeys
from redis.exceptions import RedisError

from kubeworkers_operator.adapters.pool_redis import PoolRedisUnavailable
from kubeworkers_operator.adapters.status_writer import WriteResult
from kubeworkers_operator.autoscaling.load import STATS_DURATION_SUM, STATS_RUN_COUNTERS, ArrivalRate
from kubeworkers_operator.model import job_status, queue_position
from kubeworkers_operator.model.index import TrackedJob
from kubeworkers_operator.runtime import Runtime

logger = logging.getLogger(__name__)

#: Seconds between passes.
PASS_SECONDS = 5.0
#: Most Queued Jobs of one pool whose positions one pass reads (the longest-queued first).
MAX_JOBS_PER_POOL = 1000
#: Seconds of take-counter history the take rate is measured over.
RATE_WINDOW_SECONDS = 30.0


class QueuePositions:
    """What the chore keeps between passes: each pool's take-rate estimator, and when each Job's
    position was last written (by uid; forgotten once the Job is no longer Queued)."""

    def __init__(self) -> None:
        self.rates: dict[tuple[str, str], ArrivalRate] = {}
        self.written_at: dict[str, float] = {}

    def take_rate(self, namespace: str, pool: str, taken: int | None, now: float) -> float:
        rate = self.rates.setdefault((namespace, pool), ArrivalRate(RATE_WINDOW_SECONDS))
        return 0.0 if taken is None else rate.observe(now, taken)


def _queued(rt: Runtime) -> dict[tuple[str, str], list[TrackedJob]]:
    by_pool: dict[tuple[str, str], list[TrackedJob]] = {}
    for job in list(rt.index.jobs.values()):
        if job_status.parse_phase(job.status) is JobState.QUEUED:
            by_pool.setdefault((job.namespace, job.pool), []).append(job)
    return by_pool


def _mean_duration(stats: list[Any]) -> float | None:
    *runs, total = stats
    count = sum(int(v or 0) for v in runs)
    return float(total) / count if count and total is not None else None


async def update(rt: Runtime, state: QueuePositions) -> int:
    """One pass (the ``queue-positions`` chore); returns the statuses written."""
    by_pool = _queued(rt)
    live = {job.uid for jobs in by_pool.values() for job in jobs}
    state.written_at = {uid: at for uid, at in state.written_at.items() if uid in live}
    written = 0
    for (namespace, pool), queued in by_pool.items():
        tracked = rt.index.pools.get((namespace, pool))
        if tracked is None or tracked.spec is None:
            continue
        queued.sort(key=lambda j: str(j.status.get("queuedAt") or ""))
        jobs = queued[:MAX_JOBS_PER_POOL]
        try:  # on the pool's own Redis; one that is down leaves only its pool's positions unwritten
            redis = await rt.redis_of(namespace, pool)
            found = await queue.positions(redis, namespace, pool, [j.job_id for j in jobs])
            stats = await redis.hmget(PoolKeys(namespace, pool).stats, [*STATS_RUN_COUNTERS, STATS_DURATION_SUM])
        except (PoolRedisUnavailable, RedisError, OSError) as exc:
            logger.debug("positions of pool %s/%s skipped: %s", namespace, pool, type(exc).__name__)
            continue
        spec = tracked.spec
        max_pods = spec.max_replicas if spec.autoscaling.enabled else spec.fixed_replicas
        now = time.time()
        rate = queue_position.PoolRate(
            measured=state.take_rate(namespace, pool, found.taken, time.monotonic()),
            capacity=queue_position.capacity(concurrency=spec.concurrency, max_pods=max_pods,
                                             mean_duration=_mean_duration(stats)),
        )
        for job in jobs:
            position = found.positions.get(job.job_id)
            start = None if position is None else queue_position.estimated_start(position, rate, now)

            def compute(current: TrackedJob, position: int | None = position, start: float | None = start,
                        now: float = now) -> dict[str, Any] | None:
                return queue_position.position_status(current.status, position, start, now=now,
                                                      last_written=state.written_at.get(current.uid))

            result = await rt.writer.write(namespace, job.name, job.uid, compute, source="positions")
            if result is WriteResult.WRITTEN:
                state.written_at[job.uid] = now
                written += 1
    return written
