"""Enqueue, cancel, inspect and delete jobs: the queue operations the SDK and the operator share.

Each operation is written once, as a plan (:mod:`kubeworkers.redis_ops`): ``enqueue(r, msg)``
awaits it on a ``redis.asyncio.Redis``, ``enqueue_sync(r, msg)`` runs the same plan on a
``redis.Redis``. Writes are Lua scripts (``lua/*.lua``) so that each one is atomic: a job
record and its stream entry are created together or not at all.

The operator calls these with ``job_id = "<namespace>/<name>"`` and
``uid = metadata.uid`` of the Job custom resource.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis

from kubeworkers import redis_ops, scripts, wire
from kubeworkers.protocol import (
    CANCEL_CHANNEL,
    DEFAULT_RESULT_TTL,
    JOB_HINT_TTL,
    WORKER_GROUP,
    JobMessage,
    JobRecord,
    PoolKeys,
    job_pool_key,
    legacy_job_pool_key,
)
from kubeworkers.redis_ops import Command, Pipeline, Plan


class MessageRefusedError(ValueError):
    """``enqueue.lua`` refused messages no worker could run (the others of the call were enqueued)."""


@dataclass(frozen=True)
class Durability:
    """Durable submit: an enqueue returns only once ``replicas`` replicas have the jobs.

    Redis replicates asynchronously: a master acknowledges a write before any replica has it,
    so a failover right after a submit can lose the job. In durable mode the enqueue is followed,
    in the same round trip and on the same connection, by ``WAIT replicas timeout``, which
    returns once that many replicas acknowledged every write the connection made, or at the
    timeout. Fewer acknowledgements raise :class:`NotReplicatedError`. (``WAIT`` makes a write
    reach replicas' memory, not their disks, and a failover that promotes a replica that did not
    acknowledge can still lose it: run the Sentinels so they promote an up-to-date replica, see
    docs/reliability.md.)
    """

    #: Replicas that must have acknowledged the enqueue.
    replicas: int = 1
    #: Seconds to wait for them; past it the submit fails with :class:`NotReplicatedError`.
    timeout_s: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.replicas, bool) or not isinstance(self.replicas, int) or self.replicas < 1:
            raise ValueError(f"durable replicas must be a whole number >= 1, not {self.replicas!r}")
        if not isinstance(self.timeout_s, int | float) or not 0 < self.timeout_s <= 60:
            raise ValueError(f"durable timeout must be > 0 and at most 60 seconds, not {self.timeout_s!r}")

    def commands(self) -> list[Command]:
        """What follows the enqueue calls in their round trip (their replies end it)."""
        return [
            # A fence: a write on this connection after the enqueue, so WAIT covers every earlier
            # write of the master, including a job an earlier, lost attempt of this same submit
            # enqueued on another connection (then the enqueue itself writes nothing here).
            # PUBLISH is replicated and keeps nothing.
            Command("publish", DURABLE_FENCE_CHANNEL, ""),
            Command("wait", self.replicas, max(1, round(self.timeout_s * 1000))),
        ]


class NotReplicatedError(RuntimeError):
    """A durable submit was enqueued on the master but not acknowledged by enough replicas in time.

    The jobs *are* queued (they run unless the master fails before replicating them); submitting
    the same job ids again is safe (enqueue is idempotent) and waits again.
    """

    def __init__(self, job_ids: Sequence[str], acknowledged: int, durability: Durability) -> None:
        self.job_ids = list(job_ids)
        self.acknowledged = acknowledged
        self.durability = durability
        shown = ", ".join(self.job_ids[:3]) + (f" and {len(self.job_ids) - 3} more" if len(self.job_ids) > 3 else "")
        super().__init__(
            f"durable submit: {acknowledged} of {durability.replicas} replica(s) acknowledged job(s) {shown} "
            f"within {durability.timeout_s:g}s; they are queued on the master but a failover now could lose "
            f"them (submitting the same job ids again is safe)"
        )


#: The channel of the durable submit's fence write; nobody subscribes.
DURABLE_FENCE_CHANNEL = "kw:durable-fence"


#: Messages per enqueue script call in :func:`enqueue_many` (bounds the time Redis spends in one call).
ENQUEUE_CHUNK = 500
#: Messages a bulk submit (``submit_many``) builds between two turns of the event loop while a
#: chunk is in flight, so the loop writes that chunk to Redis as the socket takes it.
SUBMIT_BUILD_SLICE = 50


# --------------------------------------------------------------------------- the operations, once


@dataclass(frozen=True)
class Enqueued:
    """What ``enqueue.lua`` says of one message."""

    #: False when the job was already known (the same job id and uid: an idempotent repeat).
    new: bool
    #: Jobs ahead of it in its pool's queue (docs/protocol.md, *Queue positions*); None when it
    #: does not wait on a stream (a delayed job, one already running or finished).
    position: int | None


def hint_commands(jobs: Iterable[tuple[str, str, str]]) -> list[Command]:
    """The writes of the job id -> pools hints (:func:`~kubeworkers.protocol.job_pool_key`) of
    ``(namespace, pool, job_id)``: outside the scripts, since the hint is in the namespace's slot,
    not the pool's; sent in the scripts' round trip, after them."""
    out: list[Command] = []
    for namespace, pool, job_id in dict.fromkeys(jobs):
        key = job_pool_key(namespace, job_id)
        out += [Command("sadd", key, pool), Command("expire", key, JOB_HINT_TTL)]
    return out


#: From this many hints on, an enqueue writes them with one ``lua/hints.lua`` call per namespace and
#: :data:`ENQUEUE_CHUNK` jobs instead of an ``SADD`` and an ``EXPIRE`` each: the same writes, but two
#: commands per job fewer for the client to pack and parse and for Redis to read and answer.
HINT_SCRIPT_MIN = 2


def hint_calls(jobs: Iterable[tuple[str, str, str]]) -> list[tuple[str, Sequence[str], Sequence[wire.Arg]]]:
    """The ``lua/hints.lua`` calls that write the hints of ``(namespace, pool, job_id)`` (what
    :func:`hint_commands` writes): one per namespace (the keys' slot) and :data:`ENQUEUE_CHUNK` jobs."""
    by_namespace: dict[str, tuple[list[str], list[wire.Arg]]] = {}
    for namespace, pool, job_id in dict.fromkeys(jobs):
        keys, pools = by_namespace.setdefault(namespace, ([], []))
        keys.append(job_pool_key(namespace, job_id))
        pools.append(pool)
    calls: list[tuple[str, Sequence[str], Sequence[wire.Arg]]] = []
    for keys, pools in by_namespace.values():
        for start in range(0, len(keys), ENQUEUE_CHUNK):
            calls.append(("hints", keys[start : start + ENQUEUE_CHUNK],
                          [JOB_HINT_TTL, *pools[start : start + ENQUEUE_CHUNK]]))
    return calls


def _position(value: object) -> int | None:
    return int(value) if isinstance(value, int) and value >= 0 else None


def enqueue_plan(msgs: Iterable[JobMessage], durable: Durability | None = None) -> Plan[list[bool]]:
    """Enqueue messages (any pools) with one script call per pool and :data:`ENQUEUE_CHUNK` jobs, all
    in one round trip; True per message that was new. Idempotent, so repeated on connection errors.

    With ``durable``, the same round trip waits for replicas (:class:`Durability`) and raises
    :class:`NotReplicatedError` when too few acknowledged."""
    results = yield from enqueue_results_plan(msgs, durable)
    return [r.new for r in results]


def enqueue_results_plan(msgs: Iterable[JobMessage], durable: Durability | None = None) -> Plan[list[Enqueued]]:
    """:func:`enqueue_plan`, saying per message whether it was new and its queue position."""
    pending = list(msgs)
    calls: list[tuple[str, Sequence[str], Sequence[wire.Arg]]] = []
    positions: list[list[int]] = []
    for where, group in _by_pool(pending):
        for start in range(0, len(group), ENQUEUE_CHUNK):
            chunk = group[start : start + ENQUEUE_CHUNK]
            # The events stream is the routing key (a cluster client sends the call to the pool's
            # slot); the script derives every key it writes from the pool prefix, all in that slot.
            calls.append(("enqueue", [PoolKeys(chunk[0].namespace, chunk[0].pool).events], _enqueue_argv(chunk)))
            positions.append(where[start : start + ENQUEUE_CHUNK])
    results = [Enqueued(new=False, position=None)] * len(pending)
    refused: list[str] = []
    if calls:
        enqueues = len(calls)
        jobs = [(m.namespace, m.pool, m.job_id) for m in pending]
        hints: list[Command] = []
        if len(jobs) >= HINT_SCRIPT_MIN:
            calls += hint_calls(jobs)  # after the enqueues, as the commands were
        else:
            hints = hint_commands(jobs)
        tail = durable.commands() if durable is not None else []
        replies = yield from scripts.pipeline_plan(calls, idempotent=True, then=[*hints, *tail])
        if durable is not None and (acked := int(replies[-1])) < durable.replicas:
            raise NotReplicatedError([m.job_id for m in pending], acked, durable)
        replies = replies[:enqueues]
        for at, reply in zip(positions, replies, strict=True):
            for i, result in zip(at, reply, strict=True):
                if isinstance(result, bytes):
                    refused.append(f"{pending[i].job_id}: {result.decode(errors='replace')}")
                else:
                    flag, position = result
                    results[i] = Enqueued(new=flag == 1, position=_position(position))
    if refused:
        raise MessageRefusedError(f"{len(refused)} message(s) refused: {'; '.join(refused[:5])}")
    return results


@dataclass(frozen=True)
class Positions:
    """Queue positions of some jobs of one pool (``lua/positions.lua``)."""

    #: Entries the pool's workers have been handed, over all its streams (the take counter: two
    #: readings give the take rate); None when Redis cannot say (a stream's entries-read is unknown).
    taken: int | None
    #: Job id -> jobs ahead of it in the queue; None when it does not wait on a stream.
    positions: dict[str, int | None]


def positions_plan(namespace: str, pool: str, job_ids: Sequence[str]) -> Plan[Positions]:
    """See :func:`positions`. A read, so repeated after connection errors."""
    keys = PoolKeys(namespace, pool)
    reply = yield from scripts.call_plan("positions", [keys.events], [keys.prefix, *job_ids], idempotent=True)
    taken, found = reply
    return Positions(
        taken=_position(taken),
        positions={job_id: _position(p) for job_id, p in zip(job_ids, found, strict=True)},
    )


def _cancel_call(
    namespace: str, pool: str, job_id: str, result_ttl: int
) -> tuple[str, Sequence[str], Sequence[wire.Arg]]:
    keys = PoolKeys(namespace, pool)
    return ("cancel", [keys.record(job_id), keys.cancel(job_id), keys.events],
            [repr(time.time()), CANCEL_CHANNEL, result_ttl])


def cancel_plan(namespace: str, pool: str, job_id: str, result_ttl: int = DEFAULT_RESULT_TTL) -> Plan[bool]:
    """See :func:`cancel`."""
    reply = yield from scripts.call_plan(*_cancel_call(namespace, pool, job_id, result_ttl))
    yield from cancel_children_plan(namespace, pool, job_id, result_ttl)
    return bool(reply)


# --------------------------------------------------------------------------- fan-out (lua/children.lua)

#: Generations of descendants a cancellation reaches (a bound, not a limit anyone should meet).
MAX_CHILD_DEPTH = 32


def _members(raw: dict[bytes, bytes] | dict[str, str]) -> list[tuple[str, str, str]]:
    """A children hash as (pool, job id, state), sorted."""
    out = []
    for member, state in raw.items():
        text = member.decode() if isinstance(member, bytes) else member
        pool, _, job_id = text.partition("/")
        out.append((pool, job_id, state.decode() if isinstance(state, bytes) else state))
    return sorted(out)


def cancel_children_plan(namespace: str, pool: str, job_id: str, result_ttl: int = DEFAULT_RESULT_TTL) -> Plan[int]:
    """Cancel every unfinished descendant of a job, a generation per round trip; how many were cancelled.

    A child submitted after its generation was read escapes (its parent is being cancelled,
    so its handler stops at its next ``ctx.spawn``): docs/workflows.md, *Guarantees*.
    """
    parents = [(pool, job_id)]
    cancelled = 0
    for _ in range(MAX_CHILD_DEPTH):
        reads = Pipeline([Command("hgetall", PoolKeys(namespace, p).children(j)) for p, j in parents])

        def read(reads: Pipeline = reads) -> Pipeline:
            return reads

        raws = yield from redis_ops.retried(read, idempotent=True)
        unfinished = [(p, j) for raw in raws for p, j, state in _members(raw)
                      if state not in ("Succeeded", "Failed", "Cancelled")]
        if not unfinished:
            break
        replies = yield from scripts.pipeline_plan(
            [_cancel_call(namespace, p, j, result_ttl) for p, j in unfinished], idempotent=True
        )
        cancelled += sum(1 for reply in replies if reply == 1)
        parents = unfinished
    return cancelled


def children_plan(namespace: str, pool: str, job_id: str) -> Plan[list[JobRecord]]:
    """See :func:`children`. Reads, so repeated after connection errors."""
    key = PoolKeys(namespace, pool).children(job_id)
    raw = yield from redis_ops.retried(lambda: Command("hgetall", key), idempotent=True)
    members = _members(raw)
    if not members:
        return []
    records = yield from redis_ops.retried(lambda: Pipeline(
        [Command("hgetall", PoolKeys(namespace, p).record(j)) for p, j, _ in members]), idempotent=True)
    return [JobRecord.from_hash(rec) for rec in records if rec]


async def children(r: aioredis.Redis, namespace: str, pool: str, job_id: str) -> list[JobRecord]:
    """The records of a job's children (``ctx.spawn``), by pool and job id; expired ones are left out."""
    return await redis_ops.run(r, children_plan(namespace, pool, job_id))


def fail_lost_plan(
    namespace: str, pool: str, job_id: str, *, min_age_seconds: float, result_ttl: int = DEFAULT_RESULT_TTL
) -> Plan[bool]:
    """See :func:`fail_lost`."""
    keys = PoolKeys(namespace, pool)
    reply = yield from scripts.call_plan(
        "fail_lost",
        [keys.record(job_id), keys.delayed, keys.events, keys.dead_letter, *keys.streams, keys.stats],
        [repr(time.time()), repr(min_age_seconds), result_ttl, WORKER_GROUP],
    )
    return bool(reply)


def record_plan(namespace: str, pool: str, job_id: str) -> Plan[JobRecord | None]:
    """See :func:`get_record`. A read, so repeated after connection errors."""
    key = PoolKeys(namespace, pool).record(job_id)
    raw = yield from redis_ops.retried(lambda: Command("hgetall", key), idempotent=True)
    return JobRecord.from_hash(raw) if raw else None


def pools_plan(namespace: str, job_id: str) -> Plan[list[str]]:
    """See :func:`find_pools`. Reads, so repeated after connection errors."""
    key = job_pool_key(namespace, job_id)
    raw = yield from redis_ops.retried(lambda: Command("smembers", key), idempotent=True)
    pools = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in raw)
    if not pools:
        return []
    records = [PoolKeys(namespace, pool).record(job_id) for pool in pools]
    exists = yield from redis_ops.retried(
        lambda: Pipeline([Command("exists", record) for record in records]), idempotent=True
    )
    return [pool for pool, found in zip(pools, exists, strict=True) if found]


