"""The orphan sweep: cancel the jobs whose Job was deleted while the operator was not watching,
and fail the jobs that nothing in Redis can run any more.

Deletion uses no finalizer (see :mod:`.jobs`), so a Job deleted while the operator
was down left its job queued or running in Redis; this periodic chore scans the
served namespaces' job records and cancels those. Every candidate is confirmed
absent with a GET first: a lagging watch must never get a live Job cancelled.

Records are kept for days (the result TTL), so Redis may hold 10⁵ to 10⁶ of them. The
sweep therefore works in bounded turns: one turn SCANs at most
:data:`KEYS_PER_TURN` keys (SCAN ``COUNT`` :data:`SCAN_COUNT`) and reads their
heads with one pipelined ``HMGET`` batch per SCAN reply, then stops; the SCAN
cursor is carried to the next turn (every :data:`TURN_SECONDS`), and a pass over
all records starts at most every ``--orphan-sweep-interval`` seconds. Its
progress is in ``orphan_sweep_keys_scanned_total`` and ``orphan_sweep_passes_total``.

The same pass bounds the records of jobs that would never finish (invariant 8): a Queued or
Running record unchanged for ``--lost-job-age`` seconds is handed to ``fail_lost.lua``, which
fails it (``JobLost``) only if nothing can run it any more: its stream entry is gone, a Running
job's entry is held by no worker, a retry is not in the delayed set. Failing, not expiring:
the job ends with a reason, an event (a Job CR gets its status and a Warning Event through the
status sync) and a dead-letter entry from which it can be replayed, and then expires with the
result TTL like every finished job; nothing is lost silently. Counted in
``lost_jobs_failed_total``. SDK jobs are swept too: they have no Job, but their records fill Redis alike.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from kubeworkers import queue
from kubeworkers.connection import is_cluster_client
from kubeworkers.protocol import FINISHED_STATES, is_sdk_job, job_object_of, record_key_pattern
from redis.exceptions import RedisError

from kubeworkers_operator.model.index import ClusterIndex
from kubeworkers_operator.runtime import Runtime, redis_clients, redis_label

logger = logging.getLogger(__name__)

#: The record fields the sweep reads (``HMGET``), in this order.
HEAD_FIELDS = ("job_id", "uid", "namespace", "pool", "state", "updated_at")
#: Most keys one turn scans (SCAN may return a little more than it is asked for; the turn stops after it).
KEYS_PER_TURN = 10_000
#: ``COUNT`` of each SCAN call; its reply's keys are read in one pipelined batch.
SCAN_COUNT = 1_000
#: Seconds between turns while a pass is under way (the chore's interval).
TURN_SECONDS = 1.0


@dataclass(frozen=True)
class RecordHead:
    """The few fields of a job record the sweep decides on."""

    job_id: str
    uid: str
    namespace: str
    pool: str
    state: str


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def suspect(values: Sequence[bytes | str | None], index: ClusterIndex) -> RecordHead | None:
    """The record (``HEAD_FIELDS`` values) if it may be an orphan: an unfinished job of a Job CR the
    index does not hold under that uid. None for SDK jobs, finished or incomplete records, known Jobs."""
    job_id, uid, namespace, pool, state = (_text(v) for v in values[:5])
    if not (job_id and uid and namespace and pool and state) or is_sdk_job(job_id, uid):
        return None
    if state in FINISHED_STATES:
        return None
    known = index.jobs.get(job_id)
    if known is not None and known.uid == uid:
        return None
    return RecordHead(job_id, uid, namespace, pool, state)


def unchanged_for_long(values: Sequence[bytes | str | None], now: float, age_seconds: float) -> RecordHead | None:
    """The record (``HEAD_FIELDS`` values) if its job is Queued or Running and has not changed for
    ``age_seconds``: a job that may never finish (``fail_lost.lua`` decides). SDK jobs too."""
    job_id, uid, namespace, pool, state, updated_at = (_text(v) for v in values)
    if not (job_id and uid and namespace and pool) or state not in ("Queued", "Running"):
        return None
    try:
        changed = float(updated_at or 0)
    except ValueError:
        changed = 0.0
    if now - changed < age_seconds:
        return None
    return RecordHead(job_id, uid, namespace, pool, state)


@dataclass
class TurnResult:
    """What one turn did."""

    keys: int = 0
    """Keys scanned (and heads read)."""
    calls: int = 0
    """Round trips to Redis: SCAN calls plus pipelined HMGET batches (cancels not counted)."""
    suspects: list[RecordHead] = field(default_factory=list)
    """Possible orphans (:func:`suspect`)."""
    unchanged: list[RecordHead] = field(default_factory=list)
    """Jobs that may never finish (:func:`unchanged_for_long`)."""
    pass_completed: bool = False


@dataclass
class OrphanSweep:
    """The sweep's position between turns: which pattern, which SCAN cursor, when the pass began."""

    patterns: list[str]
    keys_per_turn: int = KEYS_PER_TURN
    scan_count: int = SCAN_COUNT
    period_seconds: float = 300.0
    """Least time from the start of one pass to the start of the next; the first starts one period after
    the sweep was made (by then kopf has listed every Job into the index)."""
    clock: Callable[[], float] = time.monotonic
    lost_job_age_seconds: float = 3600.0
    """Age (since ``updated_at``) from which a Queued or Running record is checked for a lost job."""
    wall_clock: Callable[[], float] = time.time
    """Unix time, to compare with the records' ``updated_at``."""
    passes: int = 0
    """Passes over every record completed so far."""
    _pattern: int = 0
    _cursor: int = 0
    #: On a Redis Cluster: each master's SCAN cursor not yet back at 0 (by node name).
    _node_cursors: dict[str, int] = field(default_factory=dict)
    _in_pass: bool = False
    _last_start: float = 0.0

    def __post_init__(self) -> None:
        self._last_start = self.clock()

    async def _scan_cluster(self, r: aioredis.Redis, pattern: str) -> list[Any]:
        """One ``SCAN`` step on a Redis Cluster, where each master has its own cursor: the first
        step asks every master, the next ones the masters not done yet, one at a time.
        ``_cursor`` is 0 once every master is done with ``pattern``."""
        reply: Any  # a cluster client answers (cursor per node name, keys)
        if not self._node_cursors:
            reply = await r.scan(0, match=pattern, count=self.scan_count)
            cursors: dict[str, Any] = dict(reply[0])
        else:
            name, at = next(iter(self._node_cursors.items()))
            node = r.get_node(node_name=name)  # type: ignore[attr-defined]
            reply = await r.scan(at, match=pattern, count=self.scan_count, target_nodes=node)
            cursors = {**self._node_cursors, **dict(reply[0])}
        keys = reply[1]
        self._node_cursors = {name: int(c) for name, c in cursors.items() if int(c) != 0}
        self._cursor = 1 if self._node_cursors else 0
        return list(keys)

    def _due(self) -> bool:
        return self._in_pass or self.clock() - self._last_start >= self.period_seconds

    async def turn(self, r: aioredis.Redis, index: ClusterIndex) -> TurnResult:
        """Scan the next keys (at most about ``keys_per_turn``) and return the suspected orphans among them."""
        result = TurnResult()
        if not self._due():
            return result
        if not self._in_pass:
            self._in_pass, self._last_start = True, self.clock()
        while result.keys < self.keys_per_turn:
            if is_cluster_client(r):
                keys = await self._scan_cluster(r, self.patterns[self._pattern])
            else:
                cursor, keys = await r.scan(self._cursor, match=self.patterns[self._pattern], count=self.scan_count)
                self._cursor = int(cursor)
            result.calls += 1
            if keys:
                async with r.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.hmget(key, list(HEAD_FIELDS))
                    heads: list[Any] = await pipe.execute()
                result.calls += 1
                result.keys += len(keys)
                result.suspects.extend(h for h in (suspect(v, index) for v in heads) if h is not None)
                now = self.wall_clock()
                result.unchanged.extend(
                    h for h in (unchanged_for_long(v, now, self.lost_job_age_seconds) for v in heads) if h is not None
                )
            if self._cursor == 0:
                self._pattern += 1
                if self._pattern == len(self.patterns):
                    self._pattern = 0
                    self._in_pass = False
                    self.passes += 1
                    result.pass_completed = True
                    break
        return result


