"""The Job path: validate, enqueue (idempotently), cancel, clean up after deletion and TTL.

Jobs are handled from kopf's raw watch events (``@kopf.on.event``), not from
``on.create`` handlers: the decision is a function of the Job's current state
(no phase yet -> enqueue; ``cancel: true`` -> cancel; gone -> clean up), so no
per-Job progress annotations, last-handled-configuration or finalizers are
written. A restart re-lists every Job and re-derives the same decisions;
enqueue is idempotent per Job uid in Redis, so nothing is enqueued twice.

Deletion uses no finalizer: when a Job is deleted while the operator runs, its
DELETED event cancels it in Redis and removes its record. A Job deleted while
the operator is down leaves a record that expires on Redis' own TTL, and a
queued entry that workers skip once the record is gone or cancelled; that is
the documented price of not putting a finalizer on thousands of Jobs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from kubeworkers import queue
from kubeworkers.protocol import JobState, job_object_of
from kubeworkers.resources import JOB_PLURAL, JobSpec
from pydantic import ValidationError

from kubeworkers_operator.adapters.kube import ApiError, Conflict, NotFound, custom_path
from kubeworkers_operator.adapters.pool_redis import PoolRedisUnavailable
from kubeworkers_operator.adapters.status_writer import WriteResult, job_ref
from kubeworkers_operator.model import job_status
from kubeworkers_operator.model.admission import FINAL_REASONS, check_admission, message_for
from kubeworkers_operator.model.index import TrackedJob
from kubeworkers_operator.model.job_status import parse_phase
from kubeworkers_operator.model.redis_source import REDIS_UNAVAILABLE
from kubeworkers_operator.model.ttl import is_due
from kubeworkers_operator.runtime import Runtime

logger = logging.getLogger(__name__)

#: Cap on the message of an admission failure (status error, condition and Event).
REJECT_MESSAGE_LIMIT = 2000
#: How often finished Jobs are checked against their ``ttlSecondsAfterFinished`` deadline.
TTL_CHECK_SECONDS = 1.0
#: Jobs acted on at once by a replica that just became the leader (:func:`take_over`).
TAKE_OVER_CONCURRENCY = 32


async def on_job_event(rt: Runtime, event_type: str | None, body: Mapping[str, Any]) -> None:
    """React to one watch event of a Job (kopf's ``on.event``)."""
    if event_type == "DELETED":
        await job_deleted(rt, TrackedJob.from_body(body))
        return
    await act(rt, rt.index.observe_job(body))


def observe(rt: Runtime, event_type: str | None, body: Mapping[str, Any]) -> None:
    """A standby's handling of a Job's watch event: remember it, act on nothing.

    The index (and the TTL queue, which is only memory) stay warm, so the standby that takes
    over acts on every Job at once (:func:`take_over`) instead of waiting for a re-list. Redis
    and the apiserver are left to the leader, which sees the same event.
    """
    if event_type == "DELETED":
        job = TrackedJob.from_body(body)
        rt.index.forget_job(job.namespace, job.name, job.uid)
        rt.waiting.discard(job.job_id)
        rt.ttl.forget(job.job_id)
        return
    job = rt.index.observe_job(body)
    phase = parse_phase(job.status)
    if phase is not None and phase.finished:
        rt.ttl.consider(job)


async def take_over(rt: Runtime) -> int:
    """On becoming the leader: act on every Job the index holds, as a watch event would. Returns how many.

    A Job created while no replica led (the old leader's last seconds, the election gap) was only
    observed; this is where it is enqueued. Acting twice on a Job is harmless: enqueue is
    idempotent per (namespace, pool, job id) in ``enqueue.lua`` and status writes are
    compare-and-swap folds, so a watch event racing this pass changes nothing.
    """
    limit = asyncio.Semaphore(TAKE_OVER_CONCURRENCY)

    async def one(job: TrackedJob) -> None:
        async with limit:
            try:
                await act(rt, job)
            except Exception:
                logger.exception("take-over of %s failed (the pending sweep retries)", job.job_id)

    jobs = list(rt.index.jobs.values())
    await asyncio.gather(*(one(job) for job in jobs))
    return len(jobs)


async def act(rt: Runtime, job: TrackedJob) -> None:
    """What the leader does for a Job in its current state: enqueue it, cancel it, or watch its TTL."""
    phase = parse_phase(job.status)
    if phase is None or phase is JobState.PENDING:
        if job.spec.get("cancel"):
            await cancel_unqueued(rt, job)
        else:
            await admit(rt, job)
    elif not phase.finished:
        if job.spec.get("cancel"):
            await request_cancel(rt, job)
    else:
        rt.ttl.consider(job)  # also after a finish: ttlSecondsAfterFinished may be edited at any time
        await rt.writer.observe_generation(job)


async def admit(rt: Runtime, job: TrackedJob) -> None:
    """Validate the Job and enqueue it, or record (condition + Event) why it waits."""
    try:
        spec = JobSpec.model_validate(job.spec)
    except ValidationError as exc:
        await reject(rt, job, "InvalidSpec", f"invalid Job spec: {exc}")
        return
    pool = await rt.lookup_pool(job.namespace, spec.pool)
    problem = check_admission(job, spec, pool)
    if problem is not None:
        if problem[0] == "PoolNotFound" and job_status.enqueued_reason(job.status) == job_status.POOL_DELETED:
            rt.waiting.add(job.job_id)  # still waiting for its pool to come back: PoolDeleted says more
            return
        if problem[0] in FINAL_REASONS:
            await reject(rt, job, *problem)
        else:
            await mark_pending(rt, job, *problem)
        return
    try:
        redis = await rt.redis_of(job.namespace, spec.pool)
    except PoolRedisUnavailable as exc:  # its Secret yields no URL: wait, the pool-redis chore re-reads it
        await mark_pending(rt, job, REDIS_UNAVAILABLE, f"pool {spec.pool} has no usable Redis: {exc}; will retry")
        return
    try:
        enqueued = await rt.enqueuer.submit(message_for(job, spec), redis)
        record = None if enqueued else await queue.get_record(redis, job.namespace, spec.pool, job.job_id)
    except Exception as exc:  # Redis down: wait and retry from the pending sweep
        # The exception's class only: redis-py's messages name the server, the Secret says enough.
        where = rt.redises.describe(job.namespace, spec.pool)
        logger.warning("could not enqueue %s on %s: %s", job.job_id, where, type(exc).__name__)
        await mark_pending(
            rt, job, REDIS_UNAVAILABLE,
            f"could not enqueue on the Redis of pool {spec.pool} ({where}): {type(exc).__name__}; will retry",
        )
        return
    if enqueued:
        rt.metrics.jobs_enqueued.inc()
    else:
        rt.metrics.jobs_enqueue_duplicates.inc()
        if record is not None and record.uid != job.uid:
            await mark_pending(
                rt, job, "PreviousJobActive",
                f"an earlier Job named {job.name} is still {record.state.value} in Redis; waiting for it to finish",
            )
            return
    now = time.time()
    not_before = spec.not_before.timestamp() if spec.not_before is not None else None
    await rt.writer.write(
        job.namespace, job.name, job.uid,
        lambda current: job_status.queued(
            current.status, pool=spec.pool, priority=spec.priority.value, now=now, not_before=not_before
        ),
        source="enqueue",
    )
    rt.waiting.discard(job.job_id)
    rt.metrics.jobs_waiting.set(len(rt.waiting))


async def mark_pending(rt: Runtime, job: TrackedJob, reason: str, message: str) -> None:
    """Phase Pending with condition Enqueued=False; a Warning Event when the reason is new."""
    rt.waiting.add(job.job_id)
    rt.metrics.jobs_waiting.set(len(rt.waiting))
    previous = job_status.enqueued_reason(job.status)
    now = time.time()
    result = await rt.writer.write(
        job.namespace, job.name, job.uid,
        lambda current: job_status.pending(current.status, reason, message, now=now),
        source="enqueue",
    )
    if result is WriteResult.WRITTEN and previous != reason:
        rt.metrics.jobs_rejected.labels(reason=reason).inc()
        rt.recorder.warning(job_ref(job), reason, message)


async def reject(rt: Runtime, job: TrackedJob, reason: str, message: str) -> None:
    """Fail a Job that can never run as written: phase Failed, error and condition ``reason``, an Event."""
    message = message[:REJECT_MESSAGE_LIMIT]
    rt.waiting.discard(job.job_id)
    now = time.time()
    result = await rt.writer.write(
        job.namespace, job.name, job.uid,
        lambda current: job_status.rejected(current.status, reason, message, now=now),
        source="enqueue",
    )
    if result is WriteResult.WRITTEN:
        rt.metrics.jobs_rejected.labels(reason=reason).inc()
        rt.recorder.warning(job_ref(job), reason, message)


async def cancel_unqueued(rt: Runtime, job: TrackedJob) -> None:
    """``cancel: true`` on a Job that is not on a stream: Cancelled right here.

    A Job parked because its pool was deleted is still on that pool's stream in Redis:
    it is cancelled there first, so a re-created pool never runs it.
    """
    if job_status.enqueued_reason(job.status) == job_status.POOL_DELETED:
        try:
            await queue.cancel(await rt.redis_of(job.namespace, job.pool), job.namespace, job.pool, job.job_id)
        except Exception as exc:
            logger.warning("could not cancel %s in Redis: %s (retried on its next event)", job.job_id, exc)
            return
    now = time.time()
    rt.waiting.discard(job.job_id)
    rt.metrics.jobs_waiting.set(len(rt.waiting))
    result = await rt.writer.write(
        job.namespace, job.name, job.uid,
        lambda current: job_status.cancelled_before_enqueue(current.status, now=now),
        source="cancel",
    )
    if result is WriteResult.WRITTEN:
        rt.metrics.cancels.labels(via="spec").inc()


async def request_cancel(rt: Runtime, job: TrackedJob) -> None:
    """Ask Redis to cancel a queued or running job; the worker (or the script) reports Cancelled."""
    if job.uid in rt.cancel_sent:
        return
    try:
        accepted = await queue.cancel(await rt.redis_of(job.namespace, job.pool), job.namespace, job.pool, job.job_id)
    except Exception as exc:
        logger.warning("could not cancel %s: %s (the resync retries)", job.job_id, exc)
        return
    rt.cancel_sent.add(job.uid)
    rt.metrics.cancels.labels(via="spec").inc()
    if accepted:
        rt.recorder.normal(job_ref(job), "CancelRequested", "cancellation sent to the pool's workers")


async def job_deleted(rt: Runtime, job: TrackedJob) -> None:
    """A deleted Job: cancel it if it still runs or waits, and drop its Redis record."""
    rt.index.forget_job(job.namespace, job.name, job.uid)
    rt.waiting.discard(job.job_id)
    rt.cancel_sent.discard(job.uid)
    rt.ttl.forget(job.job_id)
    if not job.pool:
        return
    try:
        redis = await rt.redis_of(job.namespace, job.pool)
        record = await queue.get_record(redis, job.namespace, job.pool, job.job_id)
        if record is None or record.uid != job.uid:
            return
        if not record.state.finished:
            await queue.cancel(redis, job.namespace, job.pool, job.job_id)
            rt.metrics.cancels.labels(via="delete").inc()
            record = await queue.get_record(redis, job.namespace, job.pool, job.job_id)
        # A running job's worker still has to stop its handler and record that; its record then
        # expires on Redis' result TTL. Everything else can go now.
        if record is not None and record.state is not JobState.RUNNING:
            await queue.delete_job(redis, job.namespace, job.pool, job.job_id)
    except Exception as exc:
        logger.warning("cleanup of deleted job %s failed: %s", job.job_id, exc)


async def retry_waiting(rt: Runtime, namespace: str | None = None, pool: str | None = None) -> None:
    """Evaluate again the Jobs that wait (for a pool, a handler, Redis); all of them or one pool's."""
    for job_id in list(rt.waiting):
        job = rt.index.jobs.get(job_id)
        if job is None or parse_phase(job.status) not in (None, JobState.PENDING):
            rt.waiting.discard(job_id)
            continue
        if namespace is not None and (job.namespace != namespace or job.pool != pool):
            continue
        try:
            await admit(rt, job)
        except Exception:
            logger.exception("admission of %s failed", job_id)
    # Jobs the operator saw but never handled (an exception in the watch handler) are caught here too.
    if namespace is None:
        for job in list(rt.index.jobs.values()):
            if parse_phase(job.status) is None and job.job_id not in rt.waiting and not job.spec.get("cancel"):
                await asyncio.sleep(0)
                try:
                    await admit(rt, job)
                except Exception:
                    logger.exception("admission of %s failed", job.job_id)
    rt.metrics.jobs_waiting.set(len(rt.waiting))


async def park_jobs_of_deleted_pool(rt: Runtime, namespace: str, pool: str) -> int:
    """Move the Queued and Running Jobs of a deleted pool to Pending (``PoolDeleted``, a Warning Event).

    Why not fail them: deleting a WorkerPool deletes its Deployment and pods, not its
    stream in Redis, and is often the first half of a re-create (``kubectl replace``, a
    GitOps prune and apply). A draining worker hands its job back, so the stream still
    holds every unfinished job, and the pool re-created under the same name runs them,
    as a Job applied before its pool waits for it (``PoolNotFound``). A user who does not
    want them any more cancels or deletes them. Returns how many Jobs were parked.
    """
    message = f"WorkerPool {pool} was deleted; the job waits on its stream and runs if the pool is re-created"
    parked = 0
    now = time.time()
    for job in rt.index.jobs_of_pool(namespace, pool):
        if parse_phase(job.status) not in (JobState.QUEUED, JobState.RUNNING):
            continue
        result = await rt.writer.write(
            job.namespace, job.name, job.uid,
            lambda current: job_status.pool_deleted(current.status, message, now=now),
            source="pool-deleted",
        )
        if result is WriteResult.WRITTEN:
            parked += 1
            rt.waiting.add(job.job_id)
            rt.recorder.warning(job_ref(job), job_status.POOL_DELETED, message)
    rt.metrics.jobs_waiting.set(len(rt.waiting))
    return parked


async def delete_expired(rt: Runtime) -> None:
    """Delete every finished Job whose TTL has passed, then its Redis record (a periodic chore).

    The Job is read again first: its TTL may have been raised or removed since it was scheduled.
    """
    for job_id, uid in rt.ttl.pop_due():
        namespace, name = job_object_of(job_id)
        try:
            live = await rt.writer.fetch(namespace, name)
        except ApiError as exc:
            logger.warning("TTL check of %s failed: %s (retried)", job_id, exc)
            job = rt.index.jobs.get(job_id)
            if job is not None:
                rt.ttl.consider(job)
            continue
        if live is None or live.uid != uid:
            continue  # gone already, or a namesake with its own TTL
        if not is_due(live, uid, now=time.time()):
            rt.ttl.consider(live)  # edited since: scheduled anew (or not at all)
            continue
        pool = live.pool or None
        run = job_status.reruns_of(live.status)
        try:
            rerun = bool(pool) and await _rerun_since(rt, live, run)
        except Exception as exc:  # its Redis is down or its Secret unreadable: try again next turn
            logger.warning("TTL check of %s waits for its pool's Redis: %s", job_id, type(exc).__name__)
            rt.ttl.consider(live)
            continue
        if rerun:
            rt.ttl.consider(live)  # unscheduled once the status sync folds the new run (Queued)
            continue
        try:
            await rt.api.delete(custom_path(JOB_PLURAL, namespace, name), uid=uid)
        except (NotFound, Conflict):
            pass  # gone already / a namesake with another uid
        except ApiError as exc:
            logger.warning("TTL deletion of %s failed: %s", job_id, exc)
            continue
        rt.metrics.ttl_deleted.inc()
        logger.info("deleted %s: ttlSecondsAfterFinished passed", job_id)
        if pool:
            # Only the run this decision saw finish: one rerun since keeps its record (lua/forget.lua).
            try:
                await queue.forget_finished(await rt.redis_of(namespace, pool), namespace, pool, job_id,
                                            uid=uid, run=run)
            except Exception as exc:  # the record expires on Redis' own result TTL anyway
                logger.warning("forgetting %s in Redis failed: %s", job_id, type(exc).__name__)


async def _rerun_since(rt: Runtime, live: TrackedJob, run: int) -> bool:
    """Whether the finished Job ``live`` (showing run ``run``) was rerun in Redis since its status
    was written (``kubeworkers jobs retry``): its record is of a later run, or not finished. Its
    TTL must then wait for the status sync, which moves the Job back to Queued."""
    record = await queue.get_record(await rt.redis_of(live.namespace, live.pool), live.namespace, live.pool,
                                    live.job_id)
    return record is not None and record.uid == live.uid and (record.run > run or not record.state.finished)