def delete_plan(namespace: str, pool: str, job_id: str) -> Plan[None]:
    """See :func:`delete_job`."""
    keys = PoolKeys(namespace, pool)
    yield Pipeline([  # the record and flag in the pool's slot, the hint and legacy pointer in the namespace's
        Command("delete", keys.record(job_id), keys.cancel(job_id)),
        Command("delete", legacy_job_pool_key(namespace, job_id)),
        Command("srem", job_pool_key(namespace, job_id), pool),
    ])


def forget_plan(namespace: str, pool: str, job_id: str, *, uid: str, run: int) -> Plan[bool]:
    """See :func:`forget_finished`."""
    keys = PoolKeys(namespace, pool)
    reply = yield from scripts.call_plan(
        "forget", [keys.record(job_id), keys.cancel(job_id)], [uid, str(run)], idempotent=True,
    )
    if reply:  # the hint and the legacy pointer are in the namespace's slot: after the script, not in it
        yield from redis_ops.retried(lambda: Pipeline([
            Command("srem", job_pool_key(namespace, job_id), pool),
            Command("delete", legacy_job_pool_key(namespace, job_id)),
        ]), idempotent=True)
    return bool(reply)


def _enqueue_argv(msgs: Sequence[JobMessage]) -> list[wire.Arg]:
    """``enqueue.lua``'s arguments for messages of a single pool."""
    first = msgs[0]
    keys = PoolKeys(first.namespace, first.pool)
    return [repr(time.time()), keys.prefix, "", first.pool,
            *(m.wire_json() for m in msgs)]


