"""Batch the enqueues of many Job watch events into pipelined round trips to Redis.

When a thousand Jobs are applied at once, kopf delivers a thousand watch
events nearly together; each waits here a few milliseconds so that they share
:func:`kubeworkers.queue.enqueue_many` calls instead of paying one round trip
each. Every caller still gets its own answer (enqueued or already known).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from kubeworkers import queue
from kubeworkers.protocol import JobMessage


@dataclass
class _Batching:
    """The submits waiting for one Redis, and the flush that lingers for more."""

    redis: aioredis.Redis
    pending: list[tuple[JobMessage, asyncio.Future[bool]]] = field(default_factory=list)
    flusher: asyncio.Task[None] | None = None


class Enqueuer:
    """``await submit(msg)`` -> True when newly enqueued, False when Redis already knew the uid.

    Batches are per Redis: ``submit(msg, redis=...)`` enqueues on that pool's Redis (default: the
    one given here, the operator's own), so pools on different Redis servers never share a round
    trip, and one Redis being down fails only the submits meant for it.
    """

    def __init__(self, redis: aioredis.Redis, *, linger: float = 0.01, max_batch: int = 500) -> None:
        self._redis = redis
        self._linger = linger
        self._max_batch = max_batch
        self._batches: dict[int, _Batching] = {}
        # Strong references: the event loop only keeps weak ones to running tasks.
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, msg: JobMessage, redis: aioredis.Redis | None = None) -> bool:
        client = self._redis if redis is None else redis
        batching = self._batches.get(id(client))
        if batching is None or batching.redis is not client:
            batching = self._batches[id(client)] = _Batching(client)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        batching.pending.append((msg, future))
        if len(batching.pending) >= self._max_batch:
            self._start_flush(batching, immediately=True)
        elif batching.flusher is None or batching.flusher.done():
            self._start_flush(batching, immediately=False)
        return await future

    def _start_flush(self, batching: _Batching, *, immediately: bool) -> None:
        if immediately:
            batch, batching.pending = batching.pending, []
            task = asyncio.create_task(self._flush(batching, batch, 0.0))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            # The batch keeps growing until the linger ends: hand the list over at flush time.
            batching.flusher = asyncio.create_task(self._flush(batching, None, self._linger))

    async def _flush(
        self, batching: _Batching, batch: list[tuple[JobMessage, asyncio.Future[bool]]] | None, delay: float,
    ) -> None:
        if delay:
            await asyncio.sleep(delay)
        if batch is None:
            batch, batching.pending = batching.pending, []
            # This lingering flush has its batch: a submit arriving while it awaits Redis
            # must start the next one, or it would wait for yet another submit to come.
            batching.flusher = None
        if not batch:
            return
        try:
            results = await queue.enqueue_many(batching.redis, [msg for msg, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def close(self) -> None:
        for batching in list(self._batches.values()):
            if batching.flusher is not None:
                batching.flusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await batching.flusher
