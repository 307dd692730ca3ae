"""The attempt runner: runs one delivery's handler and turns however it ended into the one write that settles it.

For each delivery it resolves the handler, validates the input, calls the handler (``async``
on the loop, plain ``def`` on a thread of its own) under the job's timeout, and records the
:data:`Ending` through the outbox (:mod:`kubeworkers.attempts` decides the write's shape).

Every path ends in exactly one recorded ending, whatever the handler does:

- it returns: the output (capped), or ``InvalidOutput`` if that is not JSON;
- it raises anything, ``BaseException`` subclasses and ``SystemExit`` included, or an
  exception whose ``str()`` raises: a failure of that type;
- it raises a ``CancelledError`` the worker did not cause: a ``CancelledError`` failure;
- the worker stops it (timeout, cancellation, shutdown, a lost lease): that reason;
- it ignores being stopped: after ``cancel_grace`` the runner records the ending without it,
  frees its slot and says which job it was (an abandoned ``async`` handler runs on, unawaited;
  a sync handler's thread cannot be stopped by Python and runs on too).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from logging import ERROR, INFO, WARNING
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from kubeworkers import attempts, isolation, logs, softlimit, wire
from kubeworkers.attempts import Delivery, Output
from kubeworkers.context import JobContext, Spawner, WaitForChildren
from kubeworkers.errors import SoftTimeout, cap_text, job_error
from kubeworkers.holdings import Holdings
from kubeworkers.metrics import WorkerMetrics
from kubeworkers.outbox import Write
from kubeworkers.protocol import DEFAULT_RETRY, JobError, JobState, RetryPolicy
from kubeworkers.registry import HandlerSpec, Registry
from kubeworkers.settings import WorkerSettings
from kubeworkers.softlimit import SoftLimit, interruptible

log = logging.getLogger("kubeworkers.worker")
#: One line per job state change (see :class:`kubeworkers.logs.JobLog`).
job_log = logs.JobLog(log)


def _log_fields(job: Delivery) -> dict[str, Any]:
    """The fields every line about one of a job's attempts carries."""
    return {"job_id": job.job_id, "handler": job.handler, "attempt": job.attempt}


@dataclass(frozen=True)
class Succeeded:
    output: Output
    duration: float


@dataclass(frozen=True)
class Failed:
    error: JobError
    duration: float
    #: A handler ran (its duration counts in the statistics).
    ran: bool
    #: The retry policy that applies (the job's over the handler's); None: never retried.
    retry: RetryPolicy | None = None
    #: The metrics outcome of this attempt, when not 'retried' or 'failed'.
    outcome: str | None = None


@dataclass(frozen=True)
class Stopped:
    """The worker stopped the handler: 'cancelled', 'shutdown' or 'lost'."""

    reason: str
    duration: float


@dataclass(frozen=True)
class Waits:
    """The handler returned ``ctx.wait(then=...)``: the job waits for its children (fan-out)."""

    then: str
    input_json: str
    duration: float


Ending = Succeeded | Failed | Stopped | Waits


class WriteSink(Protocol):
    """Where the runner queues its writes: the :class:`~kubeworkers.outbox.Outbox` (Redis), or
    ``kubeworkers run-local``'s printer."""

    def add(self, write: Write) -> None: ...

    def progress(self, entry: str, write: Write) -> None: ...