def _by_pool(msgs: Sequence[JobMessage]) -> list[tuple[list[int], list[JobMessage]]]:
    """Group messages per (namespace, pool), remembering their positions."""
    groups: dict[tuple[str, str], tuple[list[int], list[JobMessage]]] = {}
    for i, m in enumerate(msgs):
        positions, group = groups.setdefault((m.namespace, m.pool), ([], []))
        positions.append(i)
        group.append(m)
    return list(groups.values())


# --------------------------------------------------------------------------- async


async def enqueue(r: aioredis.Redis, msg: JobMessage) -> bool:
    """Put ``msg`` on its pool's stream and create its record (state Queued), at most once.

    Returns False, and changes nothing, when a record for ``msg.job_id`` already
    exists with the same uid, or with another uid whose job has not finished.
    A finished job with a *different* uid is replaced (a Job deleted and
    created again under the same name). Being idempotent, the call is retried
    on connection errors (e.g. after a Redis restart).
    """
    [enqueued] = await redis_ops.run(r, enqueue_plan([msg]))
    return enqueued


async def enqueue_many(r: aioredis.Redis, msgs: Iterable[JobMessage]) -> list[bool]:
    """:func:`enqueue` for many messages: one script call per pool and 500 jobs, all pipelined."""
    return await redis_ops.run(r, enqueue_plan(msgs))


