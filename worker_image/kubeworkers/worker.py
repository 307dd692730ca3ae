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
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel, ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from kubeworkers import leases, scripts
from kubeworkers.context import JobContext
from kubeworkers.errors import job_error
from kubeworkers.metrics import ProbeServer, WorkerMetrics
from kubeworkers.protocol import (
    CANCEL_CHANNEL,
    EVENTS_STREAM,
    WORKER_GROUP,
    JobError,
    JobMessage,
    JobState,
    PoolKeys,
    WorkerHeartbeat,
    job_pool_key,
)
from kubeworkers.registry import DEFAULT_MAX_ATTEMPTS, HandlerSpec, Registry
from kubeworkers.registry import registry as default_registry
from kubeworkers.settings import WorkerSettings

log = logging.getLogger("kubeworkers.worker")

#: Redis errors a loop survives by waiting and trying again.
TRANSIENT = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


@dataclass(eq=False)
class _Job:
    entry: str
    stream: str
    msg: JobMessage
    record: str
    attempt: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    task: asyncio.Task[None] | None = None
    ctx: JobContext | None = None
    #: Why the worker stopped the handler: 'cancelled', 'shutdown' or 'lost'.
    stop_reason: str | None = None
    started: float = field(default_factory=time.monotonic)


@dataclass
class _Write:
    """One queued script call of the flusher; ``job`` is released once it is written."""

    script: str
    keys: list[str]
    argv: list[scripts.Arg]
    job: _Job | None = None


