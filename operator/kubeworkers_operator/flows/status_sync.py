"""The status sync: one background task that mirrors worker events into ``Job.status``.

It reads the events streams of the pools (:attr:`~kubeworkers.protocol.PoolKeys.events`, one
per pool, in the pool's slot) through the operator's own consumer group, one consumer per
Redis: on one server (plain or Sentinel) one blocking ``XREADGROUP`` over every pool's stream;
on a Redis Cluster, where one command cannot span slots, one pipelined round of non-blocking
reads per turn (split per node by the client), :data:`CLUSTER_POLL_SECONDS` apart while idle.
It groups a batch by job, folds each job's events into one status
(:mod:`kubeworkers_operator.model.job_status`) and writes it with one patch, with concurrency bounded by
the API client. Entries are acked only after their patch landed (or turned out
unnecessary, or the Job is gone), so a crash replays them, and folding makes
replays harmless.

The periodic chores around it (the resync from records, TTL deletions, pending
retries, the orphan sweep, trimming this stream) are each owned by their own
module and run by :mod:`.scheduler`; this module owns the consumer and the trim.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from kubeworkers import redis_ops, stats
from kubeworkers.connection import is_cluster_client
from kubeworkers.protocol import JobEvent, PoolKeys, is_sdk_job, job_object_of
from redis.exceptions import RedisError, ResponseError

from kubeworkers_operator.adapters.status_writer import WriteResult
from kubeworkers_operator.model.index import TrackedJob
from kubeworkers_operator.model.job_status import (
    apply_events,
    is_finished,
    merge_patch,
    only_progress_changed,
    with_enqueued_condition,
)
from kubeworkers_operator.runtime import Runtime, group_by_redis, redis_label

logger = logging.getLogger(__name__)

#: How often the consumer re-reads its own pending entries (patches that failed) and claims
#: entries another operator instance left behind.
PENDING_RECHECK_SECONDS = 15.0
#: Period of trimming the events stream below what every consumer group has acked.
TRIM_SECONDS = 30.0
#: A consumer group of the events stream whose consumers have all been idle this long no longer
#: holds the trim back: an operator restart or a Redis outage is far shorter, a removed
#: namespace-scoped operator's group would otherwise keep every event for ever.
STALE_GROUP_SECONDS = 3600.0
#: How often the :class:`SyncFleet` looks for Redis servers that came into use (a pool's Secret
#: read for the first time) or went out of it (a Secret edited to another URL).
FLEET_RECONCILE_SECONDS = 1.0
#: How often a consumer looks again which pools (so which events streams) are on its Redis.
STREAMS_REFRESH_SECONDS = 1.0
#: On a Redis Cluster: the wait between two rounds of reads that found nothing (the latency a
#: status may gain there, against one blocking read on one server).
CLUSTER_POLL_SECONDS = 0.25


def entry_ref(stream: str, entry_id: str) -> str:
    """What the consumer calls one entry of one pool's events stream (ids repeat across streams)."""
    return f"{stream}#{entry_id}"


