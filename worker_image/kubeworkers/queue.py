"""Enqueue, cancel, inspect and delete jobs: the queue operations the SDK and the operator share.

Every function takes a ``redis.asyncio.Redis``; the ``*_sync`` twins take a
``redis.Redis``. Writes are Lua scripts (``lua/*.lua``) so that each one is
atomic: a job record and its stream entry are created together or not at all.

The operator calls these with ``job_id = "<namespace>/<name>"`` and
``uid = metadata.uid`` of the Job custom resource.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import redis
import redis.asyncio as aioredis

from kubeworkers import scripts
from kubeworkers.protocol import (
    CANCEL_CHANNEL,
    EVENTS_STREAM,
    JobMessage,
    JobRecord,
    PoolKeys,
    job_pool_key,
)

#: Seconds a finished job's record (and its cancel flag) is kept before Redis expires it.
DEFAULT_RESULT_TTL = 7 * 24 * 3600

#: Messages per pipeline in :func:`enqueue_many` (bounds the memory of one round trip).
ENQUEUE_CHUNK = 1000


def _enqueue_call(msg: JobMessage) -> tuple[list[str], list[scripts.Arg]]:
    keys = PoolKeys(msg.namespace, msg.pool)
    return (
        [
            keys.record(msg.job_id),
            keys.stream(msg.priority),
            job_pool_key(msg.namespace, msg.job_id),
            keys.cancel(msg.job_id),
            keys.stats,
        ],
        [
            msg.uid,
            msg.model_dump_json(),
            msg.job_id,
            msg.namespace,
            msg.pool,
            msg.handler,
            msg.priority.value,
            repr(msg.enqueued_at),
            "" if msg.max_attempts is None else str(msg.max_attempts),
            repr(time.time()),
        ],
    )


def _cancel_call(
    namespace: str, pool: str, job_id: str, result_ttl: int
) -> tuple[list[str], list[scripts.Arg]]:
    keys = PoolKeys(namespace, pool)
    return (
        [keys.record(job_id), keys.cancel(job_id), EVENTS_STREAM, job_pool_key(namespace, job_id)],
        [repr(time.time()), CANCEL_CHANNEL, result_ttl],
    )


def _delete_keys(namespace: str, pool: str, job_id: str) -> list[str]:
    keys = PoolKeys(namespace, pool)
    return [keys.record(job_id), keys.cancel(job_id), job_pool_key(namespace, job_id)]


# --------------------------------------------------------------------------- async


async def enqueue(r: aioredis.Redis, msg: JobMessage) -> bool:
    """Put ``msg`` on its pool's stream and create its record (state Queued), at most once.

    Returns False, and changes nothing, when a record for ``msg.job_id`` already
    exists with the same uid, or with another uid whose job has not finished.
    A finished job with a *different* uid is replaced (a Job deleted and
    created again under the same name).
    """
    keys, argv = _enqueue_call(msg)
    return bool(await scripts.call(r, "enqueue", keys, argv))


async def enqueue_many(r: aioredis.Redis, msgs: Iterable[JobMessage]) -> list[bool]:
    """:func:`enqueue` for many messages, pipelined (one round trip per 1,000)."""
    results: list[bool] = []
    batch: list[JobMessage] = []

    async def flush() -> None:
        calls = [_enqueue_call(m) for m in batch]

        def build(pipe: object) -> None:
            for keys, argv in calls:
                scripts.evalsha(pipe, "enqueue", keys, argv)

        results.extend(bool(x) for x in await scripts.pipelined(r, build))
        batch.clear()

    for msg in msgs:
        batch.append(msg)
        if len(batch) >= ENQUEUE_CHUNK:
            await flush()
    if batch:
        await flush()
    return results


async def cancel(
    r: aioredis.Redis, namespace: str, pool: str, job_id: str, *, result_ttl: int = DEFAULT_RESULT_TTL
) -> bool:
    """Cancel a queued or running job. Returns False when the job is unknown or already finished.

    A queued job's record becomes Cancelled at once; a running job's worker is
    told through :data:`~kubeworkers.protocol.CANCEL_CHANNEL` and records
    Cancelled when its handler has stopped.
    """
    keys, argv = _cancel_call(namespace, pool, job_id, result_ttl)
    return bool(await scripts.call(r, "cancel", keys, argv))


async def get_record(r: aioredis.Redis, namespace: str, pool: str, job_id: str) -> JobRecord | None:
    """The job's record, or None when there is none (never enqueued, expired or deleted)."""
    raw = await r.hgetall(PoolKeys(namespace, pool).record(job_id))
    return JobRecord.from_hash(raw) if raw else None


async def find_pool(r: aioredis.Redis, namespace: str, job_id: str) -> str | None:
    """The pool a job was enqueued to (from the job->pool pointer), or None."""
    raw = await r.get(job_pool_key(namespace, job_id))
    return None if raw is None else (raw.decode() if isinstance(raw, bytes) else str(raw))


async def delete_job(r: aioredis.Redis, namespace: str, pool: str, job_id: str) -> None:
    """Remove the job's record, cancel flag and pool pointer (TTL cleanup).

    A stream entry still waiting for this job is skipped by the worker that
    reads it, because its record is gone.
    """
    await r.delete(*_delete_keys(namespace, pool, job_id))


# --------------------------------------------------------------------------- sync twins


def enqueue_sync(r: redis.Redis, msg: JobMessage) -> bool:
    """Blocking twin of :func:`enqueue`."""
    keys, argv = _enqueue_call(msg)
    return bool(scripts.call_sync(r, "enqueue", keys, argv))


def enqueue_many_sync(r: redis.Redis, msgs: Iterable[JobMessage]) -> list[bool]:
    """Blocking twin of :func:`enqueue_many`."""
    results: list[bool] = []
    pending = list(msgs)
    for start in range(0, len(pending), ENQUEUE_CHUNK):
        calls = [_enqueue_call(m) for m in pending[start : start + ENQUEUE_CHUNK]]

        def build(pipe: object, calls: Sequence[tuple[list[str], list[scripts.Arg]]] = calls) -> None:
            for keys, argv in calls:
                scripts.evalsha(pipe, "enqueue", keys, argv)

        results.extend(bool(x) for x in scripts.pipelined_sync(r, build))
    return results


def cancel_sync(
    r: redis.Redis, namespace: str, pool: str, job_id: str, *, result_ttl: int = DEFAULT_RESULT_TTL
) -> bool:
    """Blocking twin of :func:`cancel`."""
    keys, argv = _cancel_call(namespace, pool, job_id, result_ttl)
    return bool(scripts.call_sync(r, "cancel", keys, argv))


def get_record_sync(r: redis.Redis, namespace: str, pool: str, job_id: str) -> JobRecord | None:
    """Blocking twin of :func:`get_record`."""
    raw = r.hgetall(PoolKeys(namespace, pool).record(job_id))
    return JobRecord.from_hash(raw) if raw else None


def find_pool_sync(r: redis.Redis, namespace: str, job_id: str) -> str | None:
    """Blocking twin of :func:`find_pool`."""
    raw = r.get(job_pool_key(namespace, job_id))
    return None if raw is None else (raw.decode() if isinstance(raw, bytes) else str(raw))


def delete_job_sync(r: redis.Redis, namespace: str, pool: str, job_id: str) -> None:
    """Blocking twin of :func:`delete_job`."""
    r.delete(*_delete_keys(namespace, pool, job_id))
