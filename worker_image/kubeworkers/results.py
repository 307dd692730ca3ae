"""Typed results of the SDK: a finished record as its output model or a typed error, and fan-in.

``Client.result`` / ``AsyncClient.result`` turn a finished :class:`~kubeworkers.protocol.JobRecord`
into the handler's output (validated into a pydantic model when one is given) or raise
:class:`JobFailedError` / :class:`JobCancelledError`; :class:`Completions` is the polling state
behind ``wait_many`` and ``as_completed``: every poll round reads all pending records in one
pipeline, not one round trip per job.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from kubeworkers import redis_ops
from kubeworkers.protocol import JobRecord, JobState, PoolKeys, job_pool_key
from kubeworkers.redis_ops import Command, Pause, Pipeline, Plan

M = TypeVar("M", bound=BaseModel)


class JobFailedError(Exception):
    """The job did not succeed: it ended ``Failed`` (or ``Cancelled``: :class:`JobCancelledError`).

    ``error_type`` and ``message`` are the record's :class:`~kubeworkers.protocol.JobError`'s (the
    handler's exception class name, or a reason such as ``Timeout``), ``retryable`` whether that
    error allowed a retry, ``attempts`` the attempts it was given, ``dead_letter`` the id of its
    dead-letter entry (None: it has none), ``record`` the whole record.
    """

    def __init__(self, record: JobRecord) -> None:
        self.record = record
        self.job_id = record.job_id
        error = record.error
        self.error_type = error.type if error is not None else record.state.value
        self.message = error.message if error is not None else (record.message or "")
        self.retryable = error.retryable if error is not None else False
        self.traceback = error.traceback if error is not None else None
        self.attempts = record.attempts
        self.dead_letter = record.dead_letter
        super().__init__(
            f"job {self.job_id} {record.state.value.lower()} after {self.attempts} attempt(s): "
            f"{self.error_type}: {self.message}"
        )


class JobCancelledError(JobFailedError):
    """The job was cancelled (``Client.cancel``, ``kubeworkers jobs cancel``) before it succeeded."""


class OutputValidationError(ValueError):
    """A succeeded job's output does not match the model ``result`` was asked for."""

    def __init__(self, job_id: str, model: type[BaseModel], error: ValidationError) -> None:
        self.job_id = job_id
        self.model = model
        super().__init__(f"the output of job {job_id} does not match {model.__name__}: {error}")


def outcome(record: JobRecord, model: type[M] | None) -> M | Any:
    """A finished record's output (validated into ``model`` when given), or the typed error it ended with."""
    if record.state is JobState.CANCELLED:
        raise JobCancelledError(record)
    if record.state is not JobState.SUCCEEDED:
        raise JobFailedError(record)
    if model is None:
        return record.output
    try:
        return model.model_validate(record.output)
    except ValidationError as exc:
        raise OutputValidationError(record.job_id, model, exc) from exc


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Completions:
    """The jobs ``wait_many`` / ``as_completed`` still wait for, polled together.

    :meth:`next_round` polls (with ``delays`` between rounds) until at least one pending job has
    finished and returns those records, in the order they finished; :class:`TimeoutError` naming
    every pending id once ``timeout`` seconds have passed since this object was made.
    """

    def __init__(
        self, namespace: str, ids: Iterable[str], *, timeout: float | None, pool: str | None,
        delays: Iterator[float], not_found: Callable[[str], Exception],
        ambiguous: Callable[[str, list[str]], Exception],
    ) -> None:
        self.namespace = namespace
        self.pending: list[str] = list(dict.fromkeys(ids))
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self._pool = pool
        self._pools: dict[str, str] = {}
        self._delays = delays
        self._not_found = not_found
        self._ambiguous = ambiguous

    def _resolve(self) -> Plan[None]:
        """Find each pending id's one pool (two pipelines for all of them), as ``get`` does one by one."""
        ids = [j for j in self.pending if j not in self._pools]
        if not ids:
            return
        if self._pool:
            self._pools.update((j, self._pool) for j in ids)
            return
        members = yield from redis_ops.retried(lambda: Pipeline(
            [Command("smembers", job_pool_key(self.namespace, j)) for j in ids]), idempotent=True)
        pairs = [(j, p) for j, ps in zip(ids, members, strict=True) for p in sorted(_text(m) for m in ps)]
        exists = (yield from redis_ops.retried(lambda: Pipeline(
            [Command("exists", PoolKeys(self.namespace, p).record(j)) for j, p in pairs]), idempotent=True)
        ) if pairs else []
        found: dict[str, list[str]] = {j: [] for j in ids}
        for (j, p), there in zip(pairs, exists, strict=True):
            if there:
                found[j].append(p)
        for j in ids:
            if not found[j]:
                raise self._not_found(j)
            if len(found[j]) > 1:
                raise self._ambiguous(j, found[j])
            self._pools[j] = found[j][0]

    def _read(self, job_ids: list[str]) -> Plan[list[Any]]:
        """``HGETALL`` of every record of ``job_ids``, in one pipeline (a read: repeated after connection errors)."""
        reads = Pipeline([Command("hgetall", PoolKeys(self.namespace, self._pools[j]).record(j)) for j in job_ids])
        replies = yield from redis_ops.retried(lambda: reads, idempotent=True)
        return list(replies)

    def next_round(self) -> Plan[list[JobRecord]]:
        """The records of the pending jobs that have finished since the last round (at least one)."""
        yield from self._resolve()
        while True:
            pending = list(self.pending)
            raw = yield from self._read(pending)
            finished: list[JobRecord] = []
            for job_id, fields in zip(pending, raw, strict=True):
                if not fields:
                    raise self._not_found(job_id)
                record = JobRecord.from_hash(fields)
                if record.state.finished:
                    finished.append(record)
            if finished:
                done = {r.job_id for r in finished}
                self.pending = [j for j in self.pending if j not in done]
                return sorted(finished, key=lambda r: r.finished_at or 0.0)
            if self.deadline is not None and time.monotonic() >= self.deadline:
                raise TimeoutError(f"{len(pending)} job(s) still unfinished after {self.timeout}s: "
                                   f"{', '.join(pending)}")
            yield Pause(next(self._delays))

    def all(self) -> Plan[dict[str, JobRecord]]:
        """Every job's finished record, by id (``wait_many``)."""
        records: dict[str, JobRecord] = {}
        while self.pending:
            for record in (yield from self.next_round()):
                records[record.job_id] = record
        return records