def sweep_for(rt: Runtime) -> OrphanSweep:
    """The sweep over the served namespaces' records."""
    patterns = [record_key_pattern(ns) for ns in rt.settings.namespaces] or [record_key_pattern()]
    return OrphanSweep(patterns, period_seconds=rt.settings.orphan_sweep_seconds,
                       lost_job_age_seconds=rt.settings.lost_job_age_seconds)


class OrphanSweeps:
    """One :class:`OrphanSweep` per Redis in use (each with its own SCAN cursor), made as Redis appear."""

    def __init__(self, make: Callable[[], OrphanSweep], *, period_seconds: float) -> None:
        self._make = make
        self.period_seconds = period_seconds
        """Least time between the starts of two passes over one Redis (``--orphan-sweep-interval``)."""
        self.by_redis: dict[int, tuple[aioredis.Redis, OrphanSweep]] = {}

    def of(self, redis: aioredis.Redis) -> OrphanSweep:
        known = self.by_redis.get(id(redis))
        if known is None or known[0] is not redis:
            known = self.by_redis[id(redis)] = (redis, self._make())
        return known[1]


def sweeps_for(rt: Runtime) -> OrphanSweeps:
    """The sweeps over the served namespaces' records, one per Redis the pools are on."""
    return OrphanSweeps(lambda: sweep_for(rt), period_seconds=rt.settings.orphan_sweep_seconds)


