"""The SDK: submit jobs straight to Redis, inspect them, wait for them, cancel them.

``Client`` blocks; ``AsyncClient`` is its asyncio twin. Both write exactly the
:class:`~kubeworkers.protocol.JobMessage` the operator writes for Job custom
resources, through the same idempotent enqueue script.

Each operation is written once, as a plan of :class:`_Jobs` (see :mod:`kubeworkers.redis_ops`);
``AsyncClient`` awaits it and ``Client`` runs it blocking, so the two cannot behave differently.
"""

from __future__ import annotations

import datetime
import functools
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Sequence
from typing import Any, Concatenate, Generic, ParamSpec, TypedDict, TypeVar, Unpack, overload

import redis
import redis.asyncio as aioredis
from pydantic import BaseModel, ValidationError

from kubeworkers import connection, protocol, queue, redis_ops, results, stats
from kubeworkers.connection import is_cluster_client
from kubeworkers.protocol import MAX_ATTEMPTS_LIMIT, JobMessage, JobRecord, Priority, RetryPolicy, Step
from kubeworkers.redis_ops import Join, Pause, Plan, Start
from kubeworkers.registry import Registry, check_timeouts
from kubeworkers.registry import registry as default_registry

Input = BaseModel | dict[str, Any] | None

#: Polling intervals of ``wait``: start fast for short jobs, back off for long ones.
WAIT_FIRST_POLL = 0.005
WAIT_MAX_POLL = 0.25

P = ParamSpec("P")
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


def poll_delays(first: float = WAIT_FIRST_POLL, most: float = WAIT_MAX_POLL) -> Iterator[float]:
    """The pauses between polls of ``wait``: doubling from ``first`` up to ``most``."""
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, most)


class Submitted(str):
    """The id of a submitted job (a ``str``: code that keeps the id as text goes on working), with
    what the submit found out.

    ``new`` is False when a job of this id already existed on the pool (submit is idempotent per
    job id: nothing was enqueued again); ``position`` is how many jobs were ahead of it in its
    pool's queue when it was submitted, in strict priority order (docs/handlers.md, *Priorities*),
    or None when it does not wait on a stream (a delayed job, or a duplicate already running or
    finished).
    """

    new: bool
    position: int | None

    def __new__(cls, job_id: str, *, new: bool, position: int | None) -> Submitted:
        self = super().__new__(cls, job_id)
        self.new = new
        self.position = position
        return self

    def __repr__(self) -> str:
        return f"Submitted({str(self)!r}, new={self.new}, position={self.position})"


class InvalidInputError(ValueError):
    """The input does not match the handler's input model (checked when the handler is importable)."""


class JobNotFoundError(LookupError):
    """No record for this job id (never submitted, expired, or deleted)."""


class AmbiguousJobIdError(LookupError):
    """A job id asked for without a pool names jobs on several pools: pass ``pool=``.

    A job is (namespace, pool, job_id), so the same id submitted to two pools is two jobs.
    """

    def __init__(self, job_id: str, pools: Sequence[str]) -> None:
        self.job_id = job_id
        self.pools = list(pools)
        super().__init__(f"job {job_id} is on pools {', '.join(self.pools)}: pass pool=")


def new_job_id() -> str:
    """A random 128-bit id, as 32 hex digits.

    Not from ``os.urandom`` (a system call per id, which bulk submits feel): ids need to be
    unique, not secret, and the ``random`` module reseeds itself in forked children.
    """
    return f"{random.getrandbits(128):032x}"


def check_policy(*, timeout: float | None, max_attempts: int | None, name: str = "timeout") -> None:
    """Refuse a per-job time limit or attempt count that makes no sense (ValueError naming it)."""
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout <= 0
    ):
        raise ValueError(f"{name} must be a finite number of seconds > 0, not {timeout!r}")
    if max_attempts is not None and (
        isinstance(max_attempts, bool) or not isinstance(max_attempts, int)
        or not 1 <= max_attempts <= MAX_ATTEMPTS_LIMIT
    ):
        raise ValueError(f"max_attempts must be a whole number from 1 to {MAX_ATTEMPTS_LIMIT}, not {max_attempts!r}")