async def positions(r: aioredis.Redis, namespace: str, pool: str, job_ids: Sequence[str]) -> Positions:
    """How many jobs are ahead of each of these jobs in their pool's queue, in strict priority
    order (docs/protocol.md, *Queue positions*), and the pool's take counter. Bounded work per
    job whatever the queue's length: one script call for them all."""
    return await redis_ops.run(r, positions_plan(namespace, pool, job_ids))


async def cancel(
    r: aioredis.Redis, namespace: str, pool: str, job_id: str, *, result_ttl: int = DEFAULT_RESULT_TTL
) -> bool:
    """Cancel a queued or running job. Returns False when the job is unknown or already finished.

    A queued job's record becomes Cancelled at once; a running job's worker is
    told through :data:`~kubeworkers.protocol.CANCEL_CHANNEL` and records
    Cancelled when its handler has stopped.
    """
    return await redis_ops.run(r, cancel_plan(namespace, pool, job_id, result_ttl))


async def fail_lost(
    r: aioredis.Redis, namespace: str, pool: str, job_id: str, *, min_age_seconds: float,
    result_ttl: int = DEFAULT_RESULT_TTL,
) -> bool:
    """Fail a job that can never finish (``lua/fail_lost.lua``); True when it was failed.

    Queued or Running, unchanged for ``min_age_seconds``, and nothing in Redis can run it any
    more (its stream entry is gone, a Running job's entry is held by no worker, a retry is not
    waiting in the delayed set): it becomes Failed (``JobLost``) with an event and a dead-letter
    entry, so it is bounded like every finished job, and can be replayed.
    """
    return await redis_ops.run(
        r, fail_lost_plan(namespace, pool, job_id, min_age_seconds=min_age_seconds, result_ttl=result_ttl)
    )


