"""The worker: reads a pool's streams through the consumer group and runs handlers.

One asyncio loop per process holds a few long-lived tasks:

- the *reader* reads up to ``concurrency - in_flight`` entries at a time
  (priority order, then a blocking read when idle), marks them Running in one
  pipelined round trip and starts one task per job;
- the *flusher* writes every finished attempt (record, event, XACK/XDEL, stats)
  and progress report in batched pipelines;
- the *heartbeat* renews the leases on held entries, notices lost leases and
  cancel flags, and refreshes this worker's entry in the pool's registry;
- the *reaper* (one per pool at a time, under a TTL'd lock) hands back entries
  whose lease expired, and every worker promotes due retries;
- the *cancel listener* gets cancellations by pub/sub.

On SIGTERM (:meth:`Worker.stop`) the worker stops reading, lets in-flight jobs
finish within ``shutdown_grace``, hands the rest back to the stream at once and
removes itself from the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from logging import ERROR, INFO, WARNING
from typing import Any, Literal

import redis.asyncio as aioredis
from pydantic import BaseModel, ValidationError
from redis.exceptions import ResponseError

from kubeworkers import leases, logs, scripts, wire
from kubeworkers.attempts import (
    Delivery,
    backoff,
    failure_reason,
    finish_write,
    output_of,
    progress_write,
    requeue_write,
    retry_write,
)
from kubeworkers.context import JobContext
from kubeworkers.errors import job_error
from kubeworkers.metrics import ProbeServer, WorkerMetrics
from kubeworkers.outbox import Outbox, Write
from kubeworkers.protocol import (
    CANCEL_CHANNEL,
    EVENTS_STREAM,
    WORKER_GROUP,
    JobError,
    JobMessage,
    JobState,
    PoolKeys,
    WorkerHeartbeat,
    job_pool_prefix,
)
from kubeworkers.redis_ops import TRANSIENT_ERRORS
from kubeworkers.registry import DEFAULT_MAX_ATTEMPTS, HandlerSpec, Registry
from kubeworkers.registry import registry as default_registry
from kubeworkers.settings import WorkerSettings

log = logging.getLogger("kubeworkers.worker")
#: One line per job state change (see :class:`kubeworkers.logs.JobLog`).
job_log = logs.JobLog(log)

#: Most entries one take (read + start) delivers: small enough that Python runs one batch
#: while Redis executes the next, large enough to amortise the round trip.
TAKE_BATCH = 64

#: Longest the final write of results may take on shutdown.
FINAL_FLUSH_SECONDS = 30.0


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
        self.streams = self.keys.streams
        self.redis: aioredis.Redis = aioredis.Redis.from_url(settings.redis_url)
        self.metrics = WorkerMetrics(settings.pool, settings.namespace)
        self.metrics.in_flight.set_function(lambda: len(self._running))
        self.metrics_port: int | None = None
        self._held: dict[str, Delivery] = {}  # delivered to us, not yet acknowledged
        self._running: dict[str, Delivery] = {}  # handler started, not yet ended
        self._by_record: dict[str, Delivery] = {}
        self.outbox = Outbox(self.redis, self.keys, self.name, settings.result_ttl)
        self._handler_max = json.dumps({spec.name: spec.max_attempts for spec in self.registry})
        self._slot_free = asyncio.Event()
        self._stop = asyncio.Event()
        self._stopped = asyncio.Event()
        self._draining = False
        self._in_blocking_read = False
        self._reader: asyncio.Task[None] | None = None
        self._heartbeats: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._last_beat_ok = 0.0
        self._ready = False
        self.last_job: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

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
        if self._reader is not None and self._in_blocking_read:
            self._reader.cancel()
        self._slot_free.set()

    async def run(self) -> None:
        """Serve the pool until :meth:`stop`; returns after the graceful shutdown."""
        self._loop = asyncio.get_running_loop()
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
        await self._beat()
        self._ready = True
        log.info(
            "worker started",
            extra={"worker": self.name, "pool": self.settings.pool, "namespace": self.settings.namespace},
        )
        self._reader = asyncio.create_task(self._read_loop(), name="kw-reader")
        heartbeats = self._heartbeats = asyncio.create_task(self._heartbeat_loop(), name="kw-heartbeat")
        helpers = [
            asyncio.create_task(self.outbox.run(), name="kw-outbox"),
            heartbeats,
            asyncio.create_task(self._reap_loop(), name="kw-reaper"),
            asyncio.create_task(self._promote_loop(), name="kw-promoter"),
            asyncio.create_task(self._cancel_listener(), name="kw-cancel"),
        ]
        try:
            await self._stop.wait()
            await self._drain()
        finally:
            for task in [self._reader, *helpers]:
                task.cancel()
            # Bounded: a helper stuck in a Redis call must not keep the process alive.
            _, stuck = await asyncio.wait([self._reader, *helpers], timeout=5)
            for task in stuck:
                log.warning(f"{task.get_name()} did not stop in time", extra={"worker": self.name})
            if probe is not None:
                await probe.stop()
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
            await self.redis.aclose()
            self._stopped.set()
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

    def healthy(self) -> bool:
        """/healthz: the loop answers and Redis took a heartbeat within the lease."""
        return time.monotonic() - self._last_beat_ok < self.settings.lease_seconds

    def ready(self) -> bool:
        """/readyz: connected and taking jobs (not draining)."""
        return self._ready and not self._draining and self.healthy()

    @property
    def in_flight(self) -> int:
        return len(self._running)

    # ------------------------------------------------------------------ reading

    async def _read_loop(self) -> None:
        delay = 0.1
        while not self._stop.is_set():
            free = self.settings.concurrency - len(self._running)
            if free <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                # Let every job that is finishing in this loop iteration finish, so the
                # next read fills many slots in one round trip instead of one per job.
                await asyncio.sleep(0)
                continue
            try:
                # Smaller takes than the free slots let Python run the jobs of one take while
                # Redis executes the next: the two overlap instead of taking turns.
                self._start(await self._take(min(free, TAKE_BATCH)), free)
                delay = 0.1
            except asyncio.CancelledError:
                if self._stop.is_set():
                    return
                raise
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    # Redis lost the group (restarted without persistence): recreate it.
                    await leases.ensure_groups(self.redis, self.keys)
                    continue
                log.exception("read failed")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)
            except TRANSIENT_ERRORS as exc:
                log.warning(f"read failed, retrying: {exc}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)

    def _take_args(self, mode: Literal["read", "given"], count: int, given: list[wire.Given]) -> list[wire.Arg]:
        return wire.take_args(
            mode=mode, group=WORKER_GROUP, consumer=self.name, count=count, now=repr(time.time()),
            prefix=self.keys.prefix, events=EVENTS_STREAM, pointer_prefix=job_pool_prefix(self.keys.namespace),
            result_ttl=self.settings.result_ttl, default_max_attempts=DEFAULT_MAX_ATTEMPTS,
            handler_max_attempts=self._handler_max, given=given,
        )

    async def _take(self, count: int) -> list[wire.Taken]:
        """Deliver and decide up to ``count`` entries (see ``lua/take.lua``)."""
        flat: list[Any] = await scripts.call(self.redis, "take", self.streams, self._take_args("read", count, []))
        if flat:
            return wire.parse_take(flat)
        # Nothing waiting: block until something arrives, then decide on what came.
        self._in_blocking_read = True
        try:
            reply: Any = await self.redis.xreadgroup(
                WORKER_GROUP,
                self.name,
                dict.fromkeys(self.streams, ">"),
                count=count,
                block=self.settings.block_ms,
            )
        finally:
            self._in_blocking_read = False
        given: list[wire.Given] = []
        for stream, entries in reply or []:
            index = self.streams.index(stream.decode()) + 1
            for entry_id, fields in entries:
                given.append(wire.Given(
                    index, entry_id, fields.get(b"m", b""),
                    fields.get(b"j", b""), fields.get(b"u", b""), fields.get(b"h", b""),
                ))
        if not given:
            return []
        result: list[Any] = await scripts.call(
            self.redis, "take", self.streams, self._take_args("given", count, given)
        )
        return wire.parse_take(result)

    def _start(self, taken: list[wire.Taken], free: int) -> None:
        """Launch the runnable entries of a take; hand back any beyond ``free`` slots."""
        surplus: list[Delivery] = []
        for t in taken:
            try:
                msg = JobMessage.model_validate_json(t.message)
            except ValidationError as exc:
                log.error(f"dropped an unreadable stream entry: {exc}", extra={"entry": t.entry})
                continue
            job = Delivery(
                index=t.stream, entry=t.entry, stream=self.streams[t.stream - 1], msg=msg,
                record=self.keys.record(msg.job_id), attempt=t.attempt, max_attempts=t.max_attempts,
            )
            verdict = t.verdict
            if verdict is wire.Verdict.RUN:
                if len(self._running) >= self.settings.concurrency:
                    # A blocking read over several streams can return more than asked.
                    surplus.append(job)
                    self._held[t.entry] = job
                    continue
                self._held[t.entry] = job
                self._launch(job)
                continue
            extra = {"job_id": msg.job_id, "handler": msg.handler, "attempt": job.attempt}
            if verdict is wire.Verdict.CANCELLED:
                self.metrics.outcome(msg.handler, "cancelled")
                job_log(INFO, "job cancelled before it started", {**extra, "state": "Cancelled"})
            elif verdict is wire.Verdict.DEAD:
                self.metrics.dead_letter(msg.handler)
                self.metrics.outcome(msg.handler, "failed")
                log.error(
                    "job dead-lettered: every attempt was lost with its worker",
                    extra={**extra, "state": "Failed", "reason": "WorkerLost"},
                )
            else:
                log.info(f"skipped a {verdict} entry", extra={**extra, "reason": verdict.value})
        for job in surplus:
            self._hand_back(job, uncount=True, message=f"handed back by {self.name} (no free slot)")

    def _launch(self, job: Delivery) -> None:
        self._running[job.entry] = job
        self._by_record[job.record] = job
        self.last_job = job.msg.job_id
        job.task = asyncio.create_task(self._run(job))

    # ------------------------------------------------------------------ running

    async def _run(self, job: Delivery) -> None:
        msg = job.msg
        extra = {"job_id": msg.job_id, "handler": msg.handler, "attempt": job.attempt}
        try:
            spec = self.registry.get(msg.handler)
            if spec is None:
                known = ", ".join(s.name for s in self.registry) or "none"
                self._end_failed(
                    job,
                    JobError(
                        type="UnknownHandler",
                        message=f"no handler named {msg.handler!r} in pool {msg.pool!r} (registered: {known})",
                        retryable=False,
                    ),
                )
                return
            try:
                inp = spec.input_model.model_validate(msg.input)
            except ValidationError as exc:
                self._end_failed(
                    job,
                    JobError(
                        type="InvalidInput",
                        message=f"input does not match {spec.input_model.__name__} of {spec.name!r}: {exc}",
                        retryable=False,
                    ),
                )
                return
            job_log(INFO, "job running", {**extra, "state": "Running"})
            await self._call(job, spec, inp)
        finally:
            self._running.pop(job.entry, None)
            self._by_record.pop(job.record, None)
            self._slot_free.set()

    async def _call(self, job: Delivery, spec: HandlerSpec, inp: BaseModel) -> None:
        msg = job.msg
        assert self._loop is not None
        if spec.context_param is None:
            return await self._invoke(job, spec, inp, None, {})
        job.ctx = ctx = JobContext(
            job_id=msg.job_id,
            uid=msg.uid,
            namespace=msg.namespace,
            pool=msg.pool,
            handler=msg.handler,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            worker=self.name,
            enqueued_at=msg.enqueued_at,
            loop=self._loop,
            progress_sink=functools.partial(self._report_progress, job),
        )
        return await self._invoke(job, spec, inp, ctx, {spec.context_param: ctx})

    async def _invoke(
        self, job: Delivery, spec: HandlerSpec, inp: BaseModel, ctx: JobContext | None, kwargs: dict[str, Any]
    ) -> None:
        msg = job.msg
        assert self._loop is not None
        timeout = msg.timeout_seconds if msg.timeout_seconds is not None else spec.timeout
        started = time.monotonic()
        deadline = asyncio.timeout(timeout) if timeout is not None else None
        try:
            if spec.is_async:
                call = spec.func(inp, **kwargs)
            else:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(self.settings.concurrency, thread_name_prefix="kw-handler")
                call = self._loop.run_in_executor(self._executor, functools.partial(spec.func, inp, **kwargs))
            if deadline is None:
                result = await call
            else:
                async with deadline:
                    result = await call
        except asyncio.CancelledError:
            if ctx is not None:
                ctx._mark_cancelled()
            reason = job.stop_reason
            task = asyncio.current_task()
            if reason is None or task is None:
                raise
            task.uncancel()
            self._end_stopped(job, reason, time.monotonic() - started)
            return
        except TimeoutError as exc:
            if ctx is not None:
                ctx._mark_cancelled()
            if deadline is not None and deadline.expired():
                error = JobError(
                    type="Timeout", message=f"timed out after {timeout}s (attempt {job.attempt})", retryable=True
                )
                self.metrics.outcome(spec.name, "timed_out")
            else:
                error = job_error(exc)
            self._end_error(job, spec, error, time.monotonic() - started)
            return
        except Exception as exc:
            self._end_error(job, spec, job_error(exc), time.monotonic() - started)
            return
        try:
            output = output_of(result)
            out_json = json.dumps(output)
        except (TypeError, ValueError) as exc:
            # A handler returning something that is not JSON is a bug a retry cannot fix.
            self._end_error(job, spec, job_error(exc, retryable=False), time.monotonic() - started)
            return
        duration = time.monotonic() - started
        self.metrics.outcome(spec.name, "succeeded")
        self.metrics.observe(spec.name, duration)
        job_log(INFO, "job succeeded", {
            "job_id": msg.job_id, "handler": msg.handler, "attempt": job.attempt,
            "state": "Succeeded", "duration": round(duration, 6),
        })
        self._finish(job, JobState.SUCCEEDED, duration, out_json=out_json)

    # ------------------------------------------------------------------ endings

    def _write(self, job: Delivery, body: wire.Write) -> None:
        """Queue a write that ends this delivery; the entry is released once it is applied."""

        def release(_result: Any) -> None:
            self._held.pop(job.entry, None)

        self.outbox.add(Write(body, release))

    def _finish(self, job: Delivery, state: JobState, duration: float, **details: Any) -> None:
        self._write(job, finish_write(job, state, self.name, duration, **details))

    def _end_failed(self, job: Delivery, error: JobError) -> None:
        """Fail at once, without retry (unknown handler, invalid input)."""
        handler = job.msg.handler
        self.metrics.outcome(handler, "failed")
        self.metrics.dead_letter(handler)
        job_log(ERROR, f"job failed: {error.message}", {
            "job_id": job.msg.job_id, "handler": handler, "attempt": job.attempt, "state": "Failed",
            "error": error.type,
        })
        self._finish(job, JobState.FAILED, 0.0, error=error, message=error.message,
                     dead_letter_reason=f"{error.type}: {error.message}")

    def _end_error(self, job: Delivery, spec: HandlerSpec, error: JobError, duration: float) -> None:
        extra = {"job_id": job.msg.job_id, "handler": spec.name, "attempt": job.attempt,
                 "error": error.type, "duration": round(duration, 6)}
        self.metrics.observe(spec.name, duration)
        if error.retryable and job.attempt < job.max_attempts:
            delay = backoff(spec.retry_backoff, job.attempt, self.settings.max_backoff)
            body, message = retry_write(job, self.name, error, delay)
            self.metrics.outcome(spec.name, "retried")
            self.metrics.retried(spec.name)
            job_log(WARNING, message, {**extra, "state": "Queued"})
            self._write(job, body)
            return
        reason = failure_reason(error, job.attempt, job.max_attempts)
        self.metrics.outcome(spec.name, "failed")
        self.metrics.dead_letter(spec.name)
        job_log(ERROR, f"job failed: {reason}", {**extra, "state": "Failed"})
        self._finish(job, JobState.FAILED, duration, error=error, message=reason, dead_letter_reason=reason)

    def _hand_back(self, job: Delivery, *, uncount: bool, message: str) -> None:
        self._write(job, requeue_write(job, message, uncount=uncount))

    def _end_stopped(self, job: Delivery, reason: str, duration: float) -> None:
        extra = {"job_id": job.msg.job_id, "handler": job.msg.handler, "attempt": job.attempt}
        if reason == "cancelled":
            self.metrics.outcome(job.msg.handler, "cancelled")
            job_log(INFO, "job cancelled", {**extra, "state": "Cancelled"})
            self._finish(job, JobState.CANCELLED, duration, message="cancelled while running")
        elif reason == "shutdown":
            self.metrics.outcome(job.msg.handler, "handed_back")
            log.warning("job handed back: the worker is shutting down", extra={**extra, "state": "Queued"})
            self._hand_back(job, uncount=True, message=f"handed back by {self.name} (shutting down)")
        else:
            # The lease went to another worker, which now owns the job: write nothing.
            self.metrics.outcome(job.msg.handler, "lost")
            log.warning("job lost its lease; another worker runs it", extra={**extra, "reason": "lost"})
            self._held.pop(job.entry, None)

    def _report_progress(self, job: Delivery, fraction: float, message: str | None) -> None:
        if job.entry not in self._running:
            return
        self.outbox.progress(job.entry, Write(progress_write(job, self.name, fraction, message)))

    # ------------------------------------------------------------------ upkeep

    def _heartbeat(self) -> WorkerHeartbeat:
        return WorkerHeartbeat(
            worker=self.name,
            in_flight=len(self._running),
            concurrency=self.settings.concurrency,
            last_job=self.last_job,
            draining=self._draining,
        )

    async def _beat(self) -> None:
        """Renew leases, notice lost leases and cancel flags, refresh the registry entry."""
        held: dict[str, list[str]] = {}
        for entry, job in list(self._held.items()):
            held.setdefault(job.stream, []).append(entry)
        lost = await leases.renew(self.redis, self.name, held)
        for entry in lost:
            lost_job = self._held.get(entry)
            if lost_job is not None and lost_job.entry in self._running:
                self._stop_job(lost_job, "lost")
        running = list(self._running.values())
        pipe = self.redis.pipeline(transaction=False)
        for job in running:
            pipe.exists(self.keys.cancel(job.msg.job_id))
        pipe.hset(self.keys.workers, self.name, self._heartbeat().model_dump_json())
        flags = await pipe.execute()
        for job, flagged in zip(running, flags, strict=False):
            if flagged:
                self._stop_job(job, "cancelled")
        self._last_beat_ok = time.monotonic()

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            try:
                await self._beat()
            except TRANSIENT_ERRORS as exc:
                log.warning(f"heartbeat failed: {exc}")
            except ResponseError:
                log.exception("heartbeat failed")

    async def _reap_loop(self) -> None:
        every = self.settings.reap_seconds
        while not self._stop.is_set():
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

    async def _promote_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.promote_seconds)
            logs.flush()  # log lines are buffered; an idle worker still shows them promptly
            try:
                await leases.promote(self.redis, self.keys)
            except TRANSIENT_ERRORS as exc:
                log.warning(f"promoting retries failed: {exc}")

    async def _cancel_listener(self) -> None:
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CANCEL_CHANNEL)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    data = message["data"]
                    job = self._by_record.get(data.decode() if isinstance(data, bytes) else str(data))
                    if job is not None:
                        self._stop_job(job, "cancelled")
            except TRANSIENT_ERRORS as exc:
                log.warning(f"cancel subscription lost, resubscribing: {exc}")
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pubsub.aclose(), 2)  # type: ignore[no-untyped-call]

    def _stop_job(self, job: Delivery, reason: str) -> None:
        if job.stop_reason is not None or job.task is None or job.task.done():
            return
        job.stop_reason = reason
        if job.ctx is not None:
            job.ctx._mark_cancelled()
        job.task.cancel()

    # ------------------------------------------------------------------ shutdown

    async def _drain(self) -> None:
        grace = self.settings.shutdown_grace
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        with contextlib.suppress(*TRANSIENT_ERRORS):
            await self.redis.hset(self.keys.workers, self.name, self._heartbeat().model_dump_json())
        tasks = [j.task for j in self._running.values() if j.task is not None]
        if tasks:
            log.info(
                f"waiting up to {grace:g}s for {len(tasks)} job(s) to finish",
                extra={"worker": self.name},
            )
            await asyncio.wait(tasks, timeout=grace)
        remaining = [j for j in self._running.values() if j.task is not None and not j.task.done()]
        for job in remaining:
            self._stop_job(job, "shutdown")
        if remaining:
            await asyncio.wait([j.task for j in remaining if j.task is not None], timeout=5)
        try:
            # Bounded: with Redis gone for good the pod must still exit; its leases then expire
            # and the jobs run again elsewhere (at least once).
            await asyncio.wait_for(self.outbox.flush(), FINAL_FLUSH_SECONDS)
        except TimeoutError:
            log.error("could not write the last job results before exiting", extra={"worker": self.name})
            return
        # Entries delivered to us but never started (buffered, or read while the
        # read was being interrupted) go back to the stream now, not after the lease.
        await self._hand_back_unstarted()
        # No lease is left to renew: stop the heartbeat first, or a beat in flight could
        # write our registry entry back after the HDEL below.
        if self._heartbeats is not None:
            self._heartbeats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeats
        with contextlib.suppress(*TRANSIENT_ERRORS):
            await self.redis.hdel(self.keys.workers, self.name)
            for stream in self.streams:
                info = await self.redis.xpending_range(stream, WORKER_GROUP, "-", "+", 1, consumername=self.name)
                if not info:
                    await self.redis.xgroup_delconsumer(stream, WORKER_GROUP, self.name)

    async def _hand_back_unstarted(self) -> None:
        for index, stream in enumerate(self.streams, start=1):
            try:
                pending: Any = await self.redis.xpending_range(
                    stream, WORKER_GROUP, "-", "+", 10_000, consumername=self.name
                )
                if not pending:
                    continue
                ids = {p["message_id"].decode() for p in pending}
                entries: Any = await self.redis.xrange(stream, min(ids), max(ids))
            except TRANSIENT_ERRORS:
                return
            triples: list[tuple[int, str, str]] = []
            for entry_id, fields in entries:
                entry = entry_id.decode()
                if entry in ids:
                    with contextlib.suppress(ValueError):
                        triples.append((index, entry, JobMessage.from_fields(fields).job_id))
            await leases.requeue(
                self.redis, self.keys, triples, self.name, uncount_attempt=False,
                message=f"handed back by {self.name} (shutting down before starting it)",
            )
