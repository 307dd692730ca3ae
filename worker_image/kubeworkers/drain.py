"""Graceful shutdown of a worker: finish what runs within the grace, hand back the rest at once.

After SIGTERM the consumer has stopped reading. :func:`drain` then marks the registry entry
draining, waits up to ``shutdown_grace`` for running handlers, stops the rest and hands their
jobs back (attempt uncounted), writes the last results, hands back entries that were delivered
but never started, and removes the worker's registry entry and, when nothing is pending, its
consumer. The jobs handed back run elsewhere now, not after their lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from kubeworkers import leases
from kubeworkers.holdings import Holdings
from kubeworkers.outbox import Outbox
from kubeworkers.protocol import WORKER_GROUP, JobMessage, PoolKeys, WorkerHeartbeat
from kubeworkers.redis_ops import TRANSIENT_ERRORS
from kubeworkers.runner import AttemptRunner

log = logging.getLogger("kubeworkers.worker")

#: Longest the final write of results may take on shutdown.
FINAL_FLUSH_SECONDS = 30.0


async def drain(
    *,
    redis: aioredis.Redis,
    keys: PoolKeys,
    name: str,
    grace: float,
    holdings: Holdings,
    runner: AttemptRunner,
    outbox: Outbox,
    reader: asyncio.Task[None] | None,
    heartbeats: asyncio.Task[None] | None,
    heartbeat: Callable[[], WorkerHeartbeat],
) -> None:
    """Shut one worker down gracefully (see the module docstring)."""
    if reader is not None:
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    with contextlib.suppress(*TRANSIENT_ERRORS):
        await redis.hset(keys.workers, name, heartbeat().model_dump_json())
    tasks = [j.task for j in holdings.running.values() if j.task is not None]
    if tasks:
        log.info(f"waiting up to {grace:g}s for {len(tasks)} job(s) to finish", extra={"worker": name})
        await asyncio.wait(tasks, timeout=grace)
    remaining = [j for j in holdings.running.values() if j.task is not None and not j.task.done()]
    for job in remaining:
        runner.stop_job(job, "shutdown")
    if remaining:
        await asyncio.wait([j.task for j in remaining if j.task is not None], timeout=5)
    try:
        # Bounded: with Redis gone for good the pod must still exit; its leases then expire
        # and the jobs run again elsewhere (at least once).
        await asyncio.wait_for(outbox.flush(), FINAL_FLUSH_SECONDS)
    except TimeoutError:
        log.error("could not write the last job results before exiting", extra={"worker": name})
        return
    # Entries delivered to us but never started (buffered, or read while the
    # read was being interrupted) go back to the stream now, not after the lease.
    await hand_back_unstarted(redis, keys, name)
    # No lease is left to renew: stop the heartbeat first, or a beat in flight could
    # write our registry entry back after the HDEL below.
    if heartbeats is not None:
        heartbeats.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeats
    with contextlib.suppress(*TRANSIENT_ERRORS):
        await redis.hdel(keys.workers, name)
        for stream in keys.streams:
            info = await redis.xpending_range(stream, WORKER_GROUP, "-", "+", 1, consumername=name)
            if not info:
                await redis.xgroup_delconsumer(stream, WORKER_GROUP, name)


async def hand_back_unstarted(redis: aioredis.Redis, keys: PoolKeys, name: str) -> None:
    """Hand every entry still pending for consumer ``name`` back to its stream."""
    for index, stream in enumerate(keys.streams, start=1):
        try:
            pending: Any = await redis.xpending_range(stream, WORKER_GROUP, "-", "+", 10_000, consumername=name)
            if not pending:
                continue
            ids = {p["message_id"].decode() for p in pending}
            entries: Any = await redis.xrange(stream, min(ids), max(ids))
        except TRANSIENT_ERRORS:
            return
        triples: list[tuple[int, str, str]] = []
        for entry_id, fields in entries:
            entry = entry_id.decode()
            if entry in ids:
                with contextlib.suppress(ValueError):
                    triples.append((index, entry, JobMessage.from_fields(fields).job_id))
        await leases.requeue(
            redis, keys, triples, name, uncount_attempt=False,
            message=f"handed back by {name} (shutting down before starting it)",
        )
