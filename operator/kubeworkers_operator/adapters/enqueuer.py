"""Batch the enqueues of many Job watch events into pipelined round trips to Redis.

When a thousand Jobs are applied at once, kopf delivers a thousand watch
events nearly together; each waits here a few milliseconds so that they share
:func:`kubeworkers.queue.enqueue_many` calls instead of paying one round trip
each. Every caller still gets its own answer (enqueued or already known).
"""

from __future__ import annotations

import asyncio
import contextlib

import redis.asyncio as aioredis
from kubeworkers import queue
from kubeworkers.protocol import JobMessage


class Enqueuer:
    """``await submit(msg)`` -> True when newly enqueued, False when Redis already knew the uid."""

    def __init__(self, redis: aioredis.Redis, *, linger: float = 0.01, max_batch: int = 500) -> None:
        self._redis = redis
        self._linger = linger
        self._max_batch = max_batch
        self._pending: list[tuple[JobMessage, asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None
        # Strong references: the event loop only keeps weak ones to running tasks.
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, msg: JobMessage) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((msg, future))
        if len(self._pending) >= self._max_batch:
            self._start_flush(immediately=True)
        elif self._flusher is None or self._flusher.done():
            self._start_flush(immediately=False)
        return await future

    def _start_flush(self, *, immediately: bool) -> None:
        batch, self._pending = self._pending, []
        if immediately:
            task = asyncio.create_task(self._flush(batch, 0.0))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            # The batch keeps growing until the linger ends: hand the list over at flush time.
            self._pending = batch
            self._flusher = asyncio.create_task(self._flush(None, self._linger))

    async def _flush(self, batch: list[tuple[JobMessage, asyncio.Future[bool]]] | None, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        if batch is None:
            batch, self._pending = self._pending, []
            # This lingering flush has its batch: a submit arriving while it awaits Redis
            # must start the next one, or it would wait for yet another submit to come.
            self._flusher = None
        if not batch:
            return
        try:
            results = await queue.enqueue_many(self._redis, [msg for msg, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