async def sweep_turns(rt: Runtime, sweeps: OrphanSweeps) -> int:
    """The ``orphan-sweep`` chore: one turn on every Redis in use; returns the orphans cancelled.

    A record is cancelled or failed on the Redis it was found on. One Redis down skips its turn
    (its cursor is kept); the others go on.
    """
    cancelled = 0
    in_use = redis_clients(rt)
    live = {id(client) for client in in_use}
    sweeps.by_redis = {key: known for key, known in sweeps.by_redis.items() if key in live}
    for client in in_use:
        try:
            cancelled += await sweep_turn(rt, sweeps.of(client), client)
        except (RedisError, OSError) as exc:
            logger.warning("orphan sweep of %s skipped: %s", redis_label(rt, client), type(exc).__name__)
    return cancelled


async def sweep_turn(rt: Runtime, sweep: OrphanSweep, redis: aioredis.Redis | None = None) -> int:
    """One turn of one sweep on ``redis`` (default: the operator's own): cancel the orphans found; returns
    how many."""
    redis = rt.redis if redis is None else redis
    result = await sweep.turn(redis, rt.index)
    rt.metrics.orphan_keys_scanned.inc(result.keys)
    if result.pass_completed:
        rt.metrics.orphan_passes.inc()
    cancelled = 0
    for head in result.suspects:
        if not await job_is_gone(rt, head):
            continue
        if await queue.cancel(redis, head.namespace, head.pool, head.job_id):
            cancelled += 1
            rt.metrics.cancels.labels(via="orphan").inc()
            logger.info("cancelled %s: its Job was deleted while the operator was not watching", head.job_id)
    for head in result.unchanged:
        if await queue.fail_lost(redis, head.namespace, head.pool, head.job_id,
                                 min_age_seconds=sweep.lost_job_age_seconds):
            rt.metrics.lost_jobs_failed.inc()
            logger.warning("failed %s (pool %s): %s for over %.0f s and nothing in Redis can run it (JobLost)",
                           head.job_id, head.pool, head.state, sweep.lost_job_age_seconds)
    return cancelled


async def job_is_gone(rt: Runtime, head: RecordHead) -> bool:
    """The apiserver has no Job of that name with that uid (a GET: the index may lag)."""
    live = await rt.writer.fetch(head.namespace, job_object_of(head.job_id)[1])
    return live is None or live.uid != head.uid
