"""The safety net: converge every unfinished Job to its record in Redis (a periodic chore).

The events stream is the notification, the record the truth: the resync catches
whatever the events path missed (events trimmed while the operator was down, an
event a worker failed to append). A Queued or Running Job whose record is gone
(Redis lost data) is enqueued again: at-least-once, never lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import redis.asyncio as aioredis
from kubeworkers import queue
from kubeworkers.protocol import JobRecord, JobState, PoolKeys
from kubeworkers.resources import JobSpec
from redis.exceptions import RedisError

from kubeworkers_operator.adapters.status_writer import WriteResult, job_ref
from kubeworkers_operator.flows import jobs
from kubeworkers_operator.model import job_status
from kubeworkers_operator.model.admission import message_for
from kubeworkers_operator.model.index import TrackedJob
from kubeworkers_operator.runtime import Runtime, group_by_redis, redis_label

logger = logging.getLogger(__name__)

#: Records read per Redis pipeline during a resync.
RESYNC_CHUNK = 500


def candidates(tracked: Iterable[TrackedJob]) -> list[TrackedJob]:
    """The Jobs a resync checks: Queued or Running ones (finished Jobs never move; Pending ones wait)."""
    return [job for job in tracked if job_status.parse_phase(job.status) in (JobState.QUEUED, JobState.RUNNING)]


def record_folder(record: JobRecord, output_limit: int) -> Callable[[TrackedJob], dict[str, Any]]:
    """The status computation of a Job reconciled with its ``record`` (re-run by the writer on conflict)."""

    def compute(job: TrackedJob) -> dict[str, Any]:
        folded = job_status.apply_record(job.status, record, output_limit=output_limit)
        return job_status.with_enqueued_condition(folded, job.pool)

    return compute


async def resync(rt: Runtime) -> int:
    """Converge every unfinished Job to its record in Redis; returns the statuses corrected."""
    todo = candidates(rt.index.jobs.values())
    # A pool deleted while the operator was not watching leaves its Jobs Queued/Running: park them.
    unknown = {(job.namespace, job.pool) for job in todo} - set(rt.index.pools)
    for namespace, pool in unknown:
        if await rt.lookup_pool(namespace, pool) is None:
            await jobs.park_jobs_of_deleted_pool(rt, namespace, pool)
    todo = candidates(rt.index.jobs.values())
    corrected = 0
    # Each Job's record is on its pool's Redis: one pipeline per Redis (and chunk). A pool whose
    # Redis is unavailable is skipped this pass; its Jobs keep their status until it is back.
    by_pool: dict[tuple[str, str], list[TrackedJob]] = {}
    for job in todo:
        by_pool.setdefault((job.namespace, job.pool), []).append(job)
    for redis, pools in await group_by_redis(rt, by_pool):
        on_this = [job for key in pools for job in by_pool[key]]
        try:
            for start in range(0, len(on_this), RESYNC_CHUNK):
                corrected += await _resync_chunk(rt, redis, on_this[start:start + RESYNC_CHUNK])
        except (RedisError, OSError) as exc:  # that Redis is down: the others go on
            logger.warning("resync of %s skipped: %s", redis_label(rt, redis), type(exc).__name__)
    return corrected


async def _resync_chunk(rt: Runtime, redis: aioredis.Redis, chunk: list[TrackedJob]) -> int:
    """Reconcile ``chunk`` (Jobs whose pools are all on ``redis``) with their records; returns corrections."""
    corrected = 0
    async with redis.pipeline(transaction=False) as pipe:
        for job in chunk:
            pipe.hgetall(PoolKeys(job.namespace, job.pool).record(job.job_id))
        raws = await pipe.execute()
    limit = rt.settings.output_limit_bytes
    for job, raw in zip(chunk, raws, strict=True):
        record = JobRecord.from_hash(raw) if raw else None
        if record is None:
            await requeue_lost(rt, job, redis)
            continue
        if record.uid != job.uid:
            continue
        if job.spec.get("cancel") and not record.state.finished and not record.cancel_requested:
            await jobs.request_cancel(rt, job)
        result = await rt.writer.write(
            job.namespace, job.name, job.uid, record_folder(record, limit), source="resync"
        )
        if result is WriteResult.WRITTEN:
            corrected += 1
            rt.metrics.resync_corrections.inc()
            written = rt.index.jobs.get(job.job_id)
            if written is not None:
                rt.ttl.consider(written)
    return corrected


async def requeue_lost(rt: Runtime, job: TrackedJob, redis: aioredis.Redis) -> None:
    """Enqueue again (on ``redis``, its pool's) a Queued or Running Job whose record Redis no longer has
    (a Warning Event says so)."""
    try:
        spec = JobSpec.model_validate(job.spec)
    except ValueError:
        return
    if await queue.enqueue(redis, message_for(job, spec)):
        logger.warning("record of %s was missing from Redis; enqueued it again", job.job_id)
        rt.recorder.warning(job_ref(job), "Requeued", "the job's record was missing from Redis; enqueued again")
