"""The worker's outbox: every write a worker makes about its jobs, batched into one Lua call.

Ends of attempts, retries, hand-backs and progress reports are queued here and
written by :meth:`Outbox.flush` through ``lua/settle.lua``: one ``EVALSHA``
per batch (up to :data:`BATCH` writes) however many jobs finished meanwhile.
That keeps a worker's Redis round trips per job well below one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from kubeworkers import scripts, wire
from kubeworkers.protocol import EVENTS_STREAM, WORKER_GROUP, PoolKeys, job_pool_prefix
from kubeworkers.redis_ops import TRANSIENT_ERRORS

log = logging.getLogger("kubeworkers.outbox")

#: Writes per settle call: bounds how long Redis spends in one script.
BATCH = 500


@dataclass
class Write:
    """One queued write; ``done`` is called with the script's result once it is applied."""

    body: wire.Write
    done: Callable[[Any], None] | None = None


class Outbox:
    """Queue of writes for one pool, flushed in batches by one task at a time."""

    def __init__(self, r: aioredis.Redis, keys: PoolKeys, worker: str, result_ttl: int) -> None:
        self.redis = r
        self.keys = keys
        self.worker = worker
        self.result_ttl = result_ttl
        self._writes: list[Write] = []
        # Only the latest unsent progress report of a job matters.
        self._progress: dict[str, Write] = {}
        self.wake = asyncio.Event()
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._writes) + len(self._progress)

    def add(self, write: Write) -> None:
        self._writes.append(write)
        self.wake.set()

    def progress(self, entry: str, write: Write) -> None:
        self._progress[entry] = write
        self.wake.set()

    async def run(self) -> None:
        """Flush whenever something is queued (the worker runs this as a task)."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write everything queued; on connection errors keep it and try again with backoff."""
        async with self._lock:
            delay = 0.1
            while self._writes or self._progress:
                batch = list(self._progress.values()) + self._writes
                self._progress.clear()
                self._writes = batch[BATCH:] if len(batch) > BATCH else []
                batch = batch[:BATCH]
                try:
                    results = await self._settle(batch)
                except TRANSIENT_ERRORS as exc:
                    log.warning(f"writing job results failed, retrying: {exc}")
                    # Progress reports are not worth replaying; everything else is.
                    self._writes = [w for w in batch if w.body["kind"] != "progress"] + self._writes
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5)
                    continue
                except aioredis.ResponseError:
                    # A script error is a bug, not bad luck: repeating the batch cannot help.
                    # Its entries stay pending, are no longer renewed, and the reaper hands
                    # them out again after the lease (at-least-once, never lost).
                    log.exception(f"dropping a batch of {len(batch)} writes")
                    results = [None] * len(batch)
                delay = 0.1
                for write, result in zip(batch, results, strict=True):
                    if write.done is not None:
                        write.done(result)

    async def _settle(self, batch: list[Write]) -> list[Any]:
        return await settle(self.redis, self.keys, self.worker, self.result_ttl, [w.body for w in batch])


async def settle(
    r: aioredis.Redis, keys: PoolKeys, worker: str, result_ttl: int, bodies: list[wire.Write]
) -> list[Any]:
    """Apply writes (see :mod:`kubeworkers.wire`) in one script call; one result per write."""
    argv = wire.settle_args(
        group=WORKER_GROUP, now=repr(time.time()), prefix=keys.prefix, events=EVENTS_STREAM,
        pointer_prefix=job_pool_prefix(keys.namespace), result_ttl=result_ttl, worker=worker, writes=bodies,
    )
    return list(await scripts.call(r, "settle", keys.streams, argv))
