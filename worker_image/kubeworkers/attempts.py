"""How an attempt ends, as data: the writes ``lua/settle.lua`` applies and the events they carry.

Pure functions of a :class:`Delivery` and an outcome, so the retry arithmetic and the event
shapes can be read (and tested) without Redis or an event loop.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from kubeworkers import wire
from kubeworkers.context import JobContext
from kubeworkers.protocol import JobError, JobMessage, JobState
from kubeworkers.registry import DEFAULT_MAX_ATTEMPTS


@dataclass(eq=False)
class Delivery:
    """One delivery of a job to this worker: the stream entry it holds, and the attempt it runs."""

    #: 1-based position of its stream in ``PoolKeys.streams`` (high, normal, low).
    index: int
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


def event_json(job: Delivery, state: JobState, worker: str, *, output_json: str = "", **extra: Any) -> str:
    """A :class:`~kubeworkers.protocol.JobEvent` as JSON, built without a model round trip.

    ``output_json`` (already JSON) is spliced in as the ``output`` field, not encoded again.
    """
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
    for key, value in extra.items():
        if value is not None:
            body[key] = value
    text = json.dumps(body)
    if output_json and output_json != "null":
        text = f'{text[:-1]}, "output": {output_json}}}'
    return text


def output_of(result: Any) -> Any:
    """A handler's return value as JSON-ready data (TypeError for anything else)."""
    if result is None or isinstance(result, dict | list | str | int | float | bool):
        return result
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    raise TypeError(f"a handler must return a pydantic model, a dict or None, not {type(result).__name__}")


def backoff(
    retry_backoff: float, attempt: int, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before retrying after ``attempt`` failed: ``retry_backoff * 2^(attempt-1)``,
    capped, then scaled by a random 50-100 % so a burst of failures does not retry in lockstep."""
    base: float = min(cap, retry_backoff * 2.0 ** (attempt - 1))
    return base * (0.5 + 0.5 * rand())


def failure_reason(error: JobError, attempt: int, max_attempts: int) -> str:
    """Why a job failed for good, as the record's message and the dead-letter reason."""
    if error.retryable:
        return f"{error.type}: {error.message} (attempt {attempt} of {max_attempts})"
    return f"{error.type}: {error.message} (not retryable)"


def finish_write(
    job: Delivery,
    state: JobState,
    worker: str,
    duration: float,
    *,
    out_json: str = "",
    error: JobError | None = None,
    message: str = "",
    dead_letter_reason: str = "",
) -> wire.FinishWrite:
    """The write that ends a job: Succeeded, Failed (dead-lettered if a reason is given) or Cancelled."""
    err = error.model_dump(exclude_none=True) if error else None
    event = event_json(
        job, state, worker, output_json=out_json, error=err, message=message or None,
        progress=1.0 if state is JobState.SUCCEEDED else None,
    )
    return wire.FinishWrite(
        kind="finish", stream=job.index, entry=job.entry, job_id=job.msg.job_id, state=state.value,
        output=out_json, error=json.dumps(err) if err else "", message=message, duration=f"{duration:.6f}",
        event=event, dead_letter_reason=dead_letter_reason, attempt=job.attempt,
    )


def retry_write(job: Delivery, worker: str, error: JobError, delay: float) -> tuple[wire.RetryWrite, str]:
    """The write that parks a failed attempt for a retry in ``delay`` seconds, and its message."""
    message = (
        f"attempt {job.attempt}/{job.max_attempts} failed ({error.type}: {error.message}); "
        f"retrying in {delay:.2f}s"
    )
    err = error.model_dump(exclude_none=True)
    write = wire.RetryWrite(
        kind="retry", stream=job.index, entry=job.entry, job_id=job.msg.job_id, due=f"{time.time() + delay:.6f}",
        error=json.dumps(err), message=message,
        event=event_json(job, JobState.QUEUED, worker, error=err, message=message),
    )
    return write, message


def requeue_write(job: Delivery, message: str, *, uncount: bool) -> wire.RequeueWrite:
    """The write that hands a delivery back to its stream (``uncount``: the attempt does not count)."""
    return wire.requeue(job.index, job.entry, job.msg.job_id, message, uncount=uncount)


def progress_write(job: Delivery, worker: str, fraction: float, message: str | None) -> wire.ProgressWrite:
    """The write that records a running job's progress."""
    return wire.ProgressWrite(
        kind="progress", stream=job.index, entry=job.entry, job_id=job.msg.job_id, progress=repr(fraction),
        message=message or "", event=event_json(job, JobState.RUNNING, worker, progress=fraction, message=message),
    )
