"""The consumer: reads a pool's streams through the consumer group and starts what ``take.lua`` says runs.

It reads up to the free slots at a time (priority order, then a blocking read when idle); one
``take.lua`` call delivers a batch and decides each entry (run, or why not) in the same round
trip, and the runnable ones are handed to the :class:`~kubeworkers.runner.AttemptRunner`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from logging import INFO
from typing import Any, Literal

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import ResponseError

from kubeworkers import leases, logs, scripts, wire
from kubeworkers.attempts import Delivery
from kubeworkers.holdings import Holdings
from kubeworkers.metrics import WorkerMetrics
from kubeworkers.protocol import EVENTS_STREAM, WORKER_GROUP, JobMessage, PoolKeys, job_pool_prefix
from kubeworkers.redis_ops import TRANSIENT_ERRORS
from kubeworkers.registry import DEFAULT_MAX_ATTEMPTS, Registry
from kubeworkers.runner import AttemptRunner
from kubeworkers.settings import WorkerSettings

log = logging.getLogger("kubeworkers.worker")
job_log = logs.JobLog(log)

#: Most entries one take (read + start) delivers: small enough that Python runs one batch
#: while Redis executes the next, large enough to amortise the round trip.
TAKE_BATCH = 64


class Consumer:
    """The read loop of one worker (:meth:`run`, one task)."""

    def __init__(
        self,
        *,
        redis: aioredis.Redis,
        keys: PoolKeys,
        name: str,
        settings: WorkerSettings,
        registry: Registry,
        metrics: WorkerMetrics,
        holdings: Holdings,
        runner: AttemptRunner,
        stopping: asyncio.Event,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.streams = keys.streams
        self.name = name
        self.settings = settings
        self.metrics = metrics
        self.holdings = holdings
        self.runner = runner
        self.stopping = stopping
        self.handler_max = json.dumps({spec.name: spec.max_attempts for spec in registry})
        #: True while a blocking XREADGROUP waits: the only time the loop may be cancelled
        #: (a batch being started must finish starting, or its jobs would be Running without running).
        self.in_blocking_read = False

    async def run(self) -> None:
        delay = 0.1
        while not self.stopping.is_set():
            free = self.holdings.free
            if free <= 0:
                self.holdings.slot_free.clear()
                await self.holdings.slot_free.wait()
                # Let every job that is finishing in this loop iteration finish, so the
                # next read fills many slots in one round trip instead of one per job.
                await asyncio.sleep(0)
                continue
            try:
                # Smaller takes than the free slots let Python run the jobs of one take while
                # Redis executes the next: the two overlap instead of taking turns.
                self._start(await self._take(min(free, TAKE_BATCH)))
                delay = 0.1
            except asyncio.CancelledError:
                if self.stopping.is_set():
                    return
                raise
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    # Redis lost the group (restarted without persistence): recreate it.
                    await leases.ensure_groups(self.redis, self.keys)
                    continue
                log.exception("read failed")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)
            except TRANSIENT_ERRORS as exc:
                log.warning(f"read failed, retrying: {exc}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)

    def _take_args(self, mode: Literal["read", "given"], count: int, given: list[wire.Given]) -> list[wire.Arg]:
        return wire.take_args(
            mode=mode, group=WORKER_GROUP, consumer=self.name, count=count, now=repr(time.time()),
            prefix=self.keys.prefix, events=EVENTS_STREAM, pointer_prefix=job_pool_prefix(self.keys.namespace),
            result_ttl=self.settings.result_ttl, default_max_attempts=DEFAULT_MAX_ATTEMPTS,
            handler_max_attempts=self.handler_max, given=given,
        )

    async def _take(self, count: int) -> list[wire.Taken]:
        """Deliver and decide up to ``count`` entries (see ``lua/take.lua``)."""
        flat: list[Any] = await scripts.call(self.redis, "take", self.streams, self._take_args("read", count, []))
        if flat:
            return wire.parse_take(flat)
        # Nothing waiting: block until something arrives, then decide on what came.
        self.in_blocking_read = True
        try:
            reply: Any = await self.redis.xreadgroup(
                WORKER_GROUP,
                self.name,
                dict.fromkeys(self.streams, ">"),
                count=count,
                block=self.settings.block_ms,
            )
        finally:
            self.in_blocking_read = False
        given: list[wire.Given] = []
        for stream, entries in reply or []:
            index = self.streams.index(stream.decode()) + 1
            for entry_id, fields in entries:
                given.append(wire.Given(
                    index, entry_id, fields.get(b"m", b""),
                    fields.get(b"j", b""), fields.get(b"u", b""), fields.get(b"h", b""),
                ))
        if not given:
            return []
        result: list[Any] = await scripts.call(
            self.redis, "take", self.streams, self._take_args("given", count, given)
        )
        return wire.parse_take(result)

    def _start(self, taken: list[wire.Taken]) -> None:
        """Launch the runnable entries of a take; hand back any beyond the free slots."""
        surplus: list[Delivery] = []
        for t in taken:
            try:
                msg = JobMessage.model_validate_json(t.message)
            except ValidationError as exc:
                log.error(f"dropped an unreadable stream entry: {exc}", extra={"entry": t.entry})
                continue
            job = Delivery(
                index=t.stream, entry=t.entry, stream=self.streams[t.stream - 1], msg=msg,
                record=self.keys.record(msg.job_id), attempt=t.attempt, max_attempts=t.max_attempts,
            )
            verdict = t.verdict
            if verdict is wire.Verdict.RUN:
                self.holdings.hold(job)
                if self.holdings.free <= 0:
                    # A blocking read over several streams can return more than asked.
                    surplus.append(job)
                    continue
                self.runner.launch(job)
                continue
            extra = {"job_id": msg.job_id, "handler": msg.handler, "attempt": job.attempt}
            if verdict is wire.Verdict.CANCELLED:
                self.metrics.outcome(msg.handler, "cancelled")
                job_log(INFO, "job cancelled before it started", {**extra, "state": "Cancelled"})
            elif verdict is wire.Verdict.DEAD:
                self.metrics.dead_letter(msg.handler)
                self.metrics.outcome(msg.handler, "failed")
                log.error(
                    "job dead-lettered: every attempt was lost with its worker",
                    extra={**extra, "state": "Failed", "reason": "WorkerLost"},
                )
            else:
                log.info(f"skipped a {verdict} entry", extra={**extra, "reason": verdict.value})
        for job in surplus:
            self.runner.hand_back(job, uncount=True, message=f"handed back by {self.name} (no free slot)")
