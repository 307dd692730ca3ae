"""Reruns: a failed job runs again, as a new *run* of the same job (``kubeworkers jobs retry``).

A rerun is not a new job: the id and uid stay, the record's ``run`` goes up by one, attempts
count from 1 again, and every event of the new run carries its number, so the operator can move
a finished Job CR back to Queued (``status.reruns``) and ignore what is left of an older run.
Everything is checked and written by one script, ``lua/rerun.lua`` (its header lists the
checks): the job must exist with the uid the caller expects (a newer job re-created under the
same name is never overwritten), be Failed, and be at the run the caller saw (of two reruns sent
at once, one wins). ``dlq replay`` is a rerun of each dead-lettered job (:mod:`kubeworkers.dlq`).

What is run again is the record's ``msg`` as it stands: the job's current message. For a job
that moved on through steps (a continuation, a sequence) that is the step that failed, never a
reconstructed first message. Succeeded and Cancelled jobs are refused (submit a new job), as are
fan-out parents and children (their counts would be told twice).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from kubeworkers import queue, redis_ops, scripts
from kubeworkers.protocol import JobMessage, JobState, PoolKeys
from kubeworkers.redis_ops import Pipeline


@dataclass(frozen=True)
class Rerun:
    """A job queued again: its id, pool, the new run number and the new stream entry."""

    job_id: str
    pool: str
    run: int
    entry: str


class RerunRefusedError(LookupError):
    """``rerun.lua`` refused: ``reason`` is its verdict (``unknown``, ``uid``, ``state``, ``run``,
    ``fan-out``, ``message``), the message says why in words."""

    def __init__(self, job_id: str, reason: str, message: str, *, state: str | None = None) -> None:
        self.job_id = job_id
        self.reason = reason
        self.state = state
        super().__init__(f"job {job_id}: {message}")


def _refusal(job_id: str, verdict: str, run: int) -> RerunRefusedError:
    if verdict.startswith("state:"):
        state = verdict.partition(":")[2]
        why = {
            JobState.SUCCEEDED.value: "it succeeded (submit a new job to run it again)",
            JobState.CANCELLED.value: "it was cancelled (submit a new job to run it again)",
        }.get(state, f"it has not finished (it is {state or 'unknown'})")
        return RerunRefusedError(job_id, "state", f"not rerun: {why}; only a Failed job is", state=state)
    messages = {
        "unknown": "not found",
        "uid": "not rerun: its record belongs to another job of that id (a newer one, re-created under the same name)",
        "run": f"not rerun: it is at run {run} already (another rerun came first)",
        "fan-out": "not rerun: it is part of a fan-out (a parent or a child); submit it anew",
        "message": "not rerun: its stored message cannot be read",
    }
    return RerunRefusedError(job_id, verdict, messages.get(verdict, verdict))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def rerun_job(
    r: redis.Redis,
    keys: PoolKeys,
    job_id: str,
    *,
    uid: str | None = None,
    run: int | None = None,
    dead_letter_id: str = "",
    dead_letter_message: str = "",
    by: str = "kubeworkers jobs retry",
) -> Rerun:
    """Run the failed job ``job_id`` of the pool ``keys`` again (see the module docstring).

    ``uid`` and ``run``: what the caller expects the record to hold; None reads them from the
    record first (the job of that id as it is now). ``dead_letter_id``/``dead_letter_message``:
    the job's dead-letter entry, removed in the same call, whose message stands for a record
    that has expired. Raises :class:`RerunRefusedError` when the job may not be rerun.
    """
    if uid is None:
        record = queue.get_record_sync(r, keys.namespace, keys.pool, job_id)
        if record is None:
            raise RerunRefusedError(job_id, "unknown", "not found")
        uid = record.uid
        run = record.run if run is None else run
    reply = redis_ops.run_sync(r, scripts.call_plan(
        "rerun",
        [keys.record(job_id), keys.cancel(job_id), keys.dead_letter, keys.events],
        [repr(time.time()), keys.prefix, keys.pool, uid, "" if run is None else str(run), dead_letter_id, by,
         dead_letter_message],
    ))
    verdict, new_run, entry = _text(reply[0]), int(reply[1]), _text(reply[2])
    if verdict != "rerun":
        raise _refusal(job_id, verdict, new_run)
    # The job -> pools hint, in the namespace's slot: restored after the script (a hint, see protocol.py).
    redis_ops.run_sync(r, redis_ops.retried(
        lambda: Pipeline(queue.hint_commands([(keys.namespace, keys.pool, job_id)])), idempotent=True))
    return Rerun(job_id, keys.pool, new_run, entry)


def rerun_dead_letter(
    r: redis.Redis, keys: PoolKeys, entry_id: str, message: JobMessage, *, by: str = "kubeworkers dlq replay"
) -> Rerun:
    """Rerun the job of one dead-letter entry: the uid and run it was dead-lettered with are expected."""
    return rerun_job(r, keys, message.job_id, uid=message.uid, run=message.run, dead_letter_id=entry_id,
                     dead_letter_message=message.wire_json(), by=by)


def rerun_jobs(
    r: redis.Redis, keys: PoolKeys, job_ids: Iterable[str], *, by: str = "kubeworkers jobs retry"
) -> list[Rerun | RerunRefusedError]:
    """:func:`rerun_job` for each id, in order: what each did (a refusal does not stop the others)."""
    results: list[Rerun | RerunRefusedError] = []
    for job_id in job_ids:
        try:
            results.append(rerun_job(r, keys, job_id, by=by))
        except RerunRefusedError as exc:
            results.append(exc)
    return results

