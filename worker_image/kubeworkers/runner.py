"""The attempt runner: runs one delivery's handler and turns how it ended into the write that settles it.

For each delivery it resolves the handler, validates the input, calls the handler (``async``
on the loop, plain ``def`` in a thread) under the job's timeout, and queues the outcome
(:mod:`kubeworkers.attempts` decides its shape) in the outbox; the entry is released once the
write is applied. It also stops running handlers when asked (cancellation, shutdown, a lost
lease) and forwards their progress reports.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from logging import ERROR, INFO, WARNING
from typing import Any

from pydantic import BaseModel, ValidationError

from kubeworkers import attempts, logs, wire
from kubeworkers.attempts import Delivery
from kubeworkers.context import JobContext
from kubeworkers.errors import job_error
from kubeworkers.holdings import Holdings
from kubeworkers.metrics import WorkerMetrics
from kubeworkers.outbox import Outbox, Write
from kubeworkers.protocol import JobError, JobState
from kubeworkers.registry import HandlerSpec, Registry
from kubeworkers.settings import WorkerSettings

log = logging.getLogger("kubeworkers.worker")
#: One line per job state change (see :class:`kubeworkers.logs.JobLog`).
job_log = logs.JobLog(log)


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
        outbox: Outbox,
    ) -> None:
        self.name = name
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self.holdings = holdings
        self.outbox = outbox
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def launch(self, job: Delivery) -> None:
        """Start running ``job`` (already held) as its own task."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self.holdings.start(job)
        job.task = asyncio.create_task(self._run(job))

    def stop_job(self, job: Delivery, reason: str) -> None:
        """Stop a running handler: 'cancelled', 'shutdown' or 'lost' (the lease went elsewhere)."""
        if job.stop_reason is not None or job.task is None or job.task.done():
            return
        job.stop_reason = reason
        if job.ctx is not None:
            job.ctx._mark_cancelled()
        job.task.cancel()

    def close(self) -> None:
        """Let go of the handler threads (a sync handler still running keeps its thread)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

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
            self.holdings.end(job)

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
            output = attempts.output_of(result)
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

    def write(self, job: Delivery, body: wire.Write) -> None:
        """Queue a write that ends this delivery; the entry is released once it is applied."""

        def release(_result: Any) -> None:
            self.holdings.release(job.entry)

        self.outbox.add(Write(body, release))

    def hand_back(self, job: Delivery, *, uncount: bool, message: str) -> None:
        """Give the delivery back to its stream (``uncount``: its attempt does not count)."""
        self.write(job, attempts.requeue_write(job, message, uncount=uncount))

    def _finish(self, job: Delivery, state: JobState, duration: float, **details: Any) -> None:
        self.write(job, attempts.finish_write(job, state, self.name, duration, **details))

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
            delay = attempts.backoff(spec.retry_backoff, job.attempt, self.settings.max_backoff)
            body, message = attempts.retry_write(job, self.name, error, delay)
            self.metrics.outcome(spec.name, "retried")
            self.metrics.retried(spec.name)
            job_log(WARNING, message, {**extra, "state": "Queued"})
            self.write(job, body)
            return
        reason = attempts.failure_reason(error, job.attempt, job.max_attempts)
        self.metrics.outcome(spec.name, "failed")
        self.metrics.dead_letter(spec.name)
        job_log(ERROR, f"job failed: {reason}", {**extra, "state": "Failed"})
        self._finish(job, JobState.FAILED, duration, error=error, message=reason, dead_letter_reason=reason)

    def _end_stopped(self, job: Delivery, reason: str, duration: float) -> None:
        extra = {"job_id": job.msg.job_id, "handler": job.msg.handler, "attempt": job.attempt}
        if reason == "cancelled":
            self.metrics.outcome(job.msg.handler, "cancelled")
            job_log(INFO, "job cancelled", {**extra, "state": "Cancelled"})
            self._finish(job, JobState.CANCELLED, duration, message="cancelled while running")
        elif reason == "shutdown":
            self.metrics.outcome(job.msg.handler, "handed_back")
            log.warning("job handed back: the worker is shutting down", extra={**extra, "state": "Queued"})
            self.hand_back(job, uncount=True, message=f"handed back by {self.name} (shutting down)")
        else:
            # The lease went to another worker, which now owns the job: write nothing.
            self.metrics.outcome(job.msg.handler, "lost")
            log.warning("job lost its lease; another worker runs it", extra={**extra, "reason": "lost"})
            self.holdings.release(job.entry)

    def _report_progress(self, job: Delivery, fraction: float, message: str | None) -> None:
        if job.entry not in self.holdings.running:
            return
        self.outbox.progress(job.entry, Write(attempts.progress_write(job, self.name, fraction, message)))
