"""The worker: one process's consumer of a pool, put together from its parts.

One asyncio loop per process holds a few long-lived tasks:

- the *consumer* (:mod:`kubeworkers.consumer`) reads up to ``concurrency - in_flight``
  entries at a time and starts one task per runnable job;
- the *attempt runner* (:mod:`kubeworkers.runner`) runs each job's handler and queues how it
  ended;
- the *outbox* (:mod:`kubeworkers.outbox`) writes every finished attempt and progress report in
  batched script calls;
- the *upkeep* loops (:mod:`kubeworkers.upkeep`): heartbeat, reaper, promoter, cancel listener.

On SIGTERM (:meth:`Worker.stop`) the worker stops reading and shuts down gracefully
(:mod:`kubeworkers.drain`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import redis.asyncio as aioredis

from kubeworkers import drain, leases
from kubeworkers.consumer import Consumer
from kubeworkers.holdings import Holdings
from kubeworkers.metrics import ProbeServer, WorkerMetrics
from kubeworkers.outbox import Outbox
from kubeworkers.protocol import PoolKeys, WorkerHeartbeat
from kubeworkers.redis_ops import TRANSIENT_ERRORS
from kubeworkers.registry import Registry
from kubeworkers.registry import registry as default_registry
from kubeworkers.runner import AttemptRunner
from kubeworkers.settings import WorkerSettings
from kubeworkers.upkeep import Upkeep

log = logging.getLogger("kubeworkers.worker")


class Worker:
    """One worker process's consumer of a pool. ``await Worker(settings).run()``; stop with :meth:`stop`."""

    def __init__(
        self,
        settings: WorkerSettings,
        registry: Registry | None = None,
    ) -> None:
        settings.validate()
        self.settings = settings
        self.registry = registry if registry is not None else default_registry
        self.name = settings.worker_name
        self.keys = PoolKeys(settings.namespace, settings.pool)
        self.redis: aioredis.Redis = aioredis.Redis.from_url(settings.redis_url)
        self.metrics = WorkerMetrics(settings.pool, settings.namespace)
        self.metrics_port: int | None = None
        self.holdings = Holdings(settings.concurrency)
        self.metrics.in_flight.set_function(lambda: len(self.holdings.running))
        self.outbox = Outbox(self.redis, self.keys, self.name, settings.result_ttl)
        self._stop = asyncio.Event()
        self._draining = False
        self._ready = False
        self.runner = AttemptRunner(
            name=self.name, settings=settings, registry=self.registry, metrics=self.metrics,
            holdings=self.holdings, outbox=self.outbox,
        )
        self.consumer = Consumer(
            redis=self.redis, keys=self.keys, name=self.name, settings=settings, registry=self.registry,
            metrics=self.metrics, holdings=self.holdings, runner=self.runner, stopping=self._stop,
        )
        self.upkeep = Upkeep(
            redis=self.redis, keys=self.keys, name=self.name, settings=settings, holdings=self.holdings,
            runner=self.runner, heartbeat=self.heartbeat, stopping=self._stop,
        )
        self._reader: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        """Begin a graceful shutdown (what SIGTERM does). Safe to call more than once."""
        if self._stop.is_set():
            return
        log.info("worker draining", extra={"worker": self.name, "pool": self.settings.pool})
        self._draining = True
        self._stop.set()
        # Only a *blocking* read is interrupted: a batch being started must finish
        # starting, or its jobs would be marked Running without running.
        if self._reader is not None and self.consumer.in_blocking_read:
            self._reader.cancel()
        self.holdings.slot_free.set()

    async def run(self) -> None:
        """Serve the pool until :meth:`stop`; returns after the graceful shutdown."""
        if not await self._wait_for_redis():
            await self.redis.aclose()
            return
        await leases.ensure_groups(self.redis, self.keys)
        probe: ProbeServer | None = None
        if self.settings.metrics_port >= 0:
            probe = ProbeServer(
                self.metrics, self.healthy, self.ready, self.settings.metrics_host, self.settings.metrics_port
            )
            self.metrics_port = await probe.start()
            log.info(
                f"metrics listening on port {self.metrics_port}",
                extra={"port": self.metrics_port, "worker": self.name},
            )
        await self.upkeep.beat()
        self._ready = True
        log.info(
            "worker started",
            extra={"worker": self.name, "pool": self.settings.pool, "namespace": self.settings.namespace},
        )
        reader = self._reader = asyncio.create_task(self.consumer.run(), name="kw-reader")
        heartbeats = asyncio.create_task(self.upkeep.heartbeat_loop(), name="kw-heartbeat")
        helpers = [
            asyncio.create_task(self.outbox.run(), name="kw-outbox"),
            heartbeats,
            asyncio.create_task(self.upkeep.reap_loop(), name="kw-reaper"),
            asyncio.create_task(self.upkeep.promote_loop(), name="kw-promoter"),
            asyncio.create_task(self.upkeep.cancel_listener(), name="kw-cancel"),
        ]
        try:
            await self._stop.wait()
            await drain.drain(
                redis=self.redis, keys=self.keys, name=self.name, grace=self.settings.shutdown_grace,
                holdings=self.holdings, runner=self.runner, outbox=self.outbox, reader=reader,
                heartbeats=heartbeats, heartbeat=self.heartbeat,
            )
        finally:
            for task in [reader, *helpers]:
                task.cancel()
            # Bounded: a helper stuck in a Redis call must not keep the process alive.
            _, stuck = await asyncio.wait([reader, *helpers], timeout=5)
            for task in stuck:
                log.warning(f"{task.get_name()} did not stop in time", extra={"worker": self.name})
            if probe is not None:
                await probe.stop()
            self.runner.close()
            await self.redis.aclose()
            log.info("worker stopped", extra={"worker": self.name, "pool": self.settings.pool})

    async def _wait_for_redis(self) -> bool:
        """Wait until Redis answers; False if asked to stop first (SIGTERM before Redis came up)."""
        delay = 0.1
        while not self._stop.is_set():
            try:
                await self.redis.ping()
                return True
            except TRANSIENT_ERRORS as exc:
                log.warning(f"redis not reachable, retrying: {exc}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                delay = min(delay * 2, 5)
        return False

    def heartbeat(self) -> WorkerHeartbeat:
        """This worker's entry in the pool's registry, as of now."""
        return WorkerHeartbeat(
            worker=self.name,
            in_flight=len(self.holdings.running),
            concurrency=self.settings.concurrency,
            last_job=self.holdings.last_job,
            draining=self._draining,
        )

    def healthy(self) -> bool:
        """/healthz: the loop answers and Redis took a heartbeat within the lease."""
        return time.monotonic() - self.upkeep.last_beat_ok < self.settings.lease_seconds

    def ready(self) -> bool:
        """/readyz: connected and taking jobs (not draining)."""
        return self._ready and not self._draining and self.healthy()

    @property
    def in_flight(self) -> int:
        return len(self.holdings.running)
