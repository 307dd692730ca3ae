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
from typing import Any

import redis
import redis.asyncio as aioredis

from kubeworkers import scripts, wire
from kubeworkers.protocol import (
    CANCEL_CHANNEL,
    EVENTS_STREAM,
    JobMessage,
    JobRecord,
    PoolKeys,
    job_pool_key,
    job_pool_prefix,
)

#: Seconds a finished job's record (and its cancel flag) is kept before Redis expires it.
DEFAULT_RESULT_TTL = 7 * 24 * 3600

#: Messages per enqueue script call in :func:`enqueue_many` (bounds the time Redis spends in one call).
ENQUEUE_CHUNK = 500


def _enqueue_call(msgs: Sequence[JobMessage]) -> tuple[list[str], list[wire.Arg]]:
    """One enqueue script call for messages of a single pool."""
    first = msgs[0]
    keys = PoolKeys(first.namespace, first.pool)
    return (
        [],
        [repr(time.time()), keys.prefix, job_pool_prefix(first.namespace), first.pool,
         *(m.model_dump_json() for m in msgs)],
    )


def _by_pool(msgs: Sequence[JobMessage]) -> list[tuple[list[int], list[JobMessage]]]:
    """Group messages per (namespace, pool), remembering their positions."""
    groups: dict[tuple[str, str], tuple[list[int], list[JobMessage]]] = {}
    for i, m in enumerate(msgs):
        positions, group = groups.setdefault((m.namespace, m.pool), ([], []))
        positions.append(i)
        group.append(m)
    return list(groups.values())


def _cancel_call(
    namespace: str, pool: str, job_id: str, result_ttl: int
) -> tuple[list[str], list[wire.Arg]]:
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
    created again under the same name). Being idempotent, the call is retried
    on connection errors (e.g. after a Redis restart).
    """
    keys, argv = _enqueue_call([msg])
    return bool((await scripts.call(r, "enqueue", keys, argv, idempotent=True))[0])


async def enqueue_many(r: aioredis.Redis, msgs: Iterable[JobMessage]) -> list[bool]:
    """:func:`enqueue` for many messages: one script call per pool and 500 jobs, all pipelined."""
    pending = list(msgs)
    calls, positions = _plan(pending)
    if not calls:
        return []

    def build(pipe: object) -> None:
        for keys, argv in calls:
            scripts.evalsha(pipe, "enqueue", keys, argv)

    return _unplan(len(pending), positions, await scripts.pipelined(r, build, idempotent=True))


def _plan(msgs: Sequence[JobMessage]) -> tuple[list[tuple[list[str], list[wire.Arg]]], list[list[int]]]:
    calls: list[tuple[list[str], list[wire.Arg]]] = []
    positions: list[list[int]] = []
    for where, group in _by_pool(msgs):
        for start in range(0, len(group), ENQUEUE_CHUNK):
            calls.append(_enqueue_call(group[start : start + ENQUEUE_CHUNK]))
            positions.append(where[start : start + ENQUEUE_CHUNK])
    return calls, positions


def _unplan(n: int, positions: list[list[int]], replies: list[Any]) -> list[bool]:
    results = [False] * n
    for where, reply in zip(positions, replies, strict=True):
        for i, flag in zip(where, reply, strict=True):
            results[i] = bool(flag)
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
    keys, argv = _enqueue_call([msg])
    return bool(scripts.call_sync(r, "enqueue", keys, argv, idempotent=True)[0])


def enqueue_many_sync(r: redis.Redis, msgs: Iterable[JobMessage]) -> list[bool]:
    """Blocking twin of :func:`enqueue_many`."""
    pending = list(msgs)
    calls, positions = _plan(pending)
    if not calls:
        return []

    def build(pipe: object) -> None:
        for keys, argv in calls:
            scripts.evalsha(pipe, "enqueue", keys, argv)

    return _unplan(len(pending), positions, scripts.pipelined_sync(r, build, idempotent=True))


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
