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
from typing import Any

import redis.asyncio as aioredis

from kubeworkers import redis_ops, scripts, wire
from kubeworkers.outbox import settle
from kubeworkers.protocol import (
    DEFAULT_DEAD_LETTER_MAXLEN,
    DEFAULT_RESULT_TTL,
    WORKER_GROUP,
    JobMessage,
    PoolKeys,
    WorkerHeartbeat,
)

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


def reaper_of(worker: str) -> str:
    """The consumer a worker's reaper claims expired entries into (never the worker's own, so
    entries being handed back are not mistaken for the worker's deliveries)."""
    return f"{worker}:reaper"


def _reap_call(keys: PoolKeys, worker: str, lease_seconds: float, count: int) -> tuple[str, list[str], list[wire.Arg]]:
    lease_ms = int(lease_seconds * 1000)
    return ("reap", [keys.pulse, *keys.streams], wire.reap_args(
        group=WORKER_GROUP, reaper=reaper_of(worker), lease_ms=lease_ms, gap_ms=lease_ms // 2, count=count,
    ))


async def renew(
    r: aioredis.Redis, keys: PoolKeys, consumer: str, held: dict[str, list[str]], lease_seconds: float
) -> set[str]:
    """Renew the leases on ``held`` (stream -> entry ids) and record the pool's pulse (see
    ``lua/reap.lua``); returns the ids this consumer lost."""
    calls: list[tuple[str, Sequence[str], Sequence[wire.Arg]]] = [_reap_call(keys, consumer, lease_seconds, 0)]
    for stream, ids in held.items():
        for start in range(0, len(ids), RENEW_CHUNK):
            calls.append(("renew", [stream], [WORKER_GROUP, consumer, *ids[start : start + RENEW_CHUNK]]))
    lost: set[str] = set()
    for reply in (await redis_ops.run(r, scripts.pipeline_plan(calls)))[1:]:
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
    worker: str | None = None,
    result_ttl: int = DEFAULT_RESULT_TTL,
) -> list[str | None]:
    """Hand entries (stream index 1-based, entry id, job id) held by ``owner`` back to their streams.

    Returns per entry the new entry id, '' when it was dropped (job finished or
    gone), or None when ``owner`` did not hold it. ``worker`` names the writer in events
    (default: ``owner``).
    """
    bodies: list[wire.Write] = [
        wire.requeue(index, entry, job_id, message, uncount=uncount_attempt, owner=owner)
        for index, entry, job_id in entries
    ]
    if not bodies:
        return []
    # A requeue never dead-letters, so the cap is not used.
    results = await settle(r, keys, worker or owner, result_ttl, bodies, dead_letter_maxlen=DEFAULT_DEAD_LETTER_MAXLEN)
    return [None if x == 0 else _text(x) for x in results]


async def reap(r: aioredis.Redis, keys: PoolKeys, reaper: str, lease_seconds: float, budget: int = 1000) -> int:
    """Reclaim entries whose lease expired (their worker stopped heartbeating) and requeue them.

    ``reap.lua`` measures expiry on Redis' clock and claims nothing for a full lease after an
    outage (so live workers renew first); the claimed entries go back to the end of their
    streams, their attempt counted. Returns how many were requeued.
    """
    name, script_keys, argv = _reap_call(keys, reaper, lease_seconds, budget)
    reaped = wire.parse_reap(await scripts.call(r, name, script_keys, argv))
    if reaped.status == "wait":
        log.debug(f"reaper waits {reaped.wait_ms} ms more after Redis came back")
        return 0
    claimed = [(c.stream, c.entry, c.job_id) for c in reaped.claimed]
    results = await requeue(
        r, keys, claimed, reaper_of(reaper), worker=reaper, uncount_attempt=False,
        message="lease expired: its worker stopped heartbeating; queued again",
    )
    requeued = 0
    for (_, entry, job_id), new_id in zip(claimed, results, strict=True):
        if new_id:
            requeued += 1
            log.warning(
                "job requeued after its lease expired",
                extra={"job_id": job_id, "entry": entry, "reason": "lease expired"},
            )
    return requeued


async def own_pending(r: aioredis.Redis, keys: PoolKeys, consumer: str) -> list[tuple[int, str, str]]:
    """Entries pending for ``consumer``: (stream index, entry id, job id); unreadable ones are dropped."""
    found: list[tuple[int, str, str]] = []
    for index, stream in enumerate(keys.streams, start=1):
        pending: Any = await r.xpending_range(stream, WORKER_GROUP, "-", "+", 10_000, consumername=consumer)
        ids = {_text(p["message_id"]) for p in pending or []}
        if not ids:
            continue
        entries: Any = await r.xrange(stream, min(ids), max(ids))
        present = set()
        for entry_id, fields in entries:
            entry = _text(entry_id)
            if entry not in ids:
                continue
            present.add(entry)
            try:
                found.append((index, entry, JobMessage.from_fields(fields).job_id))
            except ValueError:
                await r.xack(stream, WORKER_GROUP, entry)
                await r.xdel(stream, entry)
        if ids - present:  # deleted while pending: nothing is left to run
            await r.xack(stream, WORKER_GROUP, *(ids - present))
    return found


async def reclaim_previous_run(r: aioredis.Redis, keys: PoolKeys, consumer: str) -> int:
    """At start-up: hand back what a previous run of this worker (same name, e.g. a restarted
    container) still held. Its handlers may have started, so their attempts count."""
    held = await own_pending(r, keys, consumer)
    results = await requeue(r, keys, held, consumer, uncount_attempt=False,
                            message=f"its worker {consumer} restarted; queued again")
    return sum(1 for x in results if x)


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