class JobOptions(TypedDict, total=False):
    """The per-job options of ``submit`` and ``submit_many``; each one left out is the handler's."""

    #: ``critical``, ``high``, ``normal`` (default) or ``low``.
    priority: Priority | str
    #: Hard time limit of one attempt, seconds.
    timeout: float | None
    #: Seconds after which the handler is told to wrap up; below the hard timeout.
    soft_timeout: float | None
    #: Attempts in all (same as ``retry=RetryPolicy(maximum_attempts=...)``).
    max_attempts: int | None
    #: Overrides of the handler's retry policy, field by field.
    retry: RetryPolicy | None
    #: Drop the job if no attempt has started by then: seconds from now, or an aware datetime.
    expires: float | datetime.datetime | None
    #: Start no earlier than this many seconds (or this timedelta) from now: the job waits in the
    #: pool's delayed set, held by no worker (docs/scheduling.md, *Delayed jobs*).
    delay: float | datetime.timedelta | None
    #: Start no earlier than this aware datetime (give ``delay`` or ``at``, not both).
    at: datetime.datetime | None


def start_time(delay: float | datetime.timedelta | None, at: datetime.datetime | None, now: float) -> float | None:
    """``delay`` (seconds or a timedelta from ``now``) or ``at`` (an aware datetime) as unix seconds,
    None when neither is given (ValueError if nonsense)."""
    if delay is not None and at is not None:
        raise ValueError("give delay or at, not both")
    if at is not None:
        if not isinstance(at, datetime.datetime) or at.tzinfo is None:
            raise ValueError(f"at must be an aware datetime (with a timezone), not {at!r}")
        return at.timestamp()
    if delay is None:
        return None
    seconds = delay.total_seconds() if isinstance(delay, datetime.timedelta) else delay
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"delay must be seconds >= 0 or a timedelta, not {delay!r}")
    return now + float(seconds)


def expiry_time(expires: float | datetime.datetime | None, now: float) -> float | None:
    """``expires`` (seconds from ``now``, or an aware datetime) as unix seconds (ValueError if nonsense)."""
    if expires is None:
        return None
    if isinstance(expires, datetime.datetime):
        if expires.tzinfo is None:
            raise ValueError("expires must be an aware datetime (with a timezone), or seconds from now")
        return expires.timestamp()
    if isinstance(expires, bool) or not isinstance(expires, int | float) or not math.isfinite(expires):
        raise ValueError(f"expires must be seconds from now or a datetime, not {expires!r}")
    return now + float(expires)


class _Builder:
    """Turns submit arguments into validated :class:`JobMessage` objects."""

    def __init__(self, namespace: str, registry: Registry) -> None:
        self.namespace = namespace
        self.registry = registry

    def input(self, handler: str, value: Input) -> dict[str, Any]:
        """The input as JSON-ready data, checked against the handler's model when it is registered here."""
        spec = self.registry.get(handler)
        if isinstance(value, BaseModel):
            if spec is not None and not isinstance(value, spec.input_model):
                self._check(handler, spec.input_model, value.model_dump(mode="json"))
            return value.model_dump(mode="json")
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise InvalidInputError(f"input must be a pydantic model or a dict, not {type(value).__name__}")
        if spec is not None:
            self._check(handler, spec.input_model, value)
        # Sent as given: the worker validates it again into the same model.
        return value

    @staticmethod
    def _check(handler: str, model: type[BaseModel], data: dict[str, Any]) -> None:
        try:
            model.__pydantic_validator__.validate_python(data)
        except ValidationError as exc:
            raise InvalidInputError(f"input for handler {handler!r} does not match {model.__name__}: {exc}") from exc

    def message(self, pool: str, handler: str, value: Input, job_id: str | None, options: JobOptions) -> JobMessage:
        timeout, soft_timeout = options.get("timeout"), options.get("soft_timeout")
        max_attempts, retry = options.get("max_attempts"), options.get("retry")
        check_policy(timeout=timeout, max_attempts=max_attempts)
        check_policy(timeout=soft_timeout, max_attempts=None, name="soft_timeout")
        spec = self.registry.get(handler)
        # Per job, against the handler's own limits when it is registered here.
        check_timeouts(soft_timeout if soft_timeout is not None else (spec.soft_timeout if spec else None),
                       timeout if timeout is not None else (spec.timeout if spec else None), "", ValueError)
        if retry is not None:
            if not isinstance(retry, RetryPolicy):
                raise ValueError(f"retry must be a kubeworkers.RetryPolicy, not {type(retry).__name__}")
            if retry.maximum_attempts is not None:
                if max_attempts is not None and max_attempts != retry.maximum_attempts:
                    raise ValueError("give max_attempts or retry.maximum_attempts, not both")
                max_attempts = retry.maximum_attempts
            retry = retry.model_copy(update={"maximum_attempts": None})
        job_id = job_id or new_job_id()
        now = time.time()
        return JobMessage(
            job_id=job_id,
            uid=job_id,
            namespace=self.namespace,
            pool=pool,
            handler=handler,
            input=self.input(handler, value),
            priority=options.get("priority", Priority.NORMAL),
            timeout_seconds=timeout,
            soft_timeout_seconds=soft_timeout,
            max_attempts=max_attempts,
            retry=retry if retry is not None and retry.model_dump(exclude_none=True) else None,
            expires_at=expiry_time(options.get("expires"), now),
            not_before=start_time(options.get("delay"), options.get("at"), now),
        )