def _event(job: _Job, state: JobState, worker: str, **extra: Any) -> str:
    """A :class:`~kubeworkers.protocol.JobEvent` as JSON, built without a model round trip."""
    m = job.msg
    body: dict[str, Any] = {
        "job_id": m.job_id,
        "uid": m.uid,
        "namespace": m.namespace,
        "pool": m.pool,
        "state": state.value,
        "attempt": job.attempt,
        "worker": worker,
        "at": time.time(),
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    return json.dumps(body)


def _output(result: Any) -> Any:
    """A handler's return value as JSON-ready data."""
    if result is None or isinstance(result, dict | list | str | int | float | bool):
        return result
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    raise TypeError(f"a handler must return a pydantic model, a dict or None, not {type(result).__name__}")


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
        self.metrics_port: int | None = None
        self._held: dict[str, _Job] = {}  # delivered to us, not yet acknowledged
        self._running: dict[str, _Job] = {}  # handler started, not yet ended
        self._by_record: dict[str, _Job] = {}
        self._buffer: deque[tuple[int, str, str]] = deque()  # read beyond free slots (rare)
        self._outbox: list[_Write] = []
        self._progress: dict[str, _Write] = {}
        self._wake_flusher = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._stop = asyncio.Event()
        self._stopped = asyncio.Event()
        self._draining = False
        self._in_blocking_read = False
        self._reader: asyncio.Task[None] | None = None
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
        await self._wait_for_redis()
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
        helpers = [
            asyncio.create_task(self._flush_loop(), name="kw-flusher"),
            asyncio.create_task(self._heartbeat_loop(), name="kw-heartbeat"),
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
            await asyncio.gather(self._reader, *helpers, return_exceptions=True)
            if probe is not None:
                await probe.stop()
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
            await self.redis.aclose()
            self._stopped.set()
            log.info("worker stopped", extra={"worker": self.name, "pool": self.settings.pool})

    async def _wait_for_redis(self) -> None:
        delay = 0.1
        while True:
            try:
                await self.redis.ping()
                return
            except TRANSIENT as exc:
                log.warning(f"redis not reachable, retrying: {exc}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)

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
                continue
            try:
                if self._buffer:
                    batch = [self._buffer.popleft() for _ in range(min(free, len(self._buffer)))]
                else:
                    batch = await self._read(free)
                    if len(batch) > free:
                        self._buffer.extend(batch[free:])
                        batch = batch[:free]
                if batch:
                    await self._start(batch)
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
            except TRANSIENT as exc:
                log.warning(f"read failed, retrying: {exc}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)

    async def _read(self, count: int) -> list[tuple[int, str, str]]:
        """Up to ``count`` new entries: (stream index, entry id, message JSON), highest priority first."""
        flat = await scripts.call(self.redis, "read", self.streams, [WORKER_GROUP, self.name, count])
        if flat:
            return [
                (int(flat[i]) - 1, flat[i + 1].decode(), flat[i + 2].decode()) for i in range(0, len(flat), 3)
            ]
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
        out: list[tuple[int, str, str]] = []
        for stream, entries in reply or []:
            index = self.streams.index(stream.decode())
            for entry_id, fields in entries:
                raw = fields.get(b"m", b"")
                out.append((index, entry_id.decode(), raw.decode()))
        out.sort(key=lambda e: e[0])
        return out

    async def _start(self, batch: list[tuple[int, str, str]]) -> None:
        """Mark a batch of delivered entries Running (one round trip) and launch their handlers."""
        now = repr(time.time())
        jobs: list[_Job] = []
        for index, entry, raw in batch:
            stream = self.streams[index]
            try:
                msg = JobMessage.model_validate_json(raw)
            except ValidationError as exc:
                log.error(f"dropping an unreadable stream entry: {exc}", extra={"entry": entry})
                await self.redis.xack(stream, WORKER_GROUP, entry)
                await self.redis.xdel(stream, entry)
                continue
            job = _Job(entry=entry, stream=stream, msg=msg, record=self.keys.record(msg.job_id))
            self._held[entry] = job
            jobs.append(job)
        if not jobs:
            return
        ttl = self.settings.result_ttl

        def build(pipe: object) -> None:
            for job in jobs:
                spec = self.registry.get(job.msg.handler)
                default_max = spec.max_attempts if spec else DEFAULT_MAX_ATTEMPTS
                scripts.evalsha(
                    pipe,
                    "start",
                    [
                        job.record,
                        self.keys.cancel(job.msg.job_id),
                        EVENTS_STREAM,
                        job.stream,
                        self.keys.dead_letter,
                        self.keys.stats,
                        job_pool_key(job.msg.namespace, job.msg.job_id),
                    ],
                    [job.entry, job.msg.uid, self.name, now, default_max, WORKER_GROUP, ttl],
                )

        try:
            verdicts = await scripts.pipelined(self.redis, build)
        except BaseException:
            for job in jobs:
                self._held.pop(job.entry, None)
            raise
        for job, (raw_verdict, attempt, max_attempts) in zip(jobs, verdicts, strict=True):
            verdict = raw_verdict.decode()
            job.attempt, job.max_attempts = int(attempt), int(max_attempts)
            if verdict == "run":
                self._launch(job)
                continue
            self._held.pop(job.entry, None)
            extra = {"job_id": job.msg.job_id, "handler": job.msg.handler, "attempt": job.attempt}
            if verdict == "cancelled":
                self.metrics.outcome(job.msg.handler, "cancelled")
                log.info("job cancelled before it started", extra={**extra, "state": "Cancelled"})
            elif verdict == "dead":
                self.metrics.dead_letter(job.msg.handler)
                self.metrics.outcome(job.msg.handler, "failed")
                log.error(
                    "job dead-lettered: every attempt was lost with its worker",
                    extra={**extra, "state": "Failed", "reason": "WorkerLost"},
                )
            else:
                log.info(f"skipping a {verdict} entry", extra={**extra, "reason": verdict})

    def _launch(self, job: _Job) -> None:
        self._running[job.entry] = job
        self._by_record[job.record] = job
        self.metrics.in_flight.set(len(self._running))
        self.last_job = job.msg.job_id
        job.task = asyncio.create_task(self._run(job))

    # ------------------------------------------------------------------ running

    async def _run(self, job: _Job) -> None:
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
                    spec,
                )
                return
            log.info("job running", extra={**extra, "state": "Running"})
            await self._call(job, spec, inp)
        finally:
            self._running.pop(job.entry, None)
            self._by_record.pop(job.record, None)
            self.metrics.in_flight.set(len(self._running))
            self._slot_free.set()

    async def _call(self, job: _Job, spec: HandlerSpec, inp: BaseModel) -> None:
        msg = job.msg
        assert self._loop is not None
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
            logger=logging.LoggerAdapter(
                logging.getLogger(f"kubeworkers.handler.{spec.name}"),
                {"job_id": msg.job_id, "handler": spec.name, "attempt": job.attempt},
            ),
            loop=self._loop,
            progress_sink=functools.partial(self._report_progress, job),
        )
        kwargs = {spec.context_param: ctx} if spec.context_param else {}
        timeout = msg.timeout_seconds if msg.timeout_seconds is not None else spec.timeout
        started = time.monotonic()
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                if spec.is_async:
                    result = await spec.func(inp, **kwargs)
                else:
                    if self._executor is None:
                        self._executor = ThreadPoolExecutor(
                            self.settings.concurrency, thread_name_prefix="kw-handler"
                        )
                    result = await self._loop.run_in_executor(
                        self._executor, functools.partial(spec.func, inp, **kwargs)
                    )
            output = _output(result)
            out_json = json.dumps(output)
        except asyncio.CancelledError:
            ctx._mark_cancelled()
            reason = job.stop_reason
            task = asyncio.current_task()
            if reason is None or task is None:
                raise
            task.uncancel()
            self._end_stopped(job, reason, time.monotonic() - started)
            return
        except TimeoutError as exc:
            ctx._mark_cancelled()
            if deadline.expired():
                error = JobError(
                    type="Timeout", message=f"timed out after {timeout:g}s (attempt {job.attempt})", retryable=True
                )
                self.metrics.outcome(spec.name, "timed_out")
            else:
                error = job_error(exc)
            self._end_error(job, spec, error, time.monotonic() - started)
            return
        except (TypeError, ValueError) as exc:
            # Unserialisable outputs land here too; they are the handler's bug, not bad luck.
            permanent = "must return" in str(exc) or "JSON serializable" in str(exc)
            self._end_error(job, spec, job_error(exc, retryable=not permanent), time.monotonic() - started)
            return
        except Exception as exc:
            self._end_error(job, spec, job_error(exc), time.monotonic() - started)
            return
        duration = time.monotonic() - started
        self.metrics.outcome(spec.name, "succeeded")
        self.metrics.observe(spec.name, duration)
        log.info(
            "job succeeded",
            extra={
                "job_id": msg.job_id, "handler": msg.handler, "attempt": job.attempt,
                "state": "Succeeded", "duration": round(duration, 6),
            },
        )
        self._finish(job, JobState.SUCCEEDED, duration, out_json=out_json, output=output)

    # ------------------------------------------------------------------ endings

    def _finish(
        self,
        job: _Job,
        state: JobState,
        duration: float,
        *,
        out_json: str = "",
        output: Any = None,
        error: JobError | None = None,
        message: str = "",
        dead_letter_reason: str = "",
    ) -> None:
        err_dict = error.model_dump(exclude_none=True) if error else None
        event = _event(
            job, state, self.name, output=output, error=err_dict, message=message or None,
            progress=1.0 if state is JobState.SUCCEEDED else None,
        )
        self._queue_write(
            _Write(
                "finish",
                [
                    job.record,
                    EVENTS_STREAM,
                    job.stream,
                    self.keys.stats,
                    job_pool_key(job.msg.namespace, job.msg.job_id),
                    self.keys.dead_letter,
                ],
                [
                    job.entry, WORKER_GROUP, state.value, repr(time.time()), self.settings.result_ttl,
                    out_json, json.dumps(err_dict) if err_dict else "", message, repr(duration), event,
                    dead_letter_reason, self.name, job.attempt,
                ],
                job,
            )
        )

    def _end_failed(self, job: _Job, error: JobError, spec: HandlerSpec | None = None) -> None:
        """Fail at once, without retry (unknown handler, invalid input)."""
        handler = job.msg.handler
        self.metrics.outcome(handler, "failed")
        self.metrics.dead_letter(handler)
        log.error(
            f"job failed: {error.message}",
            extra={"job_id": job.msg.job_id, "handler": handler, "attempt": job.attempt, "state": "Failed",
                   "error": error.type},
        )
        self._finish(job, JobState.FAILED, 0.0, error=error, message=error.message,
                     dead_letter_reason=f"{error.type}: {error.message}")

    def _end_error(self, job: _Job, spec: HandlerSpec, error: JobError, duration: float) -> None:
        extra = {"job_id": job.msg.job_id, "handler": spec.name, "attempt": job.attempt,
                 "error": error.type, "duration": round(duration, 6)}
        self.metrics.observe(spec.name, duration)
        if error.retryable and job.attempt < job.max_attempts:
            base = min(self.settings.max_backoff, spec.retry_backoff * 2 ** (job.attempt - 1))
            # Jitter spreads retries of a burst of failures over time.
            delay = base * random.uniform(0.5, 1.0)
            message = (
                f"attempt {job.attempt}/{job.max_attempts} failed ({error.type}: {error.message}); "
                f"retrying in {delay:.2f}s"
            )
            self.metrics.outcome(spec.name, "retried")
            self.metrics.retried(spec.name)
            log.warning(message, extra={**extra, "state": "Queued"})
            now = time.time()
            err_dict = error.model_dump(exclude_none=True)
            event = _event(job, JobState.QUEUED, self.name, error=err_dict, message=message)
            self._queue_write(
                _Write(
                    "retry",
                    [job.record, EVENTS_STREAM, job.stream, self.keys.delayed, self.keys.stats],
                    [job.entry, WORKER_GROUP, repr(now), repr(now + delay), json.dumps(err_dict), message, event],
                    job,
                )
            )
            return
        if error.retryable:
            reason = f"{error.type}: {error.message} (attempt {job.attempt} of {job.max_attempts})"
        else:
            reason = f"{error.type}: {error.message} (not retryable)"
        self.metrics.outcome(spec.name, "failed")
        self.metrics.dead_letter(spec.name)
        log.error(f"job failed: {reason}", extra={**extra, "state": "Failed"})
        self._finish(job, JobState.FAILED, duration, error=error, message=reason, dead_letter_reason=reason)

    def _end_stopped(self, job: _Job, reason: str, duration: float) -> None:
        extra = {"job_id": job.msg.job_id, "handler": job.msg.handler, "attempt": job.attempt}
        if reason == "cancelled":
            self.metrics.outcome(job.msg.handler, "cancelled")
            log.info("job cancelled", extra={**extra, "state": "Cancelled"})
            self._finish(job, JobState.CANCELLED, duration, message="cancelled while running")
        elif reason == "shutdown":
            self.metrics.outcome(job.msg.handler, "handed_back")
            log.warning("job handed back: the worker is shutting down", extra={**extra, "state": "Queued"})
            self._queue_write(
                _Write(
                    "requeue",
                    [job.stream, job.record, EVENTS_STREAM],
                    [job.entry, WORKER_GROUP, self.name, "1", repr(time.time()),
                     f"handed back by {self.name} (shutting down)"],
                    job,
                )
            )
        else:
            # The lease went to another worker, which now owns the job: write nothing.
            self.metrics.outcome(job.msg.handler, "lost")
            log.warning("job lost its lease; another worker runs it", extra={**extra, "reason": "lost"})
            self._held.pop(job.entry, None)

    def _report_progress(self, job: _Job, fraction: float, message: str | None) -> None:
        if job.entry not in self._running:
            return
        event = _event(job, JobState.RUNNING, self.name, progress=fraction, message=message)
        # Only the latest report of a job matters: earlier unsent ones are replaced.
        self._progress[job.entry] = _Write(
            "progress",
            [job.record, EVENTS_STREAM],
            [job.entry, repr(fraction), message or "", repr(time.time()), event],
        )
        self._wake_flusher.set()

    def _queue_write(self, write: _Write) -> None:
        self._outbox.append(write)
        self._wake_flusher.set()

    # ------------------------------------------------------------------ flushing

    async def _flush_loop(self) -> None:
        while True:
            await self._wake_flusher.wait()
            self._wake_flusher.clear()
            await self._flush()

    async def _flush(self) -> None:
        """Write everything queued, in one pipeline; keeps what failed for the next round."""
        delay = 0.1
        while self._outbox or self._progress:
            progress = list(self._progress.values())
            self._progress.clear()
            batch = progress + self._outbox
            self._outbox = []
            try:
                results = await self._pipeline(batch)
            except TRANSIENT as exc:
                log.warning(f"writing job results failed, retrying: {exc}")
                self._outbox = [w for w in batch if w.script != "progress"] + self._outbox
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)
                continue
            retry: list[_Write] = []
            for write, result in zip(batch, results, strict=True):
                if isinstance(result, NoScriptError):
                    retry.append(write)
                elif isinstance(result, Exception):
                    log.error(f"{write.script} failed: {result}", extra={"job_id": write.keys[0]})
                    self._release(write)
                else:
                    self._release(write)
            if retry:
                await scripts.load_all(self.redis)
                self._outbox = retry + self._outbox

    async def _pipeline(self, batch: list[_Write]) -> list[Any]:
        pipe = self.redis.pipeline(transaction=False)
        for w in batch:
            scripts.evalsha(pipe, w.script, w.keys, w.argv)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        return results

    def _release(self, write: _Write) -> None:
        if write.job is not None:
            self._held.pop(write.job.entry, None)

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
            except TRANSIENT as exc:
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
            except TRANSIENT as exc:
                log.warning(f"reaper failed: {exc}")
            except ResponseError:
                log.exception("reaper failed")

    async def _promote_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.promote_seconds)
            try:
                await leases.promote(self.redis, self.keys)
            except TRANSIENT as exc:
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
            except TRANSIENT as exc:
                log.warning(f"cancel subscription lost, resubscribing: {exc}")
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _stop_job(self, job: _Job, reason: str) -> None:
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
        with contextlib.suppress(*TRANSIENT):
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
        await self._flush()
        # Entries delivered to us but never started (buffered, or read while the
        # read was being interrupted) go back to the stream now, not after the lease.
        await self._hand_back_unstarted()
        with contextlib.suppress(*TRANSIENT):
            await self.redis.hdel(self.keys.workers, self.name)
            for stream in self.streams:
                info = await self.redis.xpending_range(stream, WORKER_GROUP, "-", "+", 1, consumername=self.name)
                if not info:
                    await self.redis.xgroup_delconsumer(stream, WORKER_GROUP, self.name)

    async def _hand_back_unstarted(self) -> None:
        for stream in self.streams:
            try:
                pending: Any = await self.redis.xpending_range(
                    stream, WORKER_GROUP, "-", "+", 10_000, consumername=self.name
                )
            except TRANSIENT:
                return
            ids = [p["message_id"].decode() for p in pending]
            if not ids:
                continue
            triples: list[tuple[str, str, str]] = []
            entries: Any = await self.redis.xrange(stream, ids[0], ids[-1])
            for entry_id, fields in entries:
                entry = entry_id.decode()
                if entry in ids:
                    with contextlib.suppress(ValueError):
                        triples.append((stream, entry, JobMessage.from_fields(fields).job_id))
            await leases.requeue(
                self.redis, self.keys, triples, self.name, uncount_attempt=False,
                message=f"handed back by {self.name} (shutting down before starting it)",
            )
