"""A worker's periodic upkeep: heartbeats, the reaper, promoting retries, listening for cancellations.

Each is one step (or, for the listener, one subscription) that the worker's
:class:`~kubeworkers.supervisor.Supervisor` runs over and over, with backoff while it fails:

- the *heartbeat* (:meth:`Upkeep.beat`) renews the leases on held entries, records the pool's
  pulse, notices lost leases and cancel flags, and refreshes this worker's registry entry;
- the *reaper* (:meth:`Upkeep.reap`; one per pool at a time, under a TTL'd lock) hands back
  entries whose lease expired and forgets workers long gone;
- the *promoter* (:meth:`Upkeep.promote`) moves retries whose backoff is over onto their streams;
- the *cancel listener* (:meth:`Upkeep.listen_for_cancellations`) gets cancellations by pub/sub.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any, cast

import redis.asyncio as aioredis

from kubeworkers import connection, leases, logs
from kubeworkers.holdings import Holdings
from kubeworkers.protocol import CANCEL_CHANNEL, PoolKeys, WorkerHeartbeat
from kubeworkers.runner import AttemptRunner
from kubeworkers.settings import WorkerSettings

log = logging.getLogger("kubeworkers.worker")


class Upkeep:
    """The helper steps of one worker."""

    def __init__(
        self,
        *,
        redis: aioredis.Redis,
        keys: PoolKeys,
        name: str,
        settings: WorkerSettings,
        holdings: Holdings,
        runner: AttemptRunner,
        heartbeat: Callable[[], WorkerHeartbeat],
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.name = name
        self.settings = settings
        self.holdings = holdings
        self.runner = runner
        self.heartbeat = heartbeat
        #: Monotonic time of the last heartbeat Redis took (its lease renewals).
        self.last_beat_ok = 0.0
        self._registry_warned = False

    async def beat(self) -> None:
        """Renew leases, notice lost leases and cancel flags, refresh the registry entry."""
        # After a failover the old master may take writes for seconds (it is demoted late):
        # renewals sent there are lost, and the new master would hand this worker's jobs out.
        await connection.follow_master(self.redis)
        lost = await leases.renew(
            self.redis, self.keys, self.name, self.holdings.held_by_stream(self.keys.streams),
            self.settings.lease_seconds,
        )
        for entry in lost:
            self.holdings.undecided.pop(entry, None)
            lost_job = self.holdings.held.get(entry)
            if lost_job is not None and lost_job.entry in self.holdings.running:
                self.runner.stop_job(lost_job, "lost")
        # The leases are what keeps this worker's jobs its own: the beat has done its part.
        self.last_beat_ok = time.monotonic()
        running = list(self.holdings.running.values())
        pipe = self.redis.pipeline(transaction=False)
        for job in running:
            pipe.exists(self.keys.cancel(job.job_id))
        pipe.hset(self.keys.workers, self.name, self.heartbeat().model_dump_json())
        *flags, registered = await pipe.execute(raise_on_error=False)
        for job, flagged in zip(running, flags, strict=True):
            if flagged is True or flagged == 1:
                self.runner.stop_job(job, "cancelled")
        # A registry entry Redis refuses (at maxmemory, say) must not fail the beat: the
        # supervisor would back the beat off, and the next renewal with it, past the lease.
        self._registry_refused(registered if isinstance(registered, Exception) else None)

    def _registry_refused(self, error: Exception | None) -> None:
        if error is None:
            self._registry_warned = False
        elif not self._registry_warned:
            log.warning(f"this worker's registry entry was not refreshed (leases still are): {error}")
            self._registry_warned = True

    def reap_interval(self) -> float:
        # Jittered, so the workers of a pool do not all try for the lock at the same instant.
        return self.settings.reap_seconds * random.uniform(0.8, 1.2)

    async def reap(self) -> None:
        every = self.settings.reap_seconds
        if await self.redis.set(self.keys.reaper_lock, self.name, nx=True, px=int(every * 2000)):
            await leases.reap(self.redis, self.keys, self.name, self.settings.lease_seconds)
            await leases.forget_dead_workers(self.redis, self.keys, self.settings.lease_seconds, self.name)

    async def promote(self) -> None:
        logs.flush()  # log lines are buffered; an idle worker still shows them promptly
        await leases.promote(self.redis, self.keys)

    async def listen_for_cancellations(self) -> None:
        """Subscribe and stop the handler of every job announced cancelled; returns only by failing."""
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(CANCEL_CHANNEL)
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                data = message["data"]
                job = self.holdings.running_job(data.decode() if isinstance(data, bytes) else str(data))
                if job is not None:
                    self.runner.stop_job(job, "cancelled")
        finally:
            with contextlib.suppress(Exception):
                # Through Any: redis-py before 8.2 leaves aclose untyped, 8.2 types it.
                await asyncio.wait_for(cast(Any, pubsub).aclose(), 2)
