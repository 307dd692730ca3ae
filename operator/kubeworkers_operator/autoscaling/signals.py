"""Reading a pool's load signals from Redis, and waiting for stream activity.

One pipelined round trip per tick (``XINFO STREAM``/``GROUPS``/``CONSUMERS`` per
priority stream, the worker registry, the stats counters, the delayed set); a
second one only when Redis reports a NULL ``lag`` and the undelivered entries
have to be counted. Missing streams and groups are normal (a pool nobody has
used yet) and read as empty, not as errors.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import redis.asyncio as aioredis
from kubeworkers.protocol import WORKER_GROUP, PoolKeys, WorkerHeartbeat
from pydantic import ValidationError
from redis.exceptions import ResponseError

from kubeworkers_operator.autoscaling.load import (
    STATS_DURATION_SUM,
    STATS_RUN_COUNTERS,
    GroupSnapshot,
    PoolSnapshot,
    StreamSnapshot,
)

logger = logging.getLogger(__name__)

#: Seconds before a delayed entry (a delayed job, or a retry waiting out its backoff) is due from
#: which it counts as backlog: the cold-start lead, so a pool at zero has a worker up (pod
#: scheduled, process started, promoter running) when the entry is due. A constant, not a setting
#: yet: raise it for images that take longer than this to pull and start.
DELAYED_LEAD_SECONDS = 10.0
#: Seconds ahead within which a not-yet-counted delayed entry keeps one worker warm (a retry with a
#: short backoff does not cost a cold start). Beyond it nothing is kept up: a job due in an hour
#: costs no pod until its lead. Shorter than the default ``idleSecondsBeforeZero`` (120 s), so a
#: pool that just ran a job is still warm anyway for any retry this horizon would have covered.
DELAYED_KEEP_WARM_SECONDS = 60.0

#: Most entries counted by XRANGE when ``lag`` is NULL; past this the backlog reads as this cap,
#: which is already far more than any sane ``maxReplicas * concurrency``.
NULL_LAG_COUNT_CAP = 10_000


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


class RedisSignalReader:
    """Reads one pool's :class:`~.load.PoolSnapshot`; holds no state between reads."""

    def __init__(self, redis: aioredis.Redis, keys: PoolKeys, *, group: str = WORKER_GROUP) -> None:
        self.redis = redis
        self.keys = keys
        self.group = group

    async def read(self, *, now: float | None = None) -> PoolSnapshot:
        """One consistent-enough look at the pool (pipelined, not transactional: it is a gauge)."""
        at = time.time() if now is None else now
        streams = self.keys.streams
        pipe = self.redis.pipeline(transaction=False)
        for name in streams:
            pipe.xinfo_stream(name)
            pipe.xinfo_groups(name)
            pipe.xinfo_consumers(name, self.group)
        pipe.hgetall(self.keys.workers)
        pipe.hmget(self.keys.stats, [*STATS_RUN_COUNTERS, STATS_DURATION_SUM])
        # Due within the lead: backlog. Due later but within the keep-warm horizon: waiting.
        lead = at + DELAYED_LEAD_SECONDS
        pipe.zcount(self.keys.delayed, "-inf", lead)
        pipe.zcount(self.keys.delayed, f"({lead}", at + DELAYED_KEEP_WARM_SECONDS)
        replies = await pipe.execute(raise_on_error=False)

        snapshots: list[StreamSnapshot] = []
        for i, name in enumerate(streams):
            info, groups, consumers = replies[3 * i : 3 * i + 3]
            snapshots.append(self._stream(name, info, groups, consumers))
        workers, stats, due, delayed = replies[3 * len(streams) :]
        for reply in (workers, stats, due, delayed):
            if isinstance(reply, Exception):
                raise reply

        snapshots = await self._count_null_lag(snapshots)
        *runs_raw, duration_raw = stats
        return PoolSnapshot(
            at=at,
            streams=tuple(snapshots),
            heartbeats=tuple(self._heartbeats(workers)),
            completed=sum(_int(v) for v in runs_raw),
            duration_sum=float(duration_raw) if duration_raw is not None else 0.0,
            retries_due=int(due),
            retries_waiting=int(delayed),
        )

    def _stream(self, name: str, info: Any, groups: Any, consumers: Any) -> StreamSnapshot:
        if isinstance(info, ResponseError):
            # "no such key": the stream does not exist (yet); nothing waits on it.
            return StreamSnapshot(name=name, exists=False)
        if isinstance(info, Exception):
            raise info
        group: GroupSnapshot | None = None
        for g in groups if isinstance(groups, list) else []:
            if _text(g.get("name")) != self.group:
                continue
            by_consumer: dict[str, int] = {}
            if isinstance(consumers, list):
                by_consumer = {_text(c["name"]): _int(c.get("pending")) for c in consumers}
            lag = g.get("lag")
            entries_read = g.get("entries-read")
            group = GroupSnapshot(
                lag=None if lag is None else int(lag),
                entries_read=None if entries_read is None else int(entries_read),
                last_delivered_id=_text(g.get("last-delivered-id", "0-0")),
                pending=_int(g.get("pending")),
                pending_by_consumer=by_consumer,
            )
        return StreamSnapshot(
            name=name,
            exists=True,
            length=_int(info.get("length")),
            entries_added=_int(info.get("entries-added"), _int(info.get("length"))),
            last_generated_id=_text(info.get("last-generated-id", "0-0")),
            group=group,
        )

    async def _count_null_lag(self, snapshots: list[StreamSnapshot]) -> list[StreamSnapshot]:
        todo = [s for s in snapshots if s.exists and s.group is not None and s.group.lag is None]
        if not todo:
            return snapshots
        pipe = self.redis.pipeline(transaction=False)
        for s in todo:
            assert s.group is not None
            # Exclusive start: entries strictly after the last one handed to a worker.
            pipe.xrange(s.name, min=f"({s.group.last_delivered_id}", max="+", count=NULL_LAG_COUNT_CAP)
        counts = await pipe.execute(raise_on_error=False)
        counted: dict[str, int] = {}
        for s, entries in zip(todo, counts, strict=True):
            if isinstance(entries, list):
                counted[s.name] = len(entries)
        return [
            replace(s, group=replace(s.group, undelivered_counted=counted[s.name]))
            if s.name in counted and s.group is not None
            else s
            for s in snapshots
        ]

    @staticmethod
    def _heartbeats(raw: dict[Any, Any]) -> list[WorkerHeartbeat]:
        beats: list[WorkerHeartbeat] = []
        for key, value in raw.items():
            try:
                beats.append(WorkerHeartbeat.model_validate_json(value))
            except (ValidationError, ValueError):
                # One corrupt entry must not blind the autoscaler to the rest of the fleet.
                logger.warning("ignoring unreadable heartbeat of %s", _text(key))
        return beats

    async def wait_for_activity(self, after: PoolSnapshot, block_seconds: float) -> bool:
        """Block until an entry newer than ``after`` lands on any job stream, or ``block_seconds`` pass.

        A blocking ``XREAD`` from each stream's last id seen in ``after``: nothing added
        between the snapshot and this call is missed, and a waiting loop costs Redis nothing.
        Each ``XREAD`` blocks for less than the client's socket timeout (redis-py 8 defaults it
        to 5 s), which would otherwise turn a long wait into an error. Returns True when woken
        by activity.
        """
        ids = {s.name: (s.last_generated_id if s.exists else "0-0") for s in after.streams}
        pool = getattr(self.redis, "connection_pool", None)  # a cluster client keeps its options itself
        options: dict[str, Any] = getattr(pool if pool is not None else self.redis, "connection_kwargs", {})
        socket_timeout = options.get("socket_timeout")
        deadline = time.monotonic() + block_seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            block = remaining if not socket_timeout else min(remaining, max(0.05, float(socket_timeout) / 2))
            found = await self.redis.xread(ids, count=1, block=max(1, int(block * 1000)))  # type: ignore[arg-type]
            if found:
                return True