class AttemptRunner:
    """Runs the attempts of one worker; every attempt ends in exactly one queued write."""

    def __init__(
        self,
        *,
        name: str,
        settings: WorkerSettings,
        registry: Registry,
        metrics: WorkerMetrics,
        holdings: Holdings,
        outbox: WriteSink,
        spawner: Spawner | None = None,
    ) -> None:
        self.name = name
        #: Submits handlers' child jobs (``ctx.spawn``); None: handlers here cannot spawn.
        self.spawner = spawner
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self.holdings = holdings
        self.outbox = outbox
        #: Handlers that did not stop when told to, by entry: their jobs are recorded, they run on.
        self.abandoned: dict[str, Delivery] = {}
        #: Threads of sync handlers whose job ended while they still ran, and their job ids.
        self.stray_threads: dict[threading.Thread, str] = {}
        #: The event loop the jobs run in (a runner serves one worker's loop), kept from the first
        #: launch: on Python 3.11 every ``asyncio.get_running_loop()`` (so ``asyncio.create_task``
        #: and ``asyncio.current_task()``) makes a ``getpid`` system call, three per job before.
        self._loop: asyncio.AbstractEventLoop | None = None

    def launch(self, job: Delivery) -> None:
        """Start running ``job`` (already held) as its own task."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        self.holdings.start(job)
        job.task = loop.create_task(self._run(job), name=f"kw-job {job.job_id}")

    def stop_job(self, job: Delivery, reason: str) -> None:
        """Stop a running handler: 'timeout', 'cancelled', 'shutdown' or 'lost' (the lease went elsewhere)."""
        task = job.task
        if job.stop_reason is not None or task is None or task.done() or job.abandoned:
            return
        job.stop_reason = reason
        if job.ctx is not None:
            job.ctx._mark_cancelled()
        task.cancel()
        asyncio.get_running_loop().call_later(self.settings.cancel_grace, self._abandon_if_stuck, job)

    def still_running(self) -> list[str]:
        """Job ids of handlers that outlived their jobs (abandoned tasks, stray threads)."""
        threads = [job_id for thread, job_id in list(self.stray_threads.items()) if thread.is_alive()]
        return sorted({*(job.job_id for job in self.abandoned.values()), *threads})

    # ------------------------------------------------------------------ running

    async def _run(self, job: Delivery) -> None:
        job.started_at = time.monotonic()
        try:
            ending = await self._attempt(job)
        except asyncio.CancelledError:
            # Cancelled outside the handler (the event loop is being torn down).
            ending = Stopped(job.stop_reason or "shutdown", self._elapsed(job))
        except BaseException as exc:  # a bug of the worker's own: the job must still end
            log.exception("running a job failed inside the worker", extra={"job_id": job.job_id})
            ending = Failed(job_error(exc, retryable=True), self._elapsed(job), ran=False, retry=DEFAULT_RETRY,
                            outcome="failed")
        if job.abandoned:
            self.abandoned.pop(job.entry, None)
            log.warning("an abandoned handler has returned at last; its result is ignored",
                        extra={"job_id": job.job_id, "handler": job.handler})
            return
        self.holdings.end(job)
        self._record(job, ending)

    async def _attempt(self, job: Delivery) -> Ending:
        msg = job.msg
        if msg is None:
            return Failed(JobError(type="InvalidMessage", retryable=False, message=cap_text(
                f"the job's message cannot be read: {job.message_error}")), 0.0, ran=False)
        spec = self.registry.get(job.handler)
        if spec is None:
            known = ", ".join(s.name for s in self.registry) or "none"
            return Failed(JobError(type="UnknownHandler", retryable=False, message=cap_text(
                f"no handler named {job.handler!r} in pool {job.pool!r} (registered: {known})")), 0.0, ran=False)
        try:
            inp = spec.input_model.model_validate(msg.input)
        except ValidationError as exc:
            return Failed(JobError(type="InvalidInput", retryable=False, message=cap_text(
                f"input does not match {spec.input_model.__name__} of {spec.name!r}: {exc}")), 0.0, ran=False)
        if msg.expires_at is not None and (now := time.time()) > msg.expires_at:
            return Failed(attempts.expired_error(msg.expires_at, now), 0.0, ran=False)
        job.timeout = msg.timeout_seconds if msg.timeout_seconds is not None else spec.timeout
        job.soft_timeout = msg.soft_timeout_seconds if msg.soft_timeout_seconds is not None else spec.soft_timeout
        if job.soft_timeout is not None and job.timeout is not None and job.soft_timeout >= job.timeout:
            job.soft_timeout = None  # the hard timeout comes first: there is nothing to tell
        job.retry = msg.retry.over(spec.retry) if msg.retry is not None else spec.retry
        if job_log.enabled(INFO):
            job_log(INFO, "job running", {**_log_fields(job), "state": "Running"})
        return await self._invoke(job, spec, inp)

    async def _invoke(self, job: Delivery, spec: HandlerSpec, inp: BaseModel) -> Ending:
        loop = self._loop
        assert loop is not None  # set by launch, which started this task
        isolated = spec.isolation == "process"
        kwargs: dict[str, Any] = {}
        if spec.context_param is not None and not isolated:
            job.ctx = self._context(job, loop)
            kwargs[spec.context_param] = job.ctx
        expiry = loop.call_later(job.timeout, self.stop_job, job, "timeout") if job.timeout is not None else None
        task = asyncio.current_task(loop)
        assert task is not None
        soft = None
        if job.soft_timeout is not None and not isolated:  # an isolated handler's child keeps its own
            soft = SoftLimit(job.soft_timeout, job.ctx, is_async=spec.is_async,
                             stopping=lambda: job.stop_reason is not None)
            soft_expiry = soft.arm(task)
        output: Output | None = None
        try:
            if isolated:
                reply = await self._in_child(job, spec)
                if isinstance(reply, JobError):
                    return Failed(reply, self._elapsed(job), ran=True, retry=job.retry,
                                  outcome="timed_out" if reply.type == "Timeout" else None)
                output = reply
            elif spec.is_async:
                coro = spec.func(inp, **kwargs)
                result = await (interruptible(coro, soft) if soft is not None else coro)
            else:
                result = await self._in_thread(job, functools.partial(spec.func, inp, **kwargs))
        except asyncio.CancelledError:
            if job.stop_reason is None and task.cancelling() == 0:
                # Not the worker's doing: the handler awaited something that was cancelled elsewhere.
                return Failed(JobError(type="CancelledError", retryable=True, message=(
                    "the handler raised CancelledError though the worker did not cancel it "
                    "(it awaited something that was cancelled elsewhere)")),
                    self._elapsed(job), ran=True, retry=job.retry)
            return self._stopped(job)
        except BaseException as exc:
            if job.stop_reason is not None:
                return self._stopped(job)  # it raised something else when told to stop
            if isinstance(exc, SoftTimeout) and soft is not None and soft.expired:
                return Failed(softlimit.uncaught_error(soft, job.attempt, exc), self._elapsed(job), ran=True,
                              retry=job.retry, outcome="timed_out")
            return Failed(job_error(exc), self._elapsed(job), ran=True, retry=job.retry)
        finally:
            if expiry is not None:
                expiry.cancel()
            if soft is not None:
                soft_expiry.cancel()
        if job.stop_reason is not None:
            return self._stopped(job)  # it swallowed the cancellation and returned
        if output is None and isinstance(result, WaitForChildren):
            try:
                waited = attempts.encode_output(result.input, self.settings.max_output_bytes)
            except attempts.InvalidOutputError as exc:
                return Failed(JobError(type="InvalidOutput", message=str(exc), retryable=False),
                              self._elapsed(job), ran=True)
            return Waits(result.then, waited.json, self._elapsed(job))
        if output is None:
            try:
                output = attempts.encode_output(result, self.settings.max_output_bytes)
            except attempts.InvalidOutputError as exc:
                # A handler returning something that is not JSON is a bug a retry cannot fix.
                return Failed(JobError(type="InvalidOutput", message=str(exc), retryable=False),
                              self._elapsed(job), ran=True)
        return Succeeded(output, self._elapsed(job))

    def _context(self, job: Delivery, loop: asyncio.AbstractEventLoop) -> JobContext:
        assert job.msg is not None
        return JobContext(
            job_id=job.job_id, uid=job.uid, namespace=job.namespace, pool=job.pool, handler=job.handler,
            attempt=job.attempt, max_attempts=job.max_attempts, worker=self.name,
            enqueued_at=job.msg.enqueued_at, loop=loop, progress_sink=functools.partial(self._progress, job),
            spawner=self.spawner, run=job.msg.run,
        )

    async def _in_child(self, job: Delivery, spec: HandlerSpec) -> Output | JobError:
        """Run the attempt in a child process (:mod:`kubeworkers.isolation`), killed if this task is cancelled."""
        assert job.msg is not None
        context = {"job_id": job.job_id, "uid": job.uid, "namespace": job.namespace, "pool": job.pool,
                   "handler": job.handler, "attempt": job.attempt, "max_attempts": job.max_attempts,
                   "worker": self.name, "enqueued_at": job.msg.enqueued_at, "run": job.msg.run}
        req = isolation.request(spec, job.msg.input, context, imports=self.settings.imports,
                                soft_timeout=job.soft_timeout, max_output_bytes=self.settings.max_output_bytes)
        # Killed well within the cancel grace, so the runner never has to abandon it.
        return await isolation.run(req, kill_grace=self.settings.cancel_grace / 2,
                                   on_progress=functools.partial(self._progress, job))

    def _stopped(self, job: Delivery) -> Ending:
        """The ending of a handler the worker stopped, by why it was stopped."""
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            task.uncancel()
        reason = job.stop_reason or "shutdown"
        if reason == "timeout":
            note = "; the handler did not stop when cancelled" if job.abandoned else ""
            return Failed(JobError(type="Timeout", retryable=True, message=(
                f"timed out after {job.timeout:g}s (attempt {job.attempt}){note}")),
                self._elapsed(job), ran=True, retry=job.retry, outcome="timed_out")
        return Stopped(reason, self._elapsed(job))

    async def _in_thread(self, job: Delivery, call: Callable[[], Any]) -> Any:
        """Run a sync handler on a daemon thread of its own: one that never returns then holds
        neither a slot nor a pool thread, nor the process at exit."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[bool, Any]] = loop.create_future()

        def deliver(outcome: tuple[bool, Any]) -> None:
            if not done.done():
                done.set_result(outcome)

        def target() -> None:
            try:
                outcome: tuple[bool, Any] = (True, call())
            except BaseException as exc:  # SystemExit too: it belongs to the job, not to this thread
                outcome = (False, exc)
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
                loop.call_soon_threadsafe(deliver, outcome)

        thread = threading.Thread(target=target, name=f"kw-handler {job.job_id}"[:64], daemon=True)
        thread.start()
        try:
            ok, value = await done
        except asyncio.CancelledError:
            if thread.is_alive():
                self.stray_threads[thread] = job.job_id
                log.warning("the sync handler runs on in its thread (Python cannot stop a thread); "
                            "long sync handlers should poll ctx.cancelled",
                            extra={"job_id": job.job_id, "handler": job.handler})
            raise
        if not ok:
            raise value
        return value

    def _abandon_if_stuck(self, job: Delivery) -> None:
        task = job.task
        if task is None or task.done() or job.abandoned:
            return
        job.abandoned = True
        self.abandoned[job.entry] = job
        log.error(
            f"the handler did not stop within {self.settings.cancel_grace:g}s of being stopped "
            f"({job.stop_reason}); the job is recorded without it and its slot freed",
            extra={"job_id": job.job_id, "handler": job.handler, "attempt": job.attempt},
        )
        self.holdings.end(job)
        self._record(job, self._stopped(job))

    def _elapsed(self, job: Delivery) -> float:
        return time.monotonic() - job.started_at

    # ------------------------------------------------------------------ endings

    def write(self, job: Delivery, body: wire.Write, fallback: Callable[[str], wire.Write] | None = None) -> None:
        """Queue a write that ends this delivery; the entry is released once it is applied."""

        def release(_result: Any) -> None:
            self.holdings.release(job.entry)

        self.outbox.add(Write(body, release, fallback))

    def hand_back(self, job: Delivery, *, uncount: bool, message: str) -> None:
        """Give the delivery back to its stream (``uncount``: its attempt does not count)."""
        self.write(job, attempts.requeue_write(job, message, uncount=uncount, owner=self.name))

    def _record(self, job: Delivery, ending: Ending) -> None:
        try:
            self._record_ending(job, ending)
        except Exception as exc:  # building the write failed: still end the job, with less
            log.exception("recording a job's ending failed", extra={"job_id": job.job_id})
            self.write(job, attempts.unwritten_write(job, self.name, f"{type(exc).__name__}", 0.0))

    def _record_ending(self, job: Delivery, ending: Ending) -> None:
        duration = ending.duration
        if isinstance(ending, Succeeded):
            if job.msg is not None and not job.msg.last_step:
                self._advance(job, ending, _log_fields(job))
                return
            self.metrics.outcome(job.handler, "succeeded")
            self.metrics.observe(job.handler, duration)
            if job_log.enabled(INFO):
                job_log(INFO, "job succeeded",
                        {**_log_fields(job), "state": "Succeeded", "duration": round(duration, 6)})
            self._finish(job, JobState.SUCCEEDED, duration, out_json=ending.output.json,
                         message=ending.output.note)
            return
        extra = _log_fields(job)
        if isinstance(ending, Failed):
            self._record_failure(job, ending, extra)
            return
        if isinstance(ending, Waits):
            self.metrics.outcome(job.handler, "waiting")
            self.metrics.observe(job.handler, duration)
            job_log(INFO, "job waiting for its children", {**extra, "state": "Waiting", "then": ending.then})
            self.write(job, attempts.wait_write(job, self.name, ending.then, ending.input_json, duration),
                       self._fallback(job, duration))
            return
        if ending.reason == "cancelled":
            self.metrics.outcome(job.handler, "cancelled")
            job_log(INFO, "job cancelled", {**extra, "state": "Cancelled"})
            self._finish(job, JobState.CANCELLED, duration, message="cancelled while running")
        elif ending.reason == "shutdown":
            self.metrics.outcome(job.handler, "handed_back")
            log.warning("job handed back: the worker is shutting down", extra={**extra, "state": "Queued"})
            self.hand_back(job, uncount=True, message=f"handed back by {self.name} (shutting down)")
        else:
            # The lease went to another worker, which now owns the job: write nothing.
            self.metrics.outcome(job.handler, "lost")
            log.warning("job lost its lease; another worker runs it", extra={**extra, "reason": "lost"})
            self.holdings.release(job.entry)

    def _advance(self, job: Delivery, ending: Succeeded, extra: dict[str, Any]) -> None:
        """A sequence's step succeeded and another follows: one write ends this step and queues the next."""
        try:
            body = attempts.advance_write(job, self.name, ending.duration, ending.output)
        except attempts.NotAnObjectError as exc:
            self._record_failure(job, Failed(JobError(type="InvalidOutput", message=cap_text(str(exc)),
                                                      retryable=False), ending.duration, ran=True), extra)
            return
        self.metrics.outcome(job.handler, "succeeded")
        self.metrics.observe(job.handler, ending.duration)
        job_log(INFO, body["message"], {**extra, "state": "Queued", "duration": round(ending.duration, 6)})
        self.write(job, body, self._fallback(job, ending.duration))

    def _record_failure(self, job: Delivery, ending: Failed, extra: dict[str, Any]) -> None:
        error, duration = attempts.with_policy(ending.error, ending.retry), ending.duration
        extra = {**extra, "error": error.type, "duration": round(duration, 6)}
        if ending.ran:
            self.metrics.observe(job.handler, duration)
        if error.retryable and ending.retry is not None and job.attempt < job.max_attempts:
            delay = attempts.backoff(ending.retry, job.attempt, self.settings.max_backoff)
            body, message = attempts.retry_write(job, self.name, error, delay, duration if ending.ran else None)
            self.metrics.outcome(job.handler, ending.outcome or "retried")
            self.metrics.retried(job.handler)
            job_log(WARNING, message, {**extra, "state": "Queued"})
            self.write(job, body, self._fallback(job, duration))
            return
        ref = job.msg.step_ref if job.msg is not None else None
        if ref is not None:  # a sequence fails with its step: say which
            error = error.model_copy(update={"message": cap_text(f"{ref.describe()} failed: {error.message}")})
        reason = attempts.failure_reason(error, job.attempt, job.max_attempts)
        self.metrics.outcome(job.handler, ending.outcome or "failed")
        self.metrics.dead_letter(job.handler)
        job_log(ERROR, f"job failed: {reason}", {**extra, "state": "Failed"})
        self._finish(job, JobState.FAILED, duration, error=error, message=reason, dead_letter_reason=reason,
                     ran=ending.ran)

    def _finish(self, job: Delivery, state: JobState, duration: float, **details: Any) -> None:
        self.write(job, attempts.finish_write(job, state, self.name, duration, **details),
                   self._fallback(job, duration))

    def _fallback(self, job: Delivery, duration: float) -> Callable[[str], wire.Write]:
        return lambda why: attempts.unwritten_write(job, self.name, why, duration)

    def _progress(self, job: Delivery, fraction: float, message: str | None) -> None:
        if job.entry not in self.holdings.running or job.abandoned:
            return
        self.outbox.progress(job.entry, Write(attempts.progress_write(job, self.name, fraction, message)))