async def get_record(r: aioredis.Redis, namespace: str, pool: str, job_id: str) -> JobRecord | None:
    """The job's record, or None when there is none (never enqueued, expired or deleted)."""
    return await redis_ops.run(r, record_plan(namespace, pool, job_id))


async def find_pools(r: aioredis.Redis, namespace: str, job_id: str) -> list[str]:
    """The pools (sorted) that hold a record of this job id: a job is (namespace, pool, job_id),
    so one id may be several jobs. Pools in the job->pools set whose record is gone are left out."""
    return await redis_ops.run(r, pools_plan(namespace, job_id))


async def delete_job(r: aioredis.Redis, namespace: str, pool: str, job_id: str) -> None:
    """Remove the job's record and cancel flag, and its pool from the job->pools set (TTL cleanup).

    A stream entry still waiting for this job is skipped by the worker that
    reads it, because its record is gone.
    """
    await redis_ops.run(r, delete_plan(namespace, pool, job_id))


async def forget_finished(r: aioredis.Redis, namespace: str, pool: str, job_id: str, *, uid: str, run: int) -> bool:
    """:func:`delete_job`, but only while the record is the finished run ``run`` of ``uid``
    (``lua/forget.lua``): the TTL deletion of a Job never takes a record rerun since. True when deleted."""
    return await redis_ops.run(r, forget_plan(namespace, pool, job_id, uid=uid, run=run))


