"""The worker: one process's consumer of a pool, put together from its parts.

One asyncio loop per process holds a few long-lived tasks, each run by a
:class:`~kubeworkers.supervisor.Supervisor` (it survives any error, restarts with backoff and
shows in ``/healthz``):

- the *consumer* (:mod:`kubeworkers.consumer`) reads up to ``concurrency - in_flight``
  entries at a time and starts one task per runnable job;
- the *attempt runner* (:mod:`kubeworkers.runner`) runs each job's handler and records how it
  ended;
- the *outbox* (:mod:`kubeworkers.outbox`) writes every finished attempt and progress report in
  batched script calls;
- the *upkeep* steps (:mod:`kubeworkers.upkeep`): heartbeat, reaper, promoter, cancel listener.

``/healthz`` is served from the start, before Redis answers, and says whether *this process*
works (its tasks run, nothing fatal happened), never whether Redis is reachable: an outage must
not restart the fleet. On SIGTERM (:meth:`Worker.stop`) the worker stops reading and shuts down
gracefully (:mod:`kubeworkers.drain`); after a fatal error (``MemoryError``) it does the same and
then exits non-zero (:attr:`Worker.exit_code`), so that Kubernetes restarts the pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time

import redis.asyncio as aioredis

from kubeworkers import connection, drain, leases, queue
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
from kubeworkers.supervisor import Supervisor
from kubeworkers.upkeep import Upkeep

log = logging.getLogger("kubeworkers.worker")

#: Exit code of a worker that stopped because it could no longer serve.
EXIT_FATAL = 70

#: The cyclic garbage collector's youngest-generation threshold in a worker process (CPython's
#: default is 700). Each job allocates a few dozen tracked objects that live until its result is
#: written, so at 700 nearly every collection finds hundreds of jobs in flight and walks (and
#: promotes) their objects; at 10,000 most of them have been freed by reference counting before
#: the next collection. Measured with ``python -m benchmarks.worker_instructions``: about 5 % of
#: the worker's instructions per job (docs/benchmarks.md, *Worker process*). Cyclic garbage is
#: still collected, after at most this many new objects.
GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Set up the garbage collector of a worker process, once its handlers are imported: move
    everything alive now (the imported modules, the registry, the settings) out of the collector's
    reach (``gc.freeze``: a full collection no longer walks the whole import-time heap, a pause of
    milliseconds), and raise the young generation's threshold (:data:`GC_YOUNG_THRESHOLD`)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


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
        self.redis: aioredis.Redis = connection.connect_async(
            settings.redis_url, socket_timeout=settings.redis_timeout,
            socket_connect_timeout=settings.redis_timeout,
        )
        self.metrics = WorkerMetrics(settings.pool, settings.namespace)
        self.metrics_port: int | None = None
        self.holdings = Holdings(settings.concurrency)
        self.metrics.in_flight.set_function(lambda: len(self.holdings.running))
        self.outbox = Outbox(self.redis, self.keys, self.name, settings.result_ttl,
                             dead_letter_maxlen=settings.dead_letter_maxlen,
                             durable_replicas=settings.durable_replicas)
        self._stop = asyncio.Event()
        self._draining = False
        self._ready = False
        #: 0 after a stop that was asked for; :data:`EXIT_FATAL` after a fatal error.
        self.exit_code = 0
        self.fatal: str | None = None
        self.supervisor = Supervisor(self._on_fatal)
        self.runner = AttemptRunner(
            name=self.name, settings=settings, registry=self.registry, metrics=self.metrics,
            holdings=self.holdings, outbox=self.outbox,
            spawner=lambda msgs: queue.enqueue_many(self.redis, msgs),
        )
        self.consumer = Consumer(
            redis=self.redis, keys=self.keys, name=self.name, settings=settings, registry=self.registry,
            metrics=self.metrics, holdings=self.holdings, runner=self.runner, stopping=self._stop,
        )
        self.upkeep = Upkeep(
            redis=self.redis, keys=self.keys, name=self.name, settings=settings, holdings=self.holdings,
            runner=self.runner, heartbeat=self.heartbeat,
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

    def _on_fatal(self, task: str, exc: BaseException) -> None:
        log.critical(f"{task} hit {type(exc).__name__}: this worker can no longer serve and exits",
                     exc_info=exc, extra={"worker": self.name})
        self.fatal = f"{task}: {type(exc).__name__}"
        self.exit_code = EXIT_FATAL
        self.stop()

    async def run(self) -> None:
        """Serve the pool until :meth:`stop`; returns after the graceful shutdown."""
        probe: ProbeServer | None = None
        if self.settings.metrics_port >= 0:
            probe = ProbeServer(self.metrics, self.healthy, self.ready, self.settings.metrics_host,
                                self.settings.metrics_port, details=self.health_report)
            self.metrics_port = await probe.start()
            log.info(f"metrics listening on port {self.metrics_port}",
                     extra={"port": self.metrics_port, "worker": self.name})
        try:
            if await self._wait_for_redis():
                await self._serve()
        finally:
            if probe is not None:
                await probe.stop()
            await connection.aclose(self.redis)
            log.info("worker stopped", extra={"worker": self.name, "pool": self.settings.pool})

    async def _serve(self) -> None:
        await leases.ensure_groups(self.redis, self.keys)
        handed = await leases.reclaim_previous_run(self.redis, self.keys, self.name)
        if handed:
            log.warning(f"handed back {handed} job(s) a previous run of this worker held",
                        extra={"worker": self.name})
        await self.upkeep.beat()
        self._ready = True
        log.info(
            "worker started",
            extra={"worker": self.name, "pool": self.settings.pool, "namespace": self.settings.namespace},
        )
        s, up = self.supervisor, self.upkeep
        self._reader = s.forever("kw-reader", self.consumer.run, done=self._stop.is_set)
        s.forever("kw-outbox", self.outbox.run)
        # Never slower than its interval: after an outage of any length, leases are renewed
        # within one beat of Redis' return, before any reaper's grace of a full lease ends.
        s.every("kw-heartbeat", lambda: self.settings.heartbeat_seconds, up.beat, backoff=False)
        s.every("kw-reaper", up.reap_interval, up.reap)
        s.every("kw-promoter", lambda: self.settings.promote_seconds, up.promote)
        s.forever("kw-cancel", up.listen_for_cancellations)
        try:
            await self._stop.wait()
            await drain.drain(
                redis=self.redis, keys=self.keys, name=self.name, grace=self.settings.shutdown_grace,
                cancel_grace=self.settings.cancel_grace, holdings=self.holdings, runner=self.runner,
                outbox=self.outbox, reader=self._reader, stop_heartbeat=self._stop_heartbeat,
                heartbeat=self.heartbeat,
            )
        finally:
            # Bounded: a helper stuck in a Redis call must not keep the process alive.
            for name in await self.supervisor.stop(5):
                log.warning(f"{name} did not stop in time", extra={"worker": self.name})

    async def _stop_heartbeat(self) -> None:
        task = self.supervisor.tasks.get("kw-heartbeat")
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

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
        """/healthz (liveness): this process works: nothing fatal happened and every task it
        supervises runs. Not whether Redis answers: an outage must not restart the fleet."""
        return self.fatal is None and not self.supervisor.dead()

    def health_report(self) -> list[str]:
        """What ``/healthz`` says beyond ok: fatal errors, dead or failing tasks, abandoned handlers."""
        lines = [f"fatal: {self.fatal}"] if self.fatal else []
        lines += self.supervisor.report()
        lines += [f"handler still running after its job ended: {job_id}" for job_id in self.runner.still_running()]
        return lines

    def ready(self) -> bool:
        """/readyz: taking jobs: started, not draining, and Redis took a heartbeat within the lease."""
        recent = time.monotonic() - self.upkeep.last_beat_ok < self.settings.lease_seconds
        return self._ready and not self._draining and recent and self.healthy()

    @property
    def in_flight(self) -> int:
        return len(self.holdings.running)
