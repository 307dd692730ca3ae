"""Lease upkeep for a pool: renewing held entries, reclaiming expired ones, promoting due retries.

A worker holds a job as a pending entry of the consumer group. Its heartbeat
resets the entry's idle time (:func:`renew`); an entry idle for longer than the
lease belongs to a worker that died, and the pool's single reaper
(:func:`reap`, under a TTL'd lock) hands it back to the stream.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence

import redis.asyncio as aioredis

from kubeworkers import redis_ops, scripts, wire
from kubeworkers.outbox import settle
from kubeworkers.protocol import DEFAULT_RESULT_TTL, WORKER_GROUP, JobMessage, PoolKeys, WorkerHeartbeat

log = logging.getLogger("kubeworkers.leases")

#: Entries per renew call (keeps each Lua call short).
RENEW_CHUNK = 500


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def ensure_groups(r: aioredis.Redis, keys: PoolKeys) -> None:
    """Create the pool's streams and consumer group if missing (idempotent)."""
    for stream in keys.streams:
        try:
            await r.xgroup_create(stream, WORKER_GROUP, id="0", mkstream=True)
        except aioredis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


async def renew(r: aioredis.Redis, consumer: str, held: dict[str, list[str]]) -> set[str]:
    """Renew the leases on ``held`` (stream -> entry ids); returns the ids this consumer lost."""
    calls: list[tuple[str, Sequence[str], Sequence[wire.Arg]]] = []
    for stream, ids in held.items():
        for start in range(0, len(ids), RENEW_CHUNK):
            calls.append(("renew", [stream], [WORKER_GROUP, consumer, *ids[start : start + RENEW_CHUNK]]))
    if not calls:
        return set()
    lost: set[str] = set()
    for reply in await redis_ops.run(r, scripts.pipeline_plan(calls)):
        lost.update(_text(x) for x in reply or [])
    return lost


async def requeue(
    r: aioredis.Redis,
    keys: PoolKeys,
    entries: Iterable[tuple[int, str, str]],
    owner: str,
    *,
    uncount_attempt: bool,
    message: str,
    result_ttl: int = DEFAULT_RESULT_TTL,
) -> list[str | None]:
    """Hand entries (stream index 1-based, entry id, job id) held by ``owner`` back to their streams.

    Returns per entry the new entry id, '' when it was dropped (job finished or
    gone), or None when ``owner`` did not hold it.
    """
    bodies: list[wire.Write] = [
        wire.requeue(index, entry, job_id, message, uncount=uncount_attempt) for index, entry, job_id in entries
    ]
    if not bodies:
        return []
    results = await settle(r, keys, owner, result_ttl, bodies)
    return [None if x == 0 else _text(x) for x in results]


async def reap(r: aioredis.Redis, keys: PoolKeys, reaper: str, lease_seconds: float, budget: int = 1000) -> int:
    """Reclaim entries whose lease expired (their worker stopped heartbeating) and requeue them.

    Claims with XAUTOCLAIM into ``reaper``'s own pending list, then hands each
    entry back to the end of its stream; returns how many were requeued.
    """
    min_idle = int(lease_seconds * 1000)
    requeued = 0
    for stream in keys.streams:
        cursor: str = "0-0"
        while budget > 0:
            reply = await r.xautoclaim(
                stream, WORKER_GROUP, reaper, min_idle_time=min_idle, start_id=cursor, count=min(100, budget)
            )
            cursor = _text(reply[0])
            claimed = reply[1]
            deleted = reply[2] if len(reply) > 2 else []
            if deleted:
                # Entries deleted while pending (e.g. trimmed): nothing left to run.
                await r.xack(stream, WORKER_GROUP, *deleted)
            triples: list[tuple[int, str, str]] = []
            for entry_id, fields in claimed:
                entry = _text(entry_id)
                try:
                    job_id = JobMessage.from_fields(fields).job_id
                except ValueError:
                    await r.xack(stream, WORKER_GROUP, entry)
                    await r.xdel(stream, entry)
                    continue
                triples.append((keys.streams.index(stream) + 1, entry, job_id))
            results = await requeue(
                r, keys, triples, reaper, uncount_attempt=False,
                message="lease expired: its worker stopped heartbeating; queued again",
            )
            for (_, entry, job_id), new_id in zip(triples, results, strict=True):
                if new_id:
                    requeued += 1
                    log.warning(
                        "job requeued after its lease expired",
                        extra={"job_id": job_id, "entry": entry, "reason": "lease expired"},
                    )
            budget -= len(claimed)
            if cursor == "0-0":
                break
    return requeued


async def forget_dead_workers(r: aioredis.Redis, keys: PoolKeys, lease_seconds: float, me: str) -> list[str]:
    """Drop registry entries and idle consumers of workers that stopped heartbeating long ago."""
    now = time.time()
    gone: list[str] = []
    for name, raw in (await r.hgetall(keys.workers)).items():
        try:
            beat = WorkerHeartbeat.model_validate_json(raw)
        except ValueError:
            gone.append(_text(name))
            continue
        if beat.worker != me and now - beat.at > 3 * lease_seconds:
            gone.append(_text(name))
    if gone:
        await r.hdel(keys.workers, *gone)
    for stream in keys.streams:
        try:
            consumers = await r.xinfo_consumers(stream, WORKER_GROUP)
        except aioredis.ResponseError:
            continue
        for c in consumers:
            name = _text(c["name"])
            if name != me and int(c["pending"]) == 0 and int(c["idle"]) > 10_000 * lease_seconds:
                await r.xgroup_delconsumer(stream, WORKER_GROUP, name)
    return gone


async def promote(r: aioredis.Redis, keys: PoolKeys, limit: int = 500) -> int:
    """Move retries whose backoff has passed back onto their streams; returns how many."""
    moved = await scripts.call(
        r, "promote", [keys.delayed, *keys.streams], [repr(time.time()), limit, keys.record("")]
    )
    return int(moved)
