"""How an attempt ends, as data: the writes ``lua/settle.lua`` applies and the events they carry.

Pure functions of a :class:`Delivery` and an outcome, so the retry arithmetic, the size caps
and the event shapes can be read (and tested) without Redis or an event loop.
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
from kubeworkers.errors import cap_text
from kubeworkers.protocol import DEFAULT_RETRY, JobError, JobMessage, JobState, RetryPolicy, is_sdk_job
from kubeworkers.registry import DEFAULT_MAX_ATTEMPTS

#: Characters of an over-limit output's JSON kept in its marker, so one can see what it was.
PREVIEW_CHARS = 1000


@dataclass(eq=False)
class Delivery:
    """One delivery of a job to this worker: the stream entry it holds, and the attempt it runs."""

    #: 1-based position of its stream in ``PoolKeys.streams`` (critical, high, normal, low).
    index: int
    entry: str
    stream: str
    job_id: str
    uid: str
    namespace: str
    pool: str
    handler: str
    record: str
    #: The parsed message; None when it could not be read (``message_error`` says why).
    msg: JobMessage | None = None
    message_error: str | None = None
    attempt: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    task: asyncio.Task[None] | None = None
    ctx: JobContext | None = None
    #: Why the worker stopped the handler: 'timeout', 'cancelled', 'shutdown' or 'lost'.
    stop_reason: str | None = None
    #: The handler did not stop when told to: its ending is recorded, its slot freed, and
    #: whatever it does later is ignored.
    abandoned: bool = False
    #: Monotonic time the attempt started; its time limits and retry policy, once known.
    started_at: float = 0.0
    timeout: float | None = None
    soft_timeout: float | None = None
    retry: RetryPolicy | None = None


def event_json(job: Delivery, state: JobState, worker: str, **extra: Any) -> str:
    """A :class:`~kubeworkers.protocol.JobEvent` as JSON, built without a model round trip;
    ``""`` for an SDK job (:func:`~kubeworkers.protocol.is_sdk_job`): only the operator reads
    the events stream, to copy a Job object's life into its status, so ``settle.lua`` writes
    none for a job no object stands behind.

    A finished job's output is not in it: ``settle.lua`` splices it in from the write.
    """
    if is_sdk_job(job.job_id, job.uid):
        return ""
    body: dict[str, Any] = {
        "job_id": job.job_id,
        "uid": job.uid,
        "namespace": job.namespace,
        "pool": job.pool,
        "state": state.value,
        "attempt": job.attempt,
        "run": job.msg.run if job.msg is not None else None,  # None: not known (an unreadable message)
        "worker": worker,
        "at": time.time(),
    }
    if job.msg is not None and job.msg.steps:
        ref = job.msg.step_ref
        assert ref is not None
        body["step"] = ref.model_dump()
    for key, value in extra.items():
        if value is not None:
            body[key] = value
    return json.dumps(body)


class InvalidOutputError(ValueError):
    """A handler returned something that cannot be stored as JSON."""


def output_of(result: Any) -> Any:
    """A handler's return value as JSON-ready data (TypeError for anything else)."""
    if result is None or isinstance(result, dict | list | str | int | float | bool):
        return result
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    raise TypeError(f"a handler must return a pydantic model, a dict or None, not {type(result).__name__}")


@dataclass(frozen=True)
class Output:
    """A handler's output as stored: JSON text, and a note when it had to be replaced by a marker."""

    json: str
    note: str = ""


#: A handler's output as JSON text: ``json.dumps(output, allow_nan=False)``, without building an
#: encoder per call as ``json.dumps`` does for any argument other than its defaults.
_OUTPUT_JSON = json.JSONEncoder(allow_nan=False)
_NO_OUTPUT = Output("null")


def encode_output(result: Any, limit: int) -> Output:
    """The output as JSON text, at most ``limit`` bytes.

    Anything that is not JSON (an object, NaN or Infinity, a cycle, nesting too deep to encode)
    raises :class:`InvalidOutputError`. An output over the limit is replaced by a marker object
    ``{"truncated": true, "size_bytes": ..., "limit_bytes": ..., "preview": "<its first characters>"}``.
    """
    if result is None:  # the most common output: no JSON encoder for it
        return _NO_OUTPUT
    try:
        text = _OUTPUT_JSON.encode(output_of(result))
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidOutputError(f"the output is not JSON: {cap_text(_describe(exc), 500)}") from None
    size = len(text.encode())
    if size <= limit:
        return Output(text)
    marker = {"truncated": True, "size_bytes": size, "limit_bytes": limit, "preview": text[:PREVIEW_CHARS]}
    return Output(json.dumps(marker), note=f"output of {size} bytes is over the {limit}-byte limit; stored a marker")


def _describe(exc: BaseException) -> str:
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:
        return type(exc).__name__


