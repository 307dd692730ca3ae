"""Whether a Job can be enqueued, and the stream message it becomes: pure decisions, no I/O.

:func:`check_admission` returns why a Job cannot be enqueued yet (a reason and a
message, the words its ``Enqueued`` condition and Event use) or None; the Job path
(:mod:`kubeworkers_operator.flows.jobs`) applies the answer.
"""

from __future__ import annotations

from kubeworkers.protocol import JobMessage, sequence
from kubeworkers.resources import JobSpec

from kubeworkers_operator.model.index import TrackedJob, TrackedPool

#: Admission problems a Job cannot outwait: its spec is immutable, so it fails at once.
#: (A missing pool, by contrast, may still be created: those Jobs wait in Pending.)
FINAL_REASONS = frozenset({"UnknownHandler", "InvalidSpec"})


def check_admission(job: TrackedJob, spec: JobSpec, pool: TrackedPool | None) -> tuple[str, str] | None:
    """Why the Job cannot be enqueued yet (reason, message), or None when it can."""
    if pool is None:
        return (
            "PoolNotFound",
            f"WorkerPool {spec.pool!r} does not exist in namespace {job.namespace}; "
            "the job will be enqueued when it appears",
        )
    if pool.spec is None:
        return "PoolInvalid", f"WorkerPool {spec.pool!r} has an invalid spec; fix the pool to run this job"
    missing = [h for h in spec.handlers if pool.spec.handlers is not None and h not in pool.spec.handlers]
    if missing:
        known = ", ".join(pool.spec.handlers or ()) or "none"
        return (
            "UnknownHandler",
            f"WorkerPool {spec.pool!r} does not serve handler {missing[0]!r} (it declares: {known})",
        )
    return None


def message_for(job: TrackedJob, spec: JobSpec) -> JobMessage:
    """The stream message of a Job custom resource (its id is ``<namespace>/<name>``, its uid the object's).

    ``spec.expiresAfterSeconds`` counts from this message's enqueue time, or from ``spec.notBefore``
    for a delayed Job (it cannot start before then). A Job of ``spec.steps`` becomes its first step's message.
    """
    msg = JobMessage(
        job_id=job.job_id,
        uid=job.uid,
        namespace=job.namespace,
        pool=spec.pool,
        handler=spec.first_handler,
        input=spec.input,
        priority=spec.priority,
        timeout_seconds=spec.timeout_seconds,
        max_attempts=spec.max_attempts,
        soft_timeout_seconds=spec.soft_timeout_seconds,
        retry=spec.retry.policy() if spec.retry is not None else None,
        not_before=spec.not_before.timestamp() if spec.not_before is not None else None,
    )
    if spec.expires_after_seconds is not None:
        msg.expires_at = max(msg.enqueued_at, msg.not_before or 0.0) + spec.expires_after_seconds
    if spec.steps:
        # A sequence (docs/workflows.md): the first step's message, every step's limits over the job's.
        msg = sequence(msg, [step.step() for step in spec.steps])
    return msg