# --------------------------------------------------------------------------- blocking twins


def enqueue_sync(r: redis.Redis, msg: JobMessage) -> bool:
    """Blocking twin of :func:`enqueue`."""
    [enqueued] = redis_ops.run_sync(r, enqueue_plan([msg]))
    return enqueued


def enqueue_many_sync(r: redis.Redis, msgs: Iterable[JobMessage]) -> list[bool]:
    """Blocking twin of :func:`enqueue_many`."""
    return redis_ops.run_sync(r, enqueue_plan(msgs))


def cancel_sync(
    r: redis.Redis, namespace: str, pool: str, job_id: str, *, result_ttl: int = DEFAULT_RESULT_TTL
) -> bool:
    """Blocking twin of :func:`cancel`."""
    return redis_ops.run_sync(r, cancel_plan(namespace, pool, job_id, result_ttl))


def fail_lost_sync(
    r: redis.Redis, namespace: str, pool: str, job_id: str, *, min_age_seconds: float,
    result_ttl: int = DEFAULT_RESULT_TTL,
) -> bool:
    """Blocking twin of :func:`fail_lost`."""
    return redis_ops.run_sync(
        r, fail_lost_plan(namespace, pool, job_id, min_age_seconds=min_age_seconds, result_ttl=result_ttl)
    )


def get_record_sync(r: redis.Redis, namespace: str, pool: str, job_id: str) -> JobRecord | None:
    """Blocking twin of :func:`get_record`."""
    return redis_ops.run_sync(r, record_plan(namespace, pool, job_id))


def find_pools_sync(r: redis.Redis, namespace: str, job_id: str) -> list[str]:
    """Blocking twin of :func:`find_pools`."""
    return redis_ops.run_sync(r, pools_plan(namespace, job_id))


def delete_job_sync(r: redis.Redis, namespace: str, pool: str, job_id: str) -> None:
    """Blocking twin of :func:`delete_job`."""
    redis_ops.run_sync(r, delete_plan(namespace, pool, job_id))