def backoff(
    policy: RetryPolicy, attempt: int, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before retrying after ``attempt`` failed:
    ``initial_interval * backoff_coefficient^(attempt-1)``, capped by the policy's maximum interval
    and by ``cap``, then scaled by a random 50-100 % so a burst of failures does not retry in lockstep."""
    policy = policy.over(DEFAULT_RETRY)
    initial = policy.initial_interval_seconds or 0.0
    coefficient = policy.backoff_coefficient or 1.0
    most = min(cap, policy.maximum_interval_seconds or cap)
    base: float = min(most, initial * coefficient ** min(attempt - 1, 64))
    return base * (0.5 + 0.5 * rand())


def with_policy(error: JobError, policy: RetryPolicy | None) -> JobError:
    """The error as the retry policy sees it: a type it names as non-retryable is not retryable."""
    if policy is not None and error.retryable and error.type in (policy.non_retryable_error_types or ()):
        return error.model_copy(update={"retryable": False, "message": cap_text(
            f"{error.message} [{error.type} is non-retryable by the job's retry policy]")})
    return error


def expired_error(expires_at: float, now: float) -> JobError:
    """Why an attempt taken after its job's expiry does not run."""
    return JobError(type="Expired", retryable=False, message=(
        f"the job expired {now - expires_at:.3f}s before a worker could start it "
        f"(expires at {expires_at:.3f}, unix seconds)"))


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
    ran: bool = True,
) -> wire.FinishWrite:
    """The write that ends a job: Succeeded, Failed (dead-lettered if a reason is given) or Cancelled."""
    err = error.model_dump(exclude_none=True) if error else None
    event = event_json(
        job, state, worker, error=err, message=message or None,
        progress=1.0 if state is JobState.SUCCEEDED else None,
    )
    return wire.FinishWrite(
        kind="finish", stream=job.index, entry=job.entry, job_id=job.job_id, state=state.value,
        output=out_json, error=json.dumps(err) if err else "", message=message, duration=f"{duration:.6f}",
        ran=ran, event=event, dead_letter_reason=dead_letter_reason, attempt=job.attempt,
    )


def unwritten_write(job: Delivery, worker: str, why: str, duration: float) -> wire.FinishWrite:
    """The small write that fails a job whose own ending could not be written (e.g. Redis refused its size)."""
    error = JobError(
        type="ResultNotWritten", retryable=False,
        message=cap_text(f"the result of attempt {job.attempt} could not be written to Redis: {why}"),
    )
    reason = failure_reason(error, job.attempt, job.max_attempts)
    return finish_write(job, JobState.FAILED, worker, duration, error=error, message=reason,
                        dead_letter_reason=reason)


def retry_write(
    job: Delivery, worker: str, error: JobError, delay: float, duration: float | None = None
) -> tuple[wire.RetryWrite, str]:
    """The write that parks a failed attempt for a retry in ``delay`` seconds, and its message
    (``duration``: the attempt's, None when no handler ran)."""
    message = (
        f"attempt {job.attempt}/{job.max_attempts} failed ({error.type}: {error.message}); "
        f"retrying in {delay:.2f}s"
    )
    err = error.model_dump(exclude_none=True)
    write = wire.RetryWrite(
        kind="retry", stream=job.index, entry=job.entry, job_id=job.job_id, due=f"{time.time() + delay:.6f}",
        error=json.dumps(err), message=message, attempt=job.attempt,
        duration="" if duration is None else f"{duration:.6f}",
        event=event_json(job, JobState.QUEUED, worker, error=err, message=message),
    )
    return write, message


def requeue_write(job: Delivery, message: str, *, uncount: bool, owner: str) -> wire.RequeueWrite:
    """The write that hands a delivery back to its stream (``uncount``: the attempt does not count)."""
    return wire.requeue(job.index, job.entry, job.job_id, message, uncount=uncount, owner=owner)


def wait_write(job: Delivery, worker: str, then: str, input_json: str, duration: float = 0.0) -> wire.WaitWrite:
    """The write that ends an attempt with the job Waiting for its children (fan-out)."""
    message = f"waiting for its children; then {then}"
    return wire.WaitWrite(
        kind="wait", stream=job.index, entry=job.entry, job_id=job.job_id, then=then, input=input_json,
        message=message, attempt=job.attempt, duration=f"{duration:.6f}",
        event=event_json(job, JobState.WAITING, worker, message=message),
    )


class NotAnObjectError(ValueError):
    """A step before the last returned something the next step cannot take as its input."""


def advance_write(job: Delivery, worker: str, duration: float, output: Output) -> wire.AdvanceWrite:
    """The write that ends a sequence's step (not its last) that succeeded: the next step's message,
    on the same stream, with this step's output as its input (docs/workflows.md, *Sequences*).

    :class:`NotAnObjectError` when the output is not a JSON object (a next step's input must be one).
    """
    msg = job.msg
    assert msg is not None and msg.steps and not msg.last_step
    value = json.loads(output.json)
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise NotAnObjectError(
            f"step {msg.step + 1} ({msg.steps[msg.step].name}) returned {type(value).__name__}, "
            "but the next step's input must be an object (a pydantic model, a dict or None)")
    after = msg.at_step(msg.step + 1, value)
    ref = after.step_ref
    assert ref is not None
    message = f"{ref.describe()}: {msg.steps[msg.step].name} succeeded; queued {ref.name}"
    if output.note:
        message = f"{message} ({output.note})"
    event = event_json(job, JobState.QUEUED, worker, message=message)
    if event:
        body = json.loads(event)
        body.update(attempt=0, step=ref.model_dump())
        event = json.dumps(body)
    return wire.AdvanceWrite(
        kind="advance", stream=job.index, entry=job.entry, job_id=job.job_id, output=output.json,
        next=after.wire_json(), handler=after.handler, step=ref.model_dump_json(),
        index=msg.step, max_attempts=str(after.max_attempts or ""), message=message, duration=f"{duration:.6f}",
        event=event, attempt=job.attempt,
    )


def progress_write(job: Delivery, worker: str, fraction: float, message: str | None) -> wire.ProgressWrite:
    """The write that records a running job's progress."""
    return wire.ProgressWrite(
        kind="progress", stream=job.index, entry=job.entry, job_id=job.job_id, progress=repr(fraction),
        message=message or "", event=event_json(job, JobState.RUNNING, worker, progress=fraction, message=message),
    )
