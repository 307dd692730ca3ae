"""The worker's outbox: every write a worker makes about its jobs, batched into one Lua call.

Ends of attempts, retries, hand-backs and progress reports are queued here and written by
:meth:`Outbox.flush` through ``lua/settle.lua``: one ``EVALSHA`` per batch (up to :data:`BATCH`
writes and about :data:`BATCH_BYTES`) however many jobs finished meanwhile. That keeps a worker's
Redis round trips per job well below one.

Every write is idempotent (``settle.lua`` applies the end of an attempt only while the record is
Running that attempt), so a batch whose reply was lost is simply sent again. One write never
costs another anything: the script applies each on its own, and a batch Redis will not take
(a script error, or a connection Redis closes on while it answers pings) is split until the
write at fault is alone; that one is replaced by its small fallback (the job fails with
``ResultNotWritten``) and, if even that cannot be written, dropped, so its entry is released
and the reaper hands the job out again after the lease.

A durable worker (``durable_replicas``) follows each batch with ``WAIT`` in the same round trip;
a batch too few replicas acknowledged (:class:`NotReplicatedError`) is kept and sent again with
backoff, like one Redis did not answer, so a failover cannot lose a result the worker let go of.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from kubeworkers import redis_ops, scripts, wire
from kubeworkers.protocol import WORKER_GROUP, PoolKeys
from kubeworkers.redis_ops import TRANSIENT_ERRORS

log = logging.getLogger("kubeworkers.outbox")

#: Writes per settle call: bounds how long Redis spends in one script.
BATCH = 500
#: Rough bytes per settle call (one write larger than this still goes, alone).
BATCH_BYTES = 4 * 1024 * 1024
#: Times a batch is sent as it is while Redis answers pings, before it is split.
TRIES_WHILE_REACHABLE = 2
#: Longest a durable settle waits for its replicas (``WAIT`` timeout), milliseconds.
DURABLE_SETTLE_WAIT_MS = 1000


class NotReplicatedError(Exception):
    """A durable settle the master applied but too few replicas acknowledged in time.

    The batch is kept and sent again, like one Redis did not answer: a resent settle is a
    no-op where it was applied, and is applied where a failover lost it (the entries stay
    held, and their leases renewed, until then).
    """


#: Failures after which a batch is kept and sent again with backoff (unless Redis answers pings
#: while refusing it: then the batch itself is suspect, see ``_refused``).
RESENT_LATER: tuple[type[Exception], ...] = (NotReplicatedError, *TRANSIENT_ERRORS)


@dataclass
class Write:
    """One queued write; ``done`` is called with the script's result once it is settled;
    ``fallback(why)`` is the smaller write to send instead if this one can never be written."""

    body: wire.Write
    done: Callable[[Any], None] | None = None
    fallback: Callable[[str], wire.Write] | None = None
    failures: int = field(default=0, compare=False)

    @property
    def size(self) -> int:
        """Roughly its bytes on the wire: the output is the only field without a small cap."""
        output: str = self.body.get("output", "")  # type: ignore[assignment]
        return 2000 + len(output)


class Outbox:
    """Queue of writes for one pool, flushed in batches by one task at a time."""

    def __init__(
        self, r: aioredis.Redis, keys: PoolKeys, worker: str, result_ttl: int, *, dead_letter_maxlen: int,
        durable_replicas: int = 0,
    ) -> None:
        self.redis = r
        #: Replicas that must acknowledge a batch before it counts as written (0: none).
        self.durable_replicas = durable_replicas
        self.keys = keys
        self.worker = worker
        self.result_ttl = result_ttl
        self.dead_letter_maxlen = dead_letter_maxlen
        self._writes: list[Write] = []
        # Only the latest unsent progress report of a job matters.
        self._progress: dict[str, Write] = {}
        # Batches under suspicion: sent as they are, one at a time, never merged with others.
        self._suspect: list[list[Write]] = []
        self.wake = asyncio.Event()
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._writes) + len(self._progress) + sum(len(b) for b in self._suspect)

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
        """Write everything queued; while Redis is unreachable keep it and try again with backoff."""
        async with self._lock:
            delay = 0.1
            warned = False
            while len(self):
                batch = self._next_batch()
                try:
                    results = await self._settle(batch)
                except RESENT_LATER as exc:
                    replicas = isinstance(exc, NotReplicatedError)
                    if not replicas and await self._reachable():
                        self._refused(batch, exc)
                        continue
                    if not warned:
                        log.warning(f"job results not acknowledged by a replica yet, sending them again: {exc}"
                                    if replicas else f"writing job results failed, retrying: {exc}")
                        warned = True
                    # Progress reports are not worth replaying; everything else is (and is idempotent).
                    self._writes = [w for w in batch if w.body["kind"] != "progress"] + self._writes
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5)
                    continue
                except aioredis.ResponseError as exc:
                    # The script failed as a whole (it applies writes one by one, so rarely): find the culprit.
                    for write in batch:
                        write.failures = TRIES_WHILE_REACHABLE
                    self._refused(batch, exc)
                    continue
                delay = 0.1
                for write, result in zip(batch, results, strict=True):
                    problem = wire.write_error(result)
                    if problem is not None:
                        self._cannot_write(write, problem)
                    elif write.done is not None:
                        write.done(result)

    def _next_batch(self) -> list[Write]:
        if self._suspect:
            return self._suspect.pop(0)
        pending = list(self._progress.values()) + self._writes
        self._progress.clear()
        batch: list[Write] = []
        size = 0
        for write in pending:
            size += write.size
            if batch and (len(batch) >= BATCH or size > BATCH_BYTES):
                break
            batch.append(write)
        self._writes = pending[len(batch):]
        return batch

    async def _reachable(self) -> bool:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.redis.ping(), 5)
            return True
        return False

    def _refused(self, batch: list[Write], exc: Exception) -> None:
        """Redis answers, yet would not take this batch: send it again, then split it."""
        for write in batch:
            write.failures += 1
        if max(w.failures for w in batch) < TRIES_WHILE_REACHABLE:
            self._suspect.insert(0, batch)
        elif len(batch) > 1:
            half = len(batch) // 2
            self._suspect[:0] = [batch[:half], batch[half:]]
        else:
            self._cannot_write(batch[0], f"{type(exc).__name__}: {exc}")

    def _cannot_write(self, write: Write, problem: str) -> None:
        """A write that can never be written: its fallback instead, or nothing."""
        job_id = write.body.get("job_id")
        if write.body["kind"] == "progress" and problem.startswith("OOM "):
            # Redis at maxmemory refuses a progress report (its first write grows memory), never
            # an end of attempt or a hand-back (each frees its entry first): nothing to report.
            log.debug(f"a progress report was refused: {problem}", extra={"job_id": job_id})
            if write.done is not None:
                write.done(None)
            return
        if write.fallback is not None and write.body["kind"] != "progress":
            log.error(f"a job's result cannot be written, failing the job instead: {problem}",
                      extra={"job_id": job_id})
            self._suspect.append([Write(write.fallback(problem), write.done)])
            return
        log.error(f"dropped a write Redis will not take: {problem}", extra={"job_id": job_id})
        if write.done is not None:
            write.done(None)

    async def _settle(self, batch: list[Write]) -> list[Any]:
        return await settle(self.redis, self.keys, self.worker, self.result_ttl, [w.body for w in batch],
                            dead_letter_maxlen=self.dead_letter_maxlen, wait_replicas=self.durable_replicas)


async def settle(
    r: aioredis.Redis, keys: PoolKeys, worker: str, result_ttl: int, bodies: list[wire.Write], *,
    dead_letter_maxlen: int, wait_replicas: int = 0,
) -> list[Any]:
    """Apply writes (see :mod:`kubeworkers.wire`) in one script call; one result per write.
    A final failure's dead-letter entry trims the stream to about ``dead_letter_maxlen``.
    With ``wait_replicas``, ``WAIT`` follows in the same round trip and too few
    acknowledgements raise :class:`NotReplicatedError` (the writes are applied on the master)."""
    argv = wire.settle_args(
        group=WORKER_GROUP, now=repr(time.time()), prefix=keys.prefix, events=keys.events,
        pointer_prefix="", result_ttl=result_ttl, worker=worker,
        dead_letter_maxlen=dead_letter_maxlen, writes=bodies,
    )
    if not wait_replicas:
        return list(await scripts.call(r, "settle", keys.streams, argv))
    results, acknowledged = await redis_ops.run(r, scripts.pipeline_plan(
        [("settle", keys.streams, argv)], then=[redis_ops.Command("wait", wait_replicas, DURABLE_SETTLE_WAIT_MS)],
    ))
    if int(acknowledged) < wait_replicas:
        raise NotReplicatedError(f"{acknowledged} of {wait_replicas} replica(s) within {DURABLE_SETTLE_WAIT_MS} ms")
    return list(results)
