"""The consumer: reads a pool's streams through the consumer group and starts what ``take.lua`` says runs.

It reads up to the free slots at a time, in priority order; one ``take.lua`` call delivers a
batch and decides each entry (run, or why not) in the same round trip, and the runnable ones
are handed to the :class:`~kubeworkers.runner.AttemptRunner`.

Idle, it sends the take right behind a blocking ``XREAD`` of the streams from the ids the last
take returned when it read them all to their end: Redis runs the take the moment an entry
arrives, so waking up costs no round trip of its own. The ``XREAD`` (no group) delivers
nothing; only the take does, so nothing is delivered beyond the free slots.

A take whose reply was lost (Redis timed out, the connection dropped, the read was cancelled
after Redis ran the take behind it) may have marked jobs Running for this worker that it never
heard of. This keeps "an attempt counts only when its handler starts" true: before reading
anything new, the consumer reads its own pending entries again and passes the unknown ones to
``take.lua``, which runs a delivery that is already Running for this worker without counting
another attempt (on shutdown, :func:`kubeworkers.drain.hand_back_unstarted` hands them back
uncounted instead). Those beyond the free slots stay *undecided* (still Queued, their lease
renewed) until the next take.

With ``durable_replicas`` (a Redis with replicas, e.g. under Sentinel) a take is followed, in
the same round trip, by ``WAIT``: its jobs start only once that many replicas have the attempt
recorded, so a failover cannot lose the record of an attempt that ran (which would run the job
again under the same attempt number, docs/reliability.md). A take too few replicas acknowledged
is handed back at once, its attempts not counted: on a demoted master that write is lost with
the rest, on a master whose replicas lag it is read again. (The results are waited for in
:mod:`kubeworkers.outbox`.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from logging import INFO
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from kubeworkers import leases, logs, redis_ops, scripts, wire
from kubeworkers.attempts import Delivery
from kubeworkers.errors import cap_text
from kubeworkers.holdings import Holdings
from kubeworkers.metrics import WorkerMetrics
from kubeworkers.protocol import WORKER_GROUP, JobMessage, PoolKeys
from kubeworkers.registry import DEFAULT_MAX_ATTEMPTS, Registry
from kubeworkers.runner import AttemptRunner
from kubeworkers.settings import WorkerSettings

log = logging.getLogger("kubeworkers.worker")
job_log = logs.JobLog(log)

#: Most entries one take (read + start) delivers: small enough that Python runs one batch
#: while Redis executes the next, large enough to amortise the round trip.
TAKE_BATCH = 64
#: Longest a durable take waits for its replicas (``WAIT`` timeout), milliseconds.
DURABLE_TAKE_WAIT_MS = 1000


class Consumer:
    """The read loop of one worker (:meth:`run`, one supervised task)."""

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
        #: Handlers with a concurrency limit of their own, and that limit.
        self.limits = {spec.name: spec.concurrency for spec in registry if spec.concurrency is not None}
        #: Every handler has a limit: then the free slots are at most the sum of theirs.
        self.all_limited = len(registry) > 0 and len(self.limits) == len(registry)
        #: True while a blocking read (and the take behind it) waits: the only time the loop may be
        #: cancelled (a batch being started must finish starting, or its jobs would be Running
        #: without running; a take whose reply is lost that way is recovered as any lost reply).
        self.in_blocking_read = False
        #: A read or take failed on the way back: this worker may hold deliveries it never heard of.
        self.recover = False
        #: The last take ran behind a blocking read and brought jobs (the worker was idle until then).
        self.woke = False
        #: Where the last take left every stream read to its end (the group's last delivered id of
        #: each): the next take waits behind a blocking read from them. None: read without blocking.
        self.wake_from: list[str] | None = None

    async def run(self) -> None:
        """Read and start jobs until stopping. Errors escape to the supervisor, which restarts it."""
        while not self.stopping.is_set():
            free = self.startable()
            if free <= 0:
                self.holdings.slot_free.clear()
                await self.holdings.slot_free.wait()
                # Let every job that is finishing in this loop iteration finish, so the
                # next read fills many slots in one round trip instead of one per job.
                await asyncio.sleep(0)
                continue
            try:
                if self.recover:
                    await self._recover()
                # Smaller takes than the free slots let Python run the jobs of one take while
                # Redis executes the next: the two overlap instead of taking turns.
                taken = await self._take(min(free, TAKE_BATCH))
                self._start(taken)
                if taken and all(t.verdict is wire.Verdict.DEFERRED for t in taken):
                    await self._pause()
                elif self.woke and taken:
                    # Woken from idle: let the handlers just launched take their first step before
                    # the next take is built and sent (a busy worker sends it first instead, so
                    # Redis works on it while Python runs the batch).
                    await asyncio.sleep(0)
            except asyncio.CancelledError:
                if self.stopping.is_set():
                    return
                self.recover = True
                raise
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    self.recover = True
                    raise
                # Redis lost the group (restarted without persistence): recreate it.
                await leases.ensure_groups(self.redis, self.keys)
            except BaseException:
                self.recover = True
                raise

    def startable(self) -> int:
        """How many jobs this worker could start now: its free slots, and, when every handler has a
        concurrency limit, no more than their free slots together (it never reads what it cannot start)."""
        free = self.holdings.free
        if self.all_limited:
            free = min(free, sum(self.holdings.free_by_handler(self.limits).values()))
        return free

    async def _pause(self) -> None:
        """Everything read was deferred (handlers at their limit): wait for a slot to free, or a
        block interval, rather than read the same entries again at once."""
        self.holdings.slot_free.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.holdings.slot_free.wait(), self.settings.block_ms / 1000)

    def _take_args(
        self, mode: Literal["read", "given"], count: int, given: list[wire.Given], *, clock: bool = True,
    ) -> list[wire.Arg]:
        """``take.lua``'s arguments; ``clock=False``: the take runs by Redis' clock (it waits
        behind a blocking read, so the time it was sent at would be stale by then)."""
        return wire.take_args(
            mode=mode, group=WORKER_GROUP, consumer=self.name, count=count, now=repr(time.time()) if clock else "",
            prefix=self.keys.prefix, events=self.keys.events, wake=mode == "read",
            result_ttl=self.settings.result_ttl, default_max_attempts=DEFAULT_MAX_ATTEMPTS,
            handler_max_attempts=self.handler_max,
            handler_free=json.dumps(self.holdings.free_by_handler(self.limits)),
            dead_letter_maxlen=self.settings.dead_letter_maxlen,
            aging_ms=round(self.settings.priority_aging_seconds * 1000), given=given,
        )

    async def _take_call(self, args: list[wire.Arg], wake_from: list[str] | None = None) -> list[wire.Taken]:
        """One ``take.lua`` call, behind a blocking ``XREAD`` from ``wake_from`` when given; with
        ``durable_replicas``, only what enough replicas acknowledged. A take in mode 'read' sets
        :attr:`wake_from` for the next one."""
        wanted = self.settings.durable_replicas
        before = [] if wake_from is None else [redis_ops.Command(
            "xread", dict(zip(self.streams, wake_from, strict=True)), count=1, block=self.settings.block_ms,
        )]
        then = [redis_ops.Command("wait", wanted, DURABLE_TAKE_WAIT_MS)] if wanted else []
        if not before and not then:
            reply = await scripts.call(self.redis, "take", self.streams, args)
        else:
            replies = await redis_ops.run(self.redis, scripts.pipeline_plan(
                [("take", self.streams, args)], before=before, then=then,
            ))
            reply = replies[len(before)]
        if args[0] == "read":
            taken, self.wake_from = wire.parse_take_woken(reply)
        else:
            taken = wire.parse_take(reply)
        if not wanted:
            return taken
        acknowledged = int(replies[-1])
        runnable = [t for t in taken if t.verdict is wire.Verdict.RUN]
        if acknowledged >= wanted or not runnable:
            return taken
        log.warning(
            f"a take of {len(runnable)} job(s) was acknowledged by {acknowledged} of {wanted} replica(s) "
            f"within {DURABLE_TAKE_WAIT_MS} ms: handing them back unrun (is Redis failing over?)",
            extra={"worker": self.name},
        )
        await leases.requeue(
            self.redis, self.keys, [(t.stream, t.entry, t.job_id) for t in runnable], self.name,
            uncount_attempt=True, message="not started: no replica acknowledged the take; queued again",
            result_ttl=self.settings.result_ttl,
        )
        return [t for t in taken if t.verdict is not wire.Verdict.RUN]

    async def _decide(self, given: list[wire.Given], count: int) -> list[wire.Taken]:
        taken = await self._take_call(self._take_args("given", count, given))
        for entry in given:
            self.holdings.undecided.pop(str(entry.entry), None)
        return taken

    async def _take(self, count: int) -> list[wire.Taken]:
        """Deliver and decide up to ``count`` entries (see ``lua/take.lua``)."""
        self.woke = False
        if self.holdings.undecided:
            return await self._decide(list(self.holdings.undecided.values())[:count], count)
        if self.wake_from is None:
            taken = await self._take_call(self._take_args("read", count, []))
            if taken or self.wake_from is None:
                return taken
        # A stop that came while the take above was in flight could not interrupt it (only a
        # blocking read is cancelled), so it is honoured here, before blocking for block_ms.
        if self.stopping.is_set():
            return []
        # Every stream read to its end: wait for the next entry, with the take right behind.
        self.in_blocking_read = True
        try:
            taken = await self._take_call(self._take_args("read", count, [], clock=False), self.wake_from)
        finally:
            self.in_blocking_read = False
        self.woke = bool(taken)
        return taken

    def _given(self, reply: Any) -> list[wire.Given]:
        given: list[wire.Given] = []
        for stream, entries in reply or []:
            index = self.streams.index(stream.decode()) + 1
            for entry_id, fields in entries:
                if fields:
                    given.append(wire.Given(
                        index, entry_id.decode(), fields.get(b"m", b""),
                        fields.get(b"j", b""), fields.get(b"u", b""), fields.get(b"h", b""),
                    ))
        return given

    async def _recover(self) -> None:
        """Find the deliveries of a take whose reply was lost: our pending entries we do not know."""
        reply: Any = await self.redis.xreadgroup(
            WORKER_GROUP, self.name, dict.fromkeys(self.streams, "0"), count=10_000,
        )
        for stream, entries in reply or []:
            gone = [entry_id for entry_id, fields in entries if not fields]
            if gone:  # deleted while pending: nothing is left to run
                await self.redis.xack(stream, WORKER_GROUP, *gone)
        recovered = [g for g in self._given(reply) if not self.holdings.knows(str(g.entry))]
        for given in recovered:
            self.holdings.undecided[str(given.entry)] = given
        if recovered:
            log.warning(f"found {len(recovered)} delivery(ies) whose take reply was lost; taking them again",
                        extra={"worker": self.name})
        self.recover = False

    def _start(self, taken: list[wire.Taken]) -> None:
        """Launch the runnable entries of a take; log (and count) the others."""
        for t in taken:
            verdict = t.verdict
            if verdict is wire.Verdict.RUN:
                self.runner.launch(self._delivery(t))
                continue
            extra = {"job_id": t.job_id, "handler": t.handler, "attempt": t.attempt}
            if verdict is wire.Verdict.CANCELLED:
                self.metrics.outcome(t.handler, "cancelled")
                job_log(INFO, "job cancelled before it started", {**extra, "state": "Cancelled"})
            elif verdict is wire.Verdict.DEAD:
                self.metrics.dead_letter(t.handler)
                self.metrics.outcome(t.handler, "failed")
                log.error(
                    "job dead-lettered: every attempt was lost with its worker",
                    extra={**extra, "state": "Failed", "reason": "WorkerLost"},
                )
            elif verdict is wire.Verdict.DEFERRED:
                log.debug("job deferred: its handler is at its concurrency limit here", extra=extra)
            elif verdict is wire.Verdict.UNDELIVERED:
                log.warning(
                    "an entry read from another Redis master (a failover?) was left for this one to deliver",
                    extra={**extra, "entry": t.entry},
                )
            else:
                log.info(f"skipped a {verdict} entry", extra={**extra, "entry": t.entry, "reason": verdict.value})

    def _delivery(self, t: wire.Taken) -> Delivery:
        msg: JobMessage | None = None
        problem: str | None = None
        try:
            msg = JobMessage.model_validate_json(t.message)
        except ValueError as exc:
            # The job cannot run; the runner fails it with the reason (a Running record must end).
            problem = cap_text(str(exc), 2000)
        job = Delivery(
            index=t.stream, entry=t.entry, stream=self.streams[t.stream - 1], job_id=t.job_id, uid=t.uid,
            namespace=self.keys.namespace, pool=self.keys.pool, handler=t.handler,
            record=self.keys.record(t.job_id), msg=msg, message_error=problem,
            attempt=t.attempt, max_attempts=t.max_attempts,
        )
        self.holdings.hold(job)
        return job