class _Jobs:
    """The SDK's operations as plans: what both clients do, written once."""

    def __init__(self, namespace: str, registry: Registry, durable: queue.Durability | None = None) -> None:
        self.namespace = namespace
        self.durable = durable
        self._build = _Builder(namespace, registry)

    def submit(
        self,
        pool: str,
        handler: str,
        input: Input = None,
        *,
        job_id: str | None = None,
        **options: Unpack[JobOptions],
    ) -> Plan[Submitted]:
        """Enqueue one job; returns its id as a :class:`Submitted` (``.new``, ``.position``).
        Submitting the same ``job_id`` again enqueues nothing (``.new`` is then False).

        ``options`` (:class:`JobOptions`): ``priority``, ``timeout``, ``soft_timeout``,
        ``max_attempts``, ``retry`` (a :class:`~kubeworkers.protocol.RetryPolicy`), ``expires``,
        ``delay`` or ``at`` (a delayed job).
        """
        msg = self._build.message(pool, handler, input, job_id, options)
        [result] = yield from queue.enqueue_results_plan([msg], self.durable)
        return Submitted(msg.job_id, new=result.new, position=result.position)

    def submit_sequence(
        self,
        pool: str,
        steps: Sequence[Step],
        input: Input = None,
        *,
        job_id: str | None = None,
        **options: Unpack[JobOptions],
    ) -> Plan[Submitted]:
        """Enqueue a sequence: ``steps[0]`` runs on ``input``, each next step on the previous one's
        output, the last one's output is the job's; one job id, one record (docs/workflows.md).
        Returns its id as a :class:`Submitted` (``.new``, ``.position``), as :meth:`submit` does.

        Each :class:`~kubeworkers.protocol.Step` has its own timeouts and retry policy; what a step
        leaves unset is ``options``' (the job's), then its handler's. A failed step can be run again
        from its own start: the job's record holds that step's message.
        """
        steps = list(steps)
        if not steps:
            raise ValueError("a sequence needs at least one step")
        for step in steps:
            check_policy(timeout=step.timeout_seconds, max_attempts=step.max_attempts)
            check_policy(timeout=step.soft_timeout_seconds, max_attempts=None, name="soft_timeout")
        msg = protocol.sequence(self._build.message(pool, steps[0].handler, input, job_id, options), steps)
        [result] = yield from queue.enqueue_results_plan([msg], self.durable)
        return Submitted(msg.job_id, new=result.new, position=result.position)

    def submit_many(
        self,
        pool: str,
        handler: str,
        inputs: Iterable[Input],
        *,
        job_ids: Sequence[str] | None = None,
        **options: Unpack[JobOptions],
    ) -> Plan[list[Submitted]]:
        """Enqueue many jobs of one handler in pipelined round trips; returns their ids in order,
        each a :class:`Submitted` (``.new``, ``.position``)."""
        values = list(inputs)
        if job_ids is not None and len(job_ids) != len(values):
            raise ValueError(f"{len(job_ids)} job ids for {len(values)} inputs")
        ids: list[Submitted] = []
        sending: Any = None
        sent: list[JobMessage] = []

        def collect(msgs: list[JobMessage], results: list[queue.Enqueued]) -> None:
            ids.extend(Submitted(m.job_id, new=r.new, position=r.position) for m, r in zip(msgs, results, strict=True))

        for start in range(0, len(values), queue.ENQUEUE_CHUNK):
            chunk: list[JobMessage] = []
            for i, v in enumerate(values[start : start + queue.ENQUEUE_CHUNK]):
                if sending is not None and i % queue.SUBMIT_BUILD_SLICE == 0:
                    # The event loop's turn: it sends the chunk in flight (a few hundred kB that
                    # the socket takes in parts) while this one is built, so Redis runs it now.
                    yield Pause(0)
                chunk.append(self._build.message(
                    pool, handler, v, job_ids[start + i] if job_ids is not None else None, options))
            # One chunk in flight while the next is built: Redis runs it while Python builds the
            # next (when awaited), and as the next is sent only once it answered, chunks arrive
            # in order (and none after a chunk that failed).
            if sending is not None:
                collect(sent, (yield Join(sending)))
            sending = yield Start(queue.enqueue_results_plan(chunk, self.durable))
            sent = chunk
        if sending is not None:
            collect(sent, (yield Join(sending)))
        return ids

    def _pool(self, job_id: str, pool: str | None) -> Plan[str | None]:
        """``pool``, else the one pool that holds a record of ``job_id`` (None: none does);
        :class:`AmbiguousJobIdError` when several do."""
        if pool:
            return pool
        found = yield from queue.pools_plan(self.namespace, job_id)
        if len(found) > 1:
            raise AmbiguousJobIdError(job_id, found)
        return found[0] if found else None

    def get(self, job_id: str, *, pool: str | None = None) -> Plan[JobRecord | None]:
        """The job's record (state, attempts, progress, output, error...), or None.

        Without ``pool``, the pool is looked up; :class:`AmbiguousJobIdError` when the id is on
        several pools (a job is (namespace, pool, job_id)).
        """
        found = yield from self._pool(job_id, pool)
        if found is None:
            return None
        record = yield from queue.record_plan(self.namespace, found, job_id)
        return record

    def wait(self, job_id: str, timeout: float | None = None, *, pool: str | None = None) -> Plan[JobRecord]:
        """Wait until the job has finished and return its record.

        Raises :class:`TimeoutError` after ``timeout`` seconds and
        :class:`JobNotFoundError` when the job does not exist.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for delay in poll_delays():
            record = yield from self.get(job_id, pool=pool)
            if record is None:
                raise JobNotFoundError(job_id)
            if record.state.finished:
                return record
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} is still {record.state.value} after {timeout}s")
            yield Pause(delay)
        raise AssertionError("poll_delays() never ends")

    def result(
        self, job_id: str, model: type[M] | None = None, timeout: float | None = None, *, pool: str | None = None
    ) -> Plan[M | Any]:
        """Wait as :meth:`wait` does, then the job's output: validated into ``model`` when given
        (:class:`~kubeworkers.results.OutputValidationError` naming the job and the model if it does
        not match), else as stored. A job that did not succeed raises
        :class:`~kubeworkers.results.JobFailedError` (:class:`~kubeworkers.results.JobCancelledError`
        when cancelled) with its error's type and message."""
        record = yield from self.wait(job_id, timeout, pool=pool)
        return results.outcome(record, model)

    def completions(self, job_ids: Iterable[str], timeout: float | None, pool: str | None) -> results.Completions:
        """The polling state of ``wait_many`` / ``as_completed``; ``timeout`` counts from now."""
        return results.Completions(self.namespace, job_ids, timeout=timeout, pool=pool, delays=poll_delays(),
                                   not_found=JobNotFoundError, ambiguous=AmbiguousJobIdError)

    def wait_many(
        self, job_ids: Iterable[str], timeout: float | None = None, *, pool: str | None = None
    ) -> Plan[dict[str, JobRecord]]:
        """Wait until every job has finished; their records by id, in the order given. Each poll
        reads every unfinished record in one pipeline. :class:`TimeoutError` naming the unfinished
        ids after ``timeout`` seconds, :class:`JobNotFoundError` when a job does not exist."""
        ids = list(job_ids)
        records = yield from self.completions(ids, timeout, pool).all()
        return {j: records[j] for j in dict.fromkeys(ids)}

    def cancel(self, job_id: str, *, pool: str | None = None) -> Plan[bool]:
        """Cancel a queued or running job; False if it is unknown or already finished."""
        found = yield from self._pool(job_id, pool)
        if found is None:
            return False
        cancelled = yield from queue.cancel_plan(self.namespace, found, job_id)
        return cancelled

    def children(self, parent_id: str, *, pool: str | None = None) -> Plan[list[JobRecord]]:
        """The records of the children a job spawned (``ctx.spawn`` / ``ctx.map``), sorted by pool and id.

        :class:`JobNotFoundError` when the parent is unknown; expired children are left out.
        """
        found = yield from self._pool(parent_id, pool)
        if found is None:
            raise JobNotFoundError(parent_id)
        records = yield from queue.children_plan(self.namespace, found, parent_id)
        return records


    def stats(self, pool: str, *, window: str | float = stats.DEFAULT_WINDOW_S) -> Plan[stats.PoolStats]:
        """Per-handler statistics of ``pool`` over the last ``window`` (``"1h"``, ``"15m"``, or
        seconds; whole minutes up to 24 h): jobs, succeeded, failed, failure rate, mean/p50/p95
        duration, in flight and queued, the same numbers as the workers' metrics
        (:mod:`kubeworkers.stats`). A bad window is a :class:`ValueError`."""
        window_s = stats.parse_window(window)
        return (yield from stats.stats_plan(self.namespace, pool, window_s))


