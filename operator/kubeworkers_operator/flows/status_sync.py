"""The status sync: one background task that mirrors worker events into ``Job.status``.

It reads :data:`~kubeworkers.protocol.EVENTS_STREAM` through the operator's own
consumer group, groups a batch by job, folds each job's events into one status
(:mod:`.job_status`) and writes it with one patch, with concurrency bounded by
the API client. Entries are acked only after their patch landed (or turned out
unnecessary, or the Job is gone), so a crash replays them, and folding makes
replays harmless.

A second loop, the housekeeping, is the safety net and the clock: it resyncs
unfinished Jobs from their records in Redis, retries Jobs waiting for a pool,
and deletes finished Jobs whose ``ttlSecondsAfterFinished`` has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from kubeworkers import queue
from kubeworkers.protocol import EVENTS_STREAM, JobEvent, JobRecord, JobState, PoolKeys
from kubeworkers.resources import JOB_PLURAL
from redis.exceptions import RedisError, ResponseError

from kubeworkers_operator.adapters.kube import ApiError, Conflict, NotFound, custom_path
from kubeworkers_operator.adapters.status_writer import WriteResult, job_ref
from kubeworkers_operator.flows import jobs
from kubeworkers_operator.model import admission
from kubeworkers_operator.model.index import TrackedJob
from kubeworkers_operator.model.job_status import (
    apply_events,
    apply_record,
    is_finished,
    merge_patch,
    only_progress_changed,
    parse_phase,
    with_enqueued_condition,
)
from kubeworkers_operator.runtime import Runtime

logger = logging.getLogger(__name__)

#: How often the consumer re-reads its own pending entries (patches that failed) and claims
#: entries another operator instance left behind.
PENDING_RECHECK_SECONDS = 15.0
#: Period of trimming the events stream below what every consumer group has acked.
TRIM_SECONDS = 30.0
#: Records read per Redis pipeline during a resync.
RESYNC_CHUNK = 500


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass
class _Deferred:
    """Progress-only events of one job held back by the rate limit."""

    due: float
    entries: list[tuple[str, JobEvent]] = field(default_factory=list)


def _stream_id(value: str) -> tuple[int, int]:
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


async def trim_events(r: aioredis.Redis) -> int:
    """Trim the events stream below what every consumer group has read and acked.

    Every group (the cluster-wide operator's, each namespace-scoped operator's) must
    be past an entry, and no group may still hold it pending, before it goes: this
    never trims away an event someone has yet to apply. Returns entries removed.
    """
    try:
        groups: list[dict[str, Any]] = await r.xinfo_groups(EVENTS_STREAM)
    except ResponseError:
        return 0  # no stream yet
    if not groups:
        return 0
    floor: tuple[int, int] | None = None
    for group in groups:
        name = _text(group["name"])
        last = _stream_id(_text(group["last-delivered-id"]))
        keep_from = last
        if int(group.get("pending") or 0):
            summary: Any = await r.xpending(EVENTS_STREAM, name)
            if summary.get("min"):
                keep_from = min(keep_from, _stream_id(_text(summary["min"])))
        floor = keep_from if floor is None else min(floor, keep_from)
    if floor is None or floor == (0, 0):
        return 0
    removed: int = await r.xtrim(EVENTS_STREAM, minid=f"{floor[0]}-{floor[1]}", approximate=False)
    return removed


def _record_folder(record: JobRecord, limit: int) -> Callable[[TrackedJob], dict[str, Any]]:
    def compute(job: TrackedJob) -> dict[str, Any]:
        return with_enqueued_condition(apply_record(job.status, record, output_limit=limit), job.pool)

    return compute


class StatusSync:
    """Consumes the events stream and keeps Job statuses converged. Start with :meth:`run`."""

    def __init__(self, rt: Runtime, periodic: list[Callable[[], Awaitable[None]]] | None = None) -> None:
        self.rt = rt
        #: Extra chores of the housekeeping loop, run every ``pending_retry_seconds``.
        self.periodic = periodic or []
        self._deferred: dict[str, _Deferred] = {}
        self._last_progress_write: dict[str, float] = {}
        self.consumer_turned_at = time.time()
        self.housekeeping_turned_at = time.time()

    # ------------------------------------------------------------------ consumer

    async def ensure_group(self) -> None:
        """Create the operator's consumer group, from the stream's start (replays are harmless)."""
        try:
            await self.rt.redis.xgroup_create(EVENTS_STREAM, self.rt.settings.events_group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self) -> None:
        """Consume forever; Redis outages are waited out, never fatal."""
        settings = self.rt.settings
        cursor: str | None = "0"  # first our own pending entries (a previous life's), then new ones
        recheck_at = time.monotonic() + PENDING_RECHECK_SECONDS
        group_ready = False
        while True:
            self.consumer_turned_at = time.time()
            self.rt.metrics.loop_heartbeat.set(self.consumer_turned_at)
            try:
                if not group_ready:
                    await self.ensure_group()
                    group_ready = True
                if cursor is None and time.monotonic() >= recheck_at:
                    cursor = "0"
                    recheck_at = time.monotonic() + PENDING_RECHECK_SECONDS
                    await self._claim_abandoned()
                if cursor is not None:
                    entries = await self._read(cursor, block=None)
                    cursor = entries[-1][0] if entries else None
                else:
                    wait = self._next_deferred_in()
                    block = settings.sync_block_ms
                    if wait is not None:
                        block = max(1, min(block, int(wait * 1000)))
                    entries = await self._read(">", block=block)
                if entries:
                    await self.process(entries)
                await self._flush_due_deferred()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                logger.warning("events stream unavailable (%s); retrying", exc)
                group_ready = False
                cursor = "0"
                await asyncio.sleep(1.0)
            except Exception:
                logger.exception("status sync turn failed; retrying")
                cursor = "0"
                await asyncio.sleep(1.0)

    async def _read(self, start: str, block: int | None) -> list[tuple[str, dict[bytes, bytes]]]:
        reply: Any = await self.rt.redis.xreadgroup(
            self.rt.settings.events_group, self.rt.settings.consumer_name, {EVENTS_STREAM: start},
            count=self.rt.settings.sync_batch_size, block=block,
        )
        out: list[tuple[str, dict[bytes, bytes]]] = []
        for _stream, items in reply or []:
            for entry_id, fields in items:
                # A pending entry trimmed from the stream comes back with no fields: just ack it.
                out.append((_text(entry_id), fields or {}))
        return out

    async def _claim_abandoned(self) -> None:
        """Take over entries another consumer read but never acked (an operator pod that died)."""
        idle_ms = int(self.rt.settings.claim_idle_seconds * 1000)
        start = "0-0"
        while True:
            # Without JUSTID: redis-py drops the cursor from JUSTID replies. The claimed entries
            # are then processed by the pass over our own pending entries that follows.
            reply: Any = await self.rt.redis.xautoclaim(
                EVENTS_STREAM, self.rt.settings.events_group, self.rt.settings.consumer_name,
                idle_ms, start, count=500,
            )
            start = _text(reply[0])
            if start == "0-0" or not reply[1]:
                return

    async def process(self, entries: list[tuple[str, dict[bytes, bytes]]]) -> None:
        """Fold and write one batch of stream entries; ack what is done."""
        metrics = self.rt.metrics
        metrics.events_consumed.inc(len(entries))
        by_job: dict[str, list[tuple[str, JobEvent]]] = defaultdict(list)
        done: list[str] = []
        for entry_id, fields in entries:
            try:
                event = JobEvent.from_fields(fields)
            except ValueError:
                done.append(entry_id)  # unreadable (or trimmed) entries would only clog the group
                continue
            if event.uid == event.job_id or "/" not in event.job_id:
                # An SDK-submitted job: there is no Job object to write to.
                done.append(entry_id)
                continue
            if self.rt.settings.namespaces and event.namespace not in self.rt.settings.namespaces:
                done.append(entry_id)  # another operator's namespace (it reads its own group)
                continue
            by_job[event.job_id].append((entry_id, event))
        for job_id, deferred in list(self._deferred.items()):
            if job_id in by_job:
                by_job[job_id][:0] = deferred.entries
                del self._deferred[job_id]
        if by_job:
            metrics.sync_batch.observe(len(by_job))
            results = await asyncio.gather(
                *(self._sync_job(job_id, evs) for job_id, evs in by_job.items()), return_exceptions=True
            )
            for (job_id, evs), result in zip(by_job.items(), results, strict=True):
                if isinstance(result, BaseException):
                    logger.warning("status of %s not written (%s); will retry", job_id, result)
                    continue
                if result:
                    done.extend(entry_id for entry_id, _ in evs)
        if done:
            await self.rt.redis.xack(EVENTS_STREAM, self.rt.settings.events_group, *done)

    async def _sync_job(self, job_id: str, entries: list[tuple[str, JobEvent]], *, force: bool = False) -> bool:
        """Write one job's folded events. False: deferred by the progress rate limit (not acked yet)."""
        rt = self.rt
        namespace, name = job_id.split("/", 1)
        uid = entries[-1][1].uid
        events = [ev for _, ev in entries]
        limit = rt.settings.output_limit_bytes

        def compute(job: TrackedJob) -> dict[str, Any]:
            folded = apply_events(job.status, [ev for ev in events if ev.uid == job.uid], output_limit=limit)
            return with_enqueued_condition(folded, job.pool)

        job = rt.index.jobs.get(job_id)
        if job is not None and job.uid == uid and not force:
            patch = merge_patch(job.status, compute(job))
            if not patch:
                rt.metrics.events_stale.inc(len(entries))
                return True
            if only_progress_changed(patch):
                last = self._last_progress_write.get(job_id, 0.0)
                due = last + rt.settings.progress_interval_seconds
                if time.monotonic() < due:
                    self._deferred[job_id] = _Deferred(due, list(entries))
                    return False
        result = await rt.writer.write(namespace, name, uid, compute, source="events")
        if result is WriteResult.WRITTEN:
            self._last_progress_write[job_id] = time.monotonic()
            written = rt.index.jobs.get(job_id)
            if written is not None and is_finished(written.status):
                self._last_progress_write.pop(job_id, None)
                rt.ttl.consider(written)
        else:
            rt.metrics.events_stale.inc(len(entries))
        return True

    def _next_deferred_in(self) -> float | None:
        if not self._deferred:
            return None
        return max(0.0, min(d.due for d in self._deferred.values()) - time.monotonic())

    async def _flush_due_deferred(self) -> None:
        now = time.monotonic()
        due = [job_id for job_id, d in self._deferred.items() if d.due <= now]
        if not due:
            return
        batches = {job_id: self._deferred.pop(job_id).entries for job_id in due}
        results = await asyncio.gather(
            *(self._sync_job(job_id, evs, force=True) for job_id, evs in batches.items()), return_exceptions=True
        )
        acks = [
            entry_id
            for (job_id, evs), result in zip(batches.items(), results, strict=True)
            if result is True
            for entry_id, _ in evs
        ]
        if acks:
            await self.rt.redis.xack(EVENTS_STREAM, self.rt.settings.events_group, *acks)

    # ------------------------------------------------------------------ housekeeping

    async def housekeeping(self) -> None:
        """TTL deletions every second, pending retries and the Redis resync on their periods."""
        settings = self.rt.settings
        next_resync = time.monotonic() + settings.resync_interval_seconds
        next_pending = time.monotonic() + settings.pending_retry_seconds
        next_trim = time.monotonic() + TRIM_SECONDS
        # The first sweep waits a full period: by then kopf has listed every Job into the index.
        next_orphans = time.monotonic() + settings.orphan_sweep_seconds
        while True:
            self.housekeeping_turned_at = time.time()
            try:
                await self.delete_expired()
                if time.monotonic() >= next_pending:
                    await jobs.retry_waiting(self.rt)
                    for chore in self.periodic:
                        await chore()
                    next_pending = time.monotonic() + settings.pending_retry_seconds
                if time.monotonic() >= next_orphans:
                    await self.sweep_orphans()
                    next_orphans = time.monotonic() + settings.orphan_sweep_seconds
                if time.monotonic() >= next_trim:
                    await trim_events(self.rt.redis)
                    next_trim = time.monotonic() + TRIM_SECONDS
                if time.monotonic() >= next_resync:
                    await self.resync()
                    next_resync = time.monotonic() + settings.resync_interval_seconds
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("housekeeping turn failed")
            await asyncio.sleep(1.0)

    async def delete_expired(self) -> None:
        """Delete every finished Job whose TTL has passed, then its Redis record."""
        for job_id, uid in self.rt.ttl.pop_due():
            namespace, name = job_id.split("/", 1)
            job = self.rt.index.jobs.get(job_id)
            pool = job.pool if job is not None else None
            try:
                await self.rt.api.delete(custom_path(JOB_PLURAL, namespace, name), uid=uid)
            except (NotFound, Conflict):
                pass  # gone already / a namesake with another uid
            except ApiError as exc:
                logger.warning("TTL deletion of %s failed: %s", job_id, exc)
                continue
            self.rt.metrics.ttl_deleted.inc()
            logger.info("deleted %s: ttlSecondsAfterFinished passed", job_id)
            if pool:
                record = await queue.get_record(self.rt.redis, namespace, pool, job_id)
                if record is not None and record.uid == uid:
                    await queue.delete_job(self.rt.redis, namespace, pool, job_id)

    async def resync(self) -> int:
        """Converge every unfinished Job to its record in Redis; returns the statuses corrected.

        Catches whatever the events path missed (events trimmed while the operator was
        down, an event a worker failed to append). A Queued or Running Job whose record
        is gone (Redis lost data) is enqueued again: at-least-once, never lost.
        """
        rt = self.rt
        candidates = [
            job for job in rt.index.jobs.values()
            if parse_phase(job.status) in (JobState.QUEUED, JobState.RUNNING)
        ]
        corrected = 0
        for start in range(0, len(candidates), RESYNC_CHUNK):
            chunk = candidates[start:start + RESYNC_CHUNK]
            async with rt.redis.pipeline(transaction=False) as pipe:
                for job in chunk:
                    pipe.hgetall(PoolKeys(job.namespace, job.pool).record(job.job_id))
                raws = await pipe.execute()
            limit = rt.settings.output_limit_bytes
            for job, raw in zip(chunk, raws, strict=True):
                record = JobRecord.from_hash(raw) if raw else None
                if record is None:
                    await self._requeue_lost(job)
                    continue
                if record.uid != job.uid:
                    continue
                if job.spec.get("cancel") and not record.state.finished and not record.cancel_requested:
                    await jobs.request_cancel(rt, job)
                result = await rt.writer.write(
                    job.namespace, job.name, job.uid, _record_folder(record, limit), source="resync"
                )
                if result is WriteResult.WRITTEN:
                    corrected += 1
                    rt.metrics.resync_corrections.inc()
                    written = rt.index.jobs.get(job.job_id)
                    if written is not None:
                        rt.ttl.consider(written)
        return corrected

    async def sweep_orphans(self) -> int:
        """Cancel unfinished jobs whose Job no longer exists; returns how many.

        Deletion uses no finalizer, so a Job deleted while the operator was down left its
        job queued or running in Redis. Every candidate is confirmed absent with a GET
        first: a lagging watch must never get a live Job cancelled.
        """
        rt = self.rt
        patterns = [f"kw:{{{ns}/*}}:job:*" for ns in rt.settings.namespaces] or ["kw:{*}:job:*"]
        cancelled = 0
        for pattern in patterns:
            async for key in rt.redis.scan_iter(match=pattern, count=1000):
                job_id, uid, namespace, pool, state = (
                    None if v is None else _text(v)
                    for v in await rt.redis.hmget(key, "job_id", "uid", "namespace", "pool", "state")
                )
                if not (job_id and uid and namespace and pool and state) or uid == job_id or "/" not in job_id:
                    continue  # incomplete, or an SDK job (no Job object behind it)
                if state in ("Succeeded", "Failed", "Cancelled"):
                    continue
                known = rt.index.jobs.get(job_id)
                if known is not None and known.uid == uid:
                    continue
                live = await rt.writer.fetch(namespace, job_id.split("/", 1)[1])
                if live is not None and live.uid == uid:
                    continue
                if await queue.cancel(rt.redis, namespace, pool, job_id):
                    cancelled += 1
                    rt.metrics.cancels.labels(via="orphan").inc()
                    logger.info("cancelled %s: its Job was deleted while the operator was not watching", job_id)
        return cancelled

    async def _requeue_lost(self, job: TrackedJob) -> None:
        from kubeworkers.resources import JobSpec

        try:
            spec = JobSpec.model_validate(job.spec)
        except ValueError:
            return
        if await queue.enqueue(self.rt.redis, admission.message_for(job, spec)):
            logger.warning("record of %s was missing from Redis; enqueued it again", job.job_id)
            self.rt.recorder.warning(
                job_ref(job), "Requeued", "the job's record was missing from Redis; enqueued again"
            )

    async def stop_tasks(self, *tasks: asyncio.Task[None]) -> None:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
