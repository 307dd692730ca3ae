"""A worker's periodic upkeep: heartbeats, the reaper, promoting retries, listening for cancellations.

- the *heartbeat* renews the leases on held entries, notices lost leases and cancel flags, and
  refreshes this worker's entry in the pool's registry;
- the *reaper* (one per pool at a time, under a TTL'd lock) hands back entries whose lease
  expired and forgets workers long gone;
- the *promoter* moves retries whose backoff is over back onto their streams;
- the *cancel listener* gets cancellations by pub/sub and stops the handler concerned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from kubeworkers import leases, logs
from kubeworkers.holdings import Holdings
from kubeworkers.protocol import CANCEL_CHANNEL, PoolKeys, WorkerHeartbeat
from kubeworkers.redis_ops import TRANSIENT_ERRORS
from kubeworkers.runner import AttemptRunner
from kubeworkers.settings import WorkerSettings

log = logging.getLogger("kubeworkers.worker")


class Upkeep:
    """The long-lived helper loops of one worker; each ``*_loop`` runs as its own task."""

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
        stopping: asyncio.Event,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.name = name
        self.settings = settings
        self.holdings = holdings
        self.runner = runner
        self.heartbeat = heartbeat
        self.stopping = stopping
        #: Monotonic time of the last heartbeat Redis took.
        self.last_beat_ok = 0.0

    async def beat(self) -> None:
        """Renew leases, notice lost leases and cancel flags, refresh the registry entry."""
        lost = await leases.renew(self.redis, self.name, self.holdings.held_by_stream())
        for entry in lost:
            lost_job = self.holdings.held.get(entry)
            if lost_job is not None and lost_job.entry in self.holdings.running:
                self.runner.stop_job(lost_job, "lost")
        running = list(self.holdings.running.values())
        pipe = self.redis.pipeline(transaction=False)
        for job in running:
            pipe.exists(self.keys.cancel(job.msg.job_id))
        pipe.hset(self.keys.workers, self.name, self.heartbeat().model_dump_json())
        flags = await pipe.execute()
        for job, flagged in zip(running, flags, strict=False):
            if flagged:
                self.runner.stop_job(job, "cancelled")
        self.last_beat_ok = time.monotonic()

    async def heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            try:
                await self.beat()
            except TRANSIENT_ERRORS as exc:
                log.warning(f"heartbeat failed: {exc}")
            except ResponseError:
                log.exception("heartbeat failed")

    async def reap_loop(self) -> None:
        every = self.settings.reap_seconds
        while not self.stopping.is_set():
            await asyncio.sleep(every * random.uniform(0.8, 1.2))
            try:
                if await self.redis.set(self.keys.reaper_lock, self.name, nx=True, px=int(every * 2000)):
                    await leases.reap(self.redis, self.keys, self.name, self.settings.lease_seconds)
                    await leases.forget_dead_workers(
                        self.redis, self.keys, self.settings.lease_seconds, self.name
                    )
            except TRANSIENT_ERRORS as exc:
                log.warning(f"reaper failed: {exc}")
            except ResponseError:
                log.exception("reaper failed")

    async def promote_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.promote_seconds)
            logs.flush()  # log lines are buffered; an idle worker still shows them promptly
            try:
                await leases.promote(self.redis, self.keys)
            except TRANSIENT_ERRORS as exc:
                log.warning(f"promoting retries failed: {exc}")

    async def cancel_listener(self) -> None:
        while True:
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
            except TRANSIENT_ERRORS as exc:
                log.warning(f"cancel subscription lost, resubscribing: {exc}")
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pubsub.aclose(), 2)  # type: ignore[no-untyped-call]