def _awaited(
    op: Callable[Concatenate[_Jobs, P], Plan[T]],
) -> Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]]:
    """An ``AsyncClient`` method that awaits the plan of ``op``."""

    @functools.wraps(op)
    async def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await redis_ops.run(self.redis, op(self._jobs, *args, **kwargs))

    return method


def _blocking(op: Callable[Concatenate[_Jobs, P], Plan[T]]) -> Callable[Concatenate[Client, P], T]:
    """A ``Client`` method that runs the plan of ``op`` to its end."""

    @functools.wraps(op)
    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return redis_ops.run_sync(self.redis, op(self._jobs, *args, **kwargs))

    return method


C = TypeVar("C", redis.Redis, aioredis.Redis)


class _Client(Generic[C]):
    """What both clients hold: a connection (their own, or one given), a namespace, a registry.

    ``redis_url`` may be a ``redis+sentinel://`` URL (:mod:`kubeworkers.connection`): the client
    then follows the master across failovers; or a ``redis+cluster://`` URL: every pool's keys are
    on the master of the pool's slot, and the client follows slot moves and failovers. With ``durable`` (a
    :class:`~kubeworkers.queue.Durability`), every submit returns only once that many replicas
    have the jobs, else raises :class:`~kubeworkers.queue.NotReplicatedError`.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        namespace: str = "default",
        *,
        connection: C | None = None,
        registry: Registry | None = None,
        durable: queue.Durability | None = None,
    ) -> None:
        if connection is None and redis_url is None:
            raise ValueError("give a redis_url or a connection")
        self.redis: C = connection if connection is not None else self._connect(str(redis_url))
        if durable is not None and is_cluster_client(self.redis):
            # WAIT has no key, so a cluster client has no node to send it to, and no connection
            # that made the writes it would count (docs/scaling-out.md, *Redis Cluster*).
            raise ValueError("a durable submit (WAIT for replicas) is not available on a Redis Cluster")
        self._owns_connection = connection is None
        self.namespace = namespace
        self._jobs = _Jobs(namespace, registry if registry is not None else default_registry, durable)

    def _connect(self, url: str) -> C:
        raise NotImplementedError


class AsyncClient(_Client[aioredis.Redis]):
    """Submit and inspect jobs from asyncio code. Use ``async with AsyncClient(url) as c: ...``."""

    def _connect(self, url: str) -> aioredis.Redis:
        return connection.connect_async(url)

    submit = _awaited(_Jobs.submit)
    submit_sequence = _awaited(_Jobs.submit_sequence)
    submit_many = _awaited(_Jobs.submit_many)
    get = _awaited(_Jobs.get)
    wait = _awaited(_Jobs.wait)
    cancel = _awaited(_Jobs.cancel)
    children = _awaited(_Jobs.children)
    wait_many = _awaited(_Jobs.wait_many)
    stats = _awaited(_Jobs.stats)

    @overload
    async def result(self, job_id: str, model: type[M], timeout: float | None = None, *,  # noqa: ASYNC109
                     pool: str | None = None) -> M: ...
    @overload
    async def result(self, job_id: str, model: None = None, timeout: float | None = None, *,  # noqa: ASYNC109
                     pool: str | None = None) -> Any: ...
    async def result(self, job_id: str, model: type[M] | None = None, timeout: float | None = None, *,  # noqa: ASYNC109
                     pool: str | None = None) -> M | Any:
        """See :meth:`_Jobs.result`: the job's output (as ``model``), or its :class:`JobFailedError`."""
        return await redis_ops.run(self.redis, self._jobs.result(job_id, model, timeout, pool=pool))

    def as_completed(
        self, job_ids: Iterable[str], timeout: float | None = None, *, pool: str | None = None
    ) -> AsyncIterator[JobRecord]:
        """``async for record in c.as_completed(ids, 60)``: each job's finished record as it
        finishes. Each poll reads every unfinished record in one pipeline; :class:`TimeoutError`
        naming the unfinished ids once ``timeout`` seconds have passed since this call."""
        state = self._jobs.completions(job_ids, timeout, pool)

        async def records() -> AsyncIterator[JobRecord]:
            while state.pending:
                for record in await redis_ops.run(self.redis, state.next_round()):
                    yield record

        return records()

    async def aclose(self) -> None:
        if self._owns_connection:
            await connection.aclose(self.redis)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class Client(_Client[redis.Redis]):
    """Blocking twin of :class:`AsyncClient`: ``Client(url).submit("pool", "handler", {...})``."""

    def _connect(self, url: str) -> redis.Redis:
        return connection.connect(url)

    submit = _blocking(_Jobs.submit)
    submit_sequence = _blocking(_Jobs.submit_sequence)
    submit_many = _blocking(_Jobs.submit_many)
    get = _blocking(_Jobs.get)
    wait = _blocking(_Jobs.wait)
    cancel = _blocking(_Jobs.cancel)
    children = _blocking(_Jobs.children)
    wait_many = _blocking(_Jobs.wait_many)
    stats = _blocking(_Jobs.stats)

    @overload
    def result(self, job_id: str, model: type[M], timeout: float | None = None, *,
               pool: str | None = None) -> M: ...
    @overload
    def result(self, job_id: str, model: None = None, timeout: float | None = None, *,
               pool: str | None = None) -> Any: ...
    def result(self, job_id: str, model: type[M] | None = None, timeout: float | None = None, *,
               pool: str | None = None) -> M | Any:
        """See :meth:`_Jobs.result`: the job's output (as ``model``), or its :class:`JobFailedError`."""
        return redis_ops.run_sync(self.redis, self._jobs.result(job_id, model, timeout, pool=pool))

    def as_completed(
        self, job_ids: Iterable[str], timeout: float | None = None, *, pool: str | None = None
    ) -> Iterator[JobRecord]:
        """``for record in client.as_completed(ids, 60)``: each job's finished record as it
        finishes. Each poll reads every unfinished record in one pipeline; :class:`TimeoutError`
        naming the unfinished ids once ``timeout`` seconds have passed since this call."""
        state = self._jobs.completions(job_ids, timeout, pool)

        def records() -> Iterator[JobRecord]:
            while state.pending:
                yield from redis_ops.run_sync(self.redis, state.next_round())

        return records()

    def close(self) -> None:
        if self._owns_connection:
            connection.close(self.redis)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