def _by_stream(refs: Iterable[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for ref in refs:
        stream, sep, entry_id = ref.rpartition("#")
        if sep:
            out[stream].append(entry_id)
    return out


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


def trim_floor(groups: Iterable[tuple[str, str | None]]) -> str | None:
    """The lowest id any group still needs, from each group's (last-delivered id, oldest pending id).

    Every group (the cluster-wide operator's, each namespace-scoped operator's) must be
    past an entry, and none may still hold it pending, before it can go. None: nothing
    can be trimmed (no groups, or one that has read nothing yet).
    """
    floor: tuple[int, int] | None = None
    for last_delivered, oldest_pending in groups:
        keep_from = _stream_id(last_delivered)
        if oldest_pending:
            keep_from = min(keep_from, _stream_id(oldest_pending))
        floor = keep_from if floor is None else min(floor, keep_from)
    if floor is None or floor == (0, 0):
        return None
    return f"{floor[0]}-{floor[1]}"


async def trim_events(r: aioredis.Redis, stream: str, *, stale_after_seconds: float = STALE_GROUP_SECONDS) -> int:
    """Trim one pool's events stream below what every live consumer group has read and acked (a periodic chore).

    Never trims away an event a live group has yet to apply (:func:`trim_floor`). A group whose
    consumers have all been idle for over ``stale_after_seconds`` (a removed namespace-scoped
    operator's) is left out, so it cannot hold the stream back for ever; a group with no consumer
    yet is kept (nothing tells its age). Either way the writers' cap
    (:data:`~kubeworkers.protocol.EVENTS_MAXLEN`) bounds the stream. Returns entries removed.
    """
    try:
        groups: list[dict[str, Any]] = await r.xinfo_groups(stream)
    except ResponseError:
        return 0  # no stream yet
    needs: list[tuple[str, str | None]] = []
    for group in groups:
        name = _text(group["name"])
        if await _stale(r, stream, name, int(group.get("consumers") or 0), stale_after_seconds):
            continue
        oldest_pending: str | None = None
        if int(group.get("pending") or 0):
            summary: Any = await r.xpending(stream, name)
            oldest_pending = _text(summary["min"]) if summary.get("min") else None
        needs.append((_text(group["last-delivered-id"]), oldest_pending))
    floor = trim_floor(needs)
    if floor is None:
        return 0
    removed: int = await r.xtrim(stream, minid=floor, approximate=False)
    return removed


async def trim_and_measure(rt: Runtime) -> int:
    """The ``events-trim`` chore: :func:`trim_events` on every known pool's events stream, on the pool's
    Redis, then the longest events stream and every known pool's dead-letter stream length into the
    metrics (one pipelined round trip per Redis), and each pool's queued and in-flight jobs by handler
    (one round trip per pool), each
    read on the pool's own Redis. Returns entries trimmed. A Redis that is down is skipped (its pools'
    series are left out until it is back); the others go on."""
    pools = sorted(rt.index.pools)
    groups = await group_by_redis(rt, pools)
    clients = [client for client, _ in groups]
    removed = 0
    longest = 0
    dead_letters: list[tuple[tuple[str, str], int]] = []
    measured: list[stats.PoolStats] = []
    for client in clients:
        on_this = next((listed for known, listed in groups if known is client), [])
        try:
            for namespace, pool in on_this:
                removed += await trim_events(client, PoolKeys(namespace, pool).events)
            async with client.pipeline(transaction=False) as pipe:
                for namespace, pool in on_this:
                    pipe.xlen(PoolKeys(namespace, pool).events)
                    pipe.xlen(PoolKeys(namespace, pool).dead_letter)
                lengths: list[int] = await pipe.execute()
            # Queued and in flight per handler: the numbers `kubeworkers stats` shows, read the same way.
            found = [await redis_ops.run(client, stats.stats_plan(namespace, pool, 60)) for namespace, pool in on_this]
        except (RedisError, OSError) as exc:
            logger.warning("events trim and gauges of %s skipped: %s", redis_label(rt, client), type(exc).__name__)
            continue
        longest = max([longest, *lengths[0::2]])
        dead_letters.extend(zip(on_this, lengths[1::2], strict=True))
        measured.extend(found)
    rt.metrics.events_stream_length.set(longest)
    rt.metrics.dead_letter_length.clear()  # a deleted pool's series ends
    for (namespace, pool), length in dead_letters:
        rt.metrics.dead_letter_length.labels(namespace=namespace, pool=pool).set(length)
    rt.metrics.jobs_queued.clear()
    rt.metrics.jobs_in_flight.clear()
    for pool_stats in measured:
        for h in pool_stats.handlers:
            rt.metrics.jobs_queued.labels(
                namespace=pool_stats.namespace, pool=pool_stats.pool, handler=h.handler).set(h.queued)
            rt.metrics.jobs_in_flight.labels(
                namespace=pool_stats.namespace, pool=pool_stats.pool, handler=h.handler).set(h.in_flight)
    return removed


async def _stale(r: aioredis.Redis, stream: str, group: str, consumers: int, stale_after_seconds: float) -> bool:
    """Whether every consumer of ``group`` has been idle (no read, claim or ack) for over the bound."""
    if consumers == 0:
        return False
    listed: list[dict[str, Any]] = await r.xinfo_consumers(stream, group)
    return bool(listed) and min(int(c.get("idle") or 0) for c in listed) > stale_after_seconds * 1000


class StatusSync:
    """Consumes the events stream and keeps Job statuses converged. Start with :meth:`run`."""

    def __init__(
        self, rt: Runtime, *, clock: Callable[[], float] = time.monotonic, claim_at_start: bool = False,
        redis: aioredis.Redis | None = None,
    ) -> None:
        self.rt = rt
        self.redis = rt.redis if redis is None else redis
        """The Redis whose events stream this consumer reads (one consumer per Redis in use)."""
        self._claim_at_start = claim_at_start
        """A new leader takes every other consumer's unacked events at once: the replica that
        held them has stopped leading, so waiting ``--claim-idle`` would only delay statuses."""
        self._clock = clock
        self._deferred: dict[str, _Deferred] = {}
        self._last_progress_write: dict[str, float] = {}
        """job id -> when its status was last written; an entry older than the progress interval limits
        nothing any more and is pruned (:meth:`_prune`), so Jobs deleted mid-run leave nothing behind."""
        self._next_prune = 0.0
        #: Wall time of the consumer loop's last turn (liveness).
        self.consumer_turned_at = time.time()
        self._streams: list[str] = []
        self._streams_at = 0.0
        self._seen: set[str] = set()
        self._grouped: set[str] = set()
        self._cursors: dict[str, str] = {}
        """stream -> where the pass over our own pending entries is (empty: reading new entries)."""

    # ------------------------------------------------------------------ consumer

    async def streams(self) -> list[str]:
        """The events streams this consumer reads: those of the known pools on its Redis (of its
        namespaces, for a namespace-scoped operator), looked up again every
        :data:`STREAMS_REFRESH_SECONDS`. A stream new to it is read from its own pending entries first."""
        now = time.monotonic()
        if now >= self._streams_at:
            namespaces = self.rt.settings.namespaces
            pools = [p for p in sorted(self.rt.index.pools) if not namespaces or p[0] in namespaces]
            mine = next((listed for client, listed in await group_by_redis(self.rt, pools) if client is self.redis), [])
            self._streams = [PoolKeys(namespace, pool).events for namespace, pool in mine]
            self._streams_at = now + STREAMS_REFRESH_SECONDS
            for stream in self._streams:
                if stream not in self._seen:
                    self._seen.add(stream)
                    self._cursors[stream] = "0"
        return self._streams

    async def ensure_group(self, streams: Iterable[str]) -> None:
        """Create the operator's consumer group on each stream, from the stream's start (replays are harmless)."""
        for stream in streams:
            if stream in self._grouped:
                continue
            try:
                await self.redis.xgroup_create(stream, self.rt.settings.events_group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self._grouped.add(stream)

    async def run(self) -> None:
        """Consume forever; Redis outages are waited out, never fatal."""
        settings = self.rt.settings
        recheck_at = time.monotonic() + PENDING_RECHECK_SECONDS
        while True:
            self.consumer_turned_at = time.time()
            self.rt.metrics.loop_heartbeat.set(self.consumer_turned_at)
            try:
                streams = await self.streams()
                await self.ensure_group(streams)
                if self._claim_at_start:
                    await self._claim_abandoned(streams, idle_seconds=0.0)
                    self._claim_at_start = False
                if not self._cursors and time.monotonic() >= recheck_at:
                    self._cursors = dict.fromkeys(streams, "0")
                    recheck_at = time.monotonic() + PENDING_RECHECK_SECONDS
                    await self._claim_abandoned(streams)
                if not streams:
                    await asyncio.sleep(min(settings.sync_block_ms / 1000, STREAMS_REFRESH_SECONDS))
                    entries = []
                elif self._cursors:  # a pass over our own pending entries (a previous life's, failed patches)
                    starts = {s: c for s, c in self._cursors.items() if s in set(streams)}
                    entries = await self._read(starts, block=None)
                    last: dict[str, str] = {}
                    for ref, _ in entries:
                        stream, _, entry_id = ref.rpartition("#")
                        last[stream] = entry_id
                    self._cursors = last
                else:
                    wait = self._next_deferred_in()
                    block = settings.sync_block_ms
                    if wait is not None:
                        block = max(1, min(block, int(wait * 1000)))
                    entries = await self._read(dict.fromkeys(streams, ">"), block=block)
                if entries:
                    await self.process(entries)
                await self._flush_due_deferred()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                logger.warning("events streams of %s unavailable (%s); retrying", redis_label(self.rt, self.redis),
                               type(exc).__name__)
                self._grouped.clear()
                self._cursors = dict.fromkeys(self._streams, "0")
                await asyncio.sleep(1.0)
            except Exception:
                logger.exception("status sync turn failed; retrying")
                self._cursors = dict.fromkeys(self._streams, "0")
                await asyncio.sleep(1.0)

    async def _read(self, starts: dict[str, str], block: int | None) -> list[tuple[str, dict[bytes, bytes]]]:
        """Entries of the streams from their starts (``>``: new ones; an id: our own pending after it),
        as (:func:`entry_ref`, fields)."""
        if not starts:
            return []
        group, consumer, count = self.rt.settings.events_group, self.rt.settings.consumer_name, \
            self.rt.settings.sync_batch_size
        replies: list[Any]
        if len(starts) == 1 or not is_cluster_client(self.redis):
            replies = [await self.redis.xreadgroup(group, consumer, starts, count=count, block=block)]  # type: ignore[arg-type]
        else:  # one slot per stream: no command spans them, so a pipelined round (one batch per node)
            async with self.redis.pipeline(transaction=False) as pipe:
                for stream, start in starts.items():
                    pipe.xreadgroup(group, consumer, {stream: start}, count=count)
                replies = await pipe.execute()
            if block is not None and not any(replies):
                await asyncio.sleep(min(block / 1000, CLUSTER_POLL_SECONDS))
        out: list[tuple[str, dict[bytes, bytes]]] = []
        for reply in replies:
            for stream, items in reply or []:
                for entry_id, fields in items:
                    # A pending entry trimmed from the stream comes back with no fields: just ack it.
                    out.append((entry_ref(_text(stream), _text(entry_id)), fields or {}))
        return out

    async def _ack(self, refs: Iterable[str]) -> None:
        for stream, ids in _by_stream(refs).items():
            await self.redis.xack(stream, self.rt.settings.events_group, *ids)

    async def _claim_abandoned(self, streams: Iterable[str], idle_seconds: float | None = None) -> None:
        """Take over entries another consumer read but never acked (an operator pod that died)."""
        idle = self.rt.settings.claim_idle_seconds if idle_seconds is None else idle_seconds
        idle_ms = int(idle * 1000)
        for stream in streams:
            start = "0-0"
            while True:
                # Without JUSTID: redis-py drops the cursor from JUSTID replies. The claimed entries
                # are then processed by the pass over our own pending entries that follows.
                reply: Any = await self.redis.xautoclaim(
                    stream, self.rt.settings.events_group, self.rt.settings.consumer_name, idle_ms, start, count=500,
                )
                start = _text(reply[0])
                if start == "0-0" or not reply[1]:
                    break
                self._cursors.setdefault(stream, "0")

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
            if is_sdk_job(event.job_id, event.uid):
                done.append(entry_id)  # no Job object to write to
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
            await self._ack(done)

    async def _sync_job(self, job_id: str, entries: list[tuple[str, JobEvent]], *, force: bool = False) -> bool:
        """Write one job's folded events. False: deferred by the progress rate limit (not acked yet)."""
        rt = self.rt
        namespace, name = job_object_of(job_id)
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
                if self._clock() < due:
                    self._deferred[job_id] = _Deferred(due, list(entries))
                    return False
        result = await rt.writer.write(namespace, name, uid, compute, source="events")
        self._prune()
        if result is WriteResult.GONE:
            self._last_progress_write.pop(job_id, None)
            self._deferred.pop(job_id, None)
        if result is WriteResult.WRITTEN:
            self._last_progress_write[job_id] = self._clock()
            written = rt.index.jobs.get(job_id)
            if written is not None and is_finished(written.status):
                self._last_progress_write.pop(job_id, None)
                rt.ttl.consider(written)
        else:
            rt.metrics.events_stale.inc(len(entries))
        return True

    def _prune(self) -> None:
        """Drop rate-limit entries older than the progress interval (at most once per interval)."""
        now = self._clock()
        if now < self._next_prune:
            return
        interval = self.rt.settings.progress_interval_seconds
        self._next_prune = now + interval
        stale = [job_id for job_id, at in self._last_progress_write.items() if at + interval <= now]
        for job_id in stale:
            del self._last_progress_write[job_id]

    def _next_deferred_in(self) -> float | None:
        if not self._deferred:
            return None
        return max(0.0, min(d.due for d in self._deferred.values()) - self._clock())

    async def _flush_due_deferred(self) -> None:
        now = self._clock()
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
            await self._ack(acks)


class SyncFleet:
    """One :class:`StatusSync` per Redis some pool is on: every events stream in use is consumed.

    Each pool's workers write their events to the pool's stream on the pool's Redis; a Redis that comes
    into use gets its consumer within :data:`FLEET_RECONCILE_SECONDS`, one that goes out of use
    loses it (and its client is closed). The consumers are independent: one Redis down stalls only
    the statuses of the pools on it. Start with :meth:`run`.
    """

    def __init__(self, rt: Runtime, *, claim_at_start: bool = False) -> None:
        self.rt = rt
        self._claim_at_start = claim_at_start
        self.syncs: dict[int, tuple[aioredis.Redis, StatusSync, asyncio.Task[None]]] = {}
        self.reconciled_at = time.time()

    @property
    def consumer_turned_at(self) -> float:
        """Wall time of the last turn of the stalest consumer (liveness)."""
        turned = [sync.consumer_turned_at for _, sync, _ in self.syncs.values()]
        return min([*turned, self.reconciled_at])

    def sync_of(self, redis: aioredis.Redis) -> StatusSync | None:
        known = self.syncs.get(id(redis))
        return None if known is None or known[0] is not redis else known[1]

    async def reconcile(self) -> None:
        """Start a consumer for each Redis in use that has none; stop those of Redis no longer in use."""
        in_use = self.rt.redises.in_use()
        live = {id(client) for _, client in in_use}
        for key in [key for key in self.syncs if key not in live]:
            _, _, task = self.syncs.pop(key)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for label, client in in_use:
            if id(client) not in self.syncs:
                sync = StatusSync(self.rt, claim_at_start=self._claim_at_start, redis=client)
                task = asyncio.create_task(sync.run(), name=f"status-sync ({label})")
                self.syncs[id(client)] = (client, sync, task)
                logger.info("status sync reads the events stream of %s", label)
        await self.rt.redises.retire_unused()

    async def run(self) -> None:
        """Reconcile forever; a consumer that ended (it never should) is started again."""
        try:
            while True:
                self.reconciled_at = time.time()
                for key, (_, _, task) in list(self.syncs.items()):
                    if task.done():
                        del self.syncs[key]
                try:
                    await self.reconcile()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("status sync fleet turn failed; retrying")
                await asyncio.sleep(FLEET_RECONCILE_SECONDS)
        finally:
            tasks = [task for _, _, task in self.syncs.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
