"""Graceful shutdown of a worker: finish what runs within the grace, hand back the rest at once.

After SIGTERM the consumer has stopped reading. :func:`drain` then marks the registry entry
draining, waits up to ``shutdown_grace`` for running handlers, stops the rest and hands their
jobs back (attempt uncounted), writes the last results, hands back entries that were delivered
but never started (uncounted too), and removes the worker's registry entry and, when nothing is
pending, its consumers. A handler that ignores being stopped is abandoned after
``cancel_grace`` (its job is handed back without it), so the worker always gets to exit, and
says which jobs' handlers it leaves running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from kubeworkers import leases
from kubeworkers.holdings import Holdings
from kubeworkers.outbox import Outbox
from kubeworkers.protocol import WORKER_GROUP, PoolKeys, WorkerHeartbeat
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
    cancel_grace: float,
    holdings: Holdings,
    runner: AttemptRunner,
    outbox: Outbox,
    reader: asyncio.Task[None] | None,
    stop_heartbeat: Callable[[], Awaitable[None]],
    heartbeat: Callable[[], WorkerHeartbeat],
) -> None:
    """Shut one worker down gracefully (see the module docstring)."""
    if reader is not None:
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(reader), cancel_grace + 1)
    await _best_effort("mark the registry entry draining", redis.hset(
        keys.workers, name, heartbeat().model_dump_json()))
    tasks = [j.task for j in holdings.running.values() if j.task is not None]
    if tasks:
        log.info(f"waiting up to {grace:g}s for {len(tasks)} job(s) to finish", extra={"worker": name})
        await asyncio.wait(tasks, timeout=grace)
    remaining = [j for j in holdings.running.values() if j.task is not None and not j.task.done()]
    for job in remaining:
        runner.stop_job(job, "shutdown")
    if remaining:
        # A handler that ignores the cancellation is abandoned after cancel_grace: bounded.
        await asyncio.wait([j.task for j in remaining if j.task is not None], timeout=cancel_grace + 1)
    try:
        # Bounded: with Redis gone for good the pod must still exit; its leases then expire
        # and the jobs run again elsewhere (at least once).
        await asyncio.wait_for(outbox.flush(), FINAL_FLUSH_SECONDS)
    except TimeoutError:
        log.error("could not write the last job results before exiting", extra={"worker": name})
        return
    await _best_effort("hand back unstarted entries", hand_back_unstarted(redis, keys, name, holdings))
    # No lease is left to renew: stop the heartbeat first, or a beat in flight could
    # write our registry entry back after the HDEL below.
    await stop_heartbeat()
    await _best_effort("leave the pool's registry", _leave(redis, keys, name))
    still = runner.still_running()
    if still:
        log.error(f"exiting while the handlers of {len(still)} job(s) still run (they ignored being stopped): "
                  f"{', '.join(still[:20])}", extra={"worker": name})


async def _best_effort(what: str, step: Awaitable[object]) -> None:
    """Shutting down must finish whatever Redis answers (down, restarted empty, read-only)."""
    try:
        await step
    except Exception as exc:
        log.warning(f"could not {what} while shutting down: {exc}")


async def _leave(redis: aioredis.Redis, keys: PoolKeys, name: str) -> None:
    await redis.hdel(keys.workers, name)
    for consumer in (name, leases.reaper_of(name)):
        for stream in keys.streams:
            info = await redis.xpending_range(stream, WORKER_GROUP, "-", "+", 1, consumername=consumer)
            if not info:
                await redis.xgroup_delconsumer(stream, WORKER_GROUP, consumer)


async def hand_back_unstarted(redis: aioredis.Redis, keys: PoolKeys, name: str, holdings: Holdings) -> None:
    """Hand back every entry still pending for this worker that no handler ran: found by a
    recovery read beyond the free slots, or delivered by a take whose reply was lost (also one
    behind a blocking read the stop cancelled). Their attempts do not count."""
    unstarted = [e for e in await leases.own_pending(redis, keys, name) if e[1] not in holdings.held]
    await leases.requeue(
        redis, keys, unstarted, name, uncount_attempt=True,
        message=f"handed back by {name} (shutting down before starting it)",
    )
    holdings.undecided.clear()
