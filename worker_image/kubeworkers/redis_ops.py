"""Redis operations written once, run awaited or blocking; the one retry policy and transient-error list.

An operation is a *plan*: a generator that yields steps (:class:`Command`, :class:`Pipeline`,
:class:`Pause`, :class:`Start`/:class:`Join`) and is sent each step's reply, or has the step's
error thrown in where it yielded. :func:`run` carries a plan out on a ``redis.asyncio.Redis``,
:func:`run_sync` on a ``redis.Redis``. So ``queue``'s functions and their ``*_sync`` twins, and
the SDK's ``AsyncClient`` and ``Client``, share one body per operation, and every repeatable
call is repeated by :func:`retried` under the same :class:`RetryPolicy`.

The plans themselves do no I/O, so they can be read (and tested) as plain Python.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.cluster
from redis.exceptions import (
    ClusterDownError,
    ClusterError,
    NoScriptError,
    ReadOnlyError,
    SlotNotCoveredError,
    TryAgainError,
)

T = TypeVar("T")

#: Errors that say "Redis could not be reached, did not answer in time, or is not the master any
#: more", not "the request was wrong": a caller may wait and try again. ``READONLY`` is the answer
#: of a master that a failover demoted to a replica: the write did not happen, and the next
#: connection finds the new master (a Sentinel-managed pool turns it into a ``ConnectionError``
#: and asks the Sentinels again; see :mod:`kubeworkers.connection`). A ``MasterNotFoundError``
#: (no Sentinel knows a master, mid-failover) is a ``ConnectionError``. (redis-py's async client
#: raises the same classes.)
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError, redis.TimeoutError, ReadOnlyError, ConnectionError, OSError,
    # A Redis Cluster mid-failover or mid-migration: no master for a slot yet (CLUSTERDOWN, a slot
    # not covered), redirections that did not settle within the client's budget, TRYAGAIN.
    ClusterError, TryAgainError, SlotNotCoveredError,
)


#: The script calls (:mod:`kubeworkers.scripts`), by method name: sent as raw commands (:meth:`Command.send`).
_SCRIPT_CALLS = {"evalsha": "EVALSHA", "eval": "EVAL"}


class Command:
    """One Redis command, by redis-py method name: ``Command("hgetall", key)``."""

    __slots__ = ("args", "kwargs", "method")

    def __init__(self, method: str, *args: Any, **kwargs: Any) -> None:
        self.method = method
        self.args = args
        self.kwargs = kwargs

    def send(self, r: Any) -> Any:
        """Issue the command on ``r`` (a client or a pipeline): the reply, or an awaitable of it.

        A script call goes through ``execute_command``, which is what redis-py's ``evalsha`` and
        ``eval`` do: the blocking cluster pipeline refuses the ``evalsha`` method (it would send a
        keyless script anywhere) but routes the command by its first key, as kubeworkers' are."""
        if self.method in _SCRIPT_CALLS:
            return r.execute_command(_SCRIPT_CALLS[self.method], *self.args)
        return getattr(r, self.method)(*self.args, **self.kwargs)

    def __repr__(self) -> str:
        return f"Command({self.method!r}, ...)"


@dataclass(frozen=True, slots=True)
class Pipeline:
    """Commands sent in one round trip (not a transaction); the reply is the list of their replies.

    An error reply raises the first error, unless ``errors_as_replies``: then every command's
    reply is in the list, an error reply as its exception (so a caller can tell which commands
    ran, e.g. which ``EVALSHA`` answered ``NOSCRIPT``).
    """

    commands: Sequence[Command]
    errors_as_replies: bool = False

    def send(self, r: Any) -> Any:
        pipe = r.pipeline(transaction=False)
        for command in self.commands:
            command.send(pipe)
        return pipe.execute(raise_on_error=not self.errors_as_replies)


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait ``seconds`` (``asyncio.sleep`` or ``time.sleep``, by driver)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Start:
    """Begin another plan without waiting for it; the reply is a handle for :class:`Join`.

    Awaited, the plan runs concurrently with the rest (e.g. one chunk of a bulk submit is in
    flight while the next is built); blocking, it simply runs to the end first.
    """

    plan: Generator[Any, Any, Any]


@dataclass(frozen=True, slots=True)
class Join:
    """Wait for a started plan; the reply is its result (or its error is raised)."""

    handle: Any


Step = Command | Pipeline | Pause | Start | Join
Plan = Generator[Step, Any, T]


@dataclass(frozen=True)
class RetryPolicy:
    """How an operation that is safe to repeat is repeated after a transient error."""

    #: Repeats after the first failure.
    retries: int = 3
    #: Seconds before repeat ``n`` is ``n * delay``.
    delay: float = 0.1

    def pause(self, failures: int) -> float:
        return self.delay * failures


#: The one retry policy of the SDK and the queue operations (a Redis restart leaves pooled
#: sockets dead: the first call after it fails, the next one reconnects).
RETRY = RetryPolicy()


def retried(
    step: Callable[[], Step],
    *,
    idempotent: bool,
    unknown_script: Callable[[], Step] | None = None,
    policy: RetryPolicy = RETRY,
) -> Plan[Any]:
    """Send ``step()`` until it answers: after ``NOSCRIPT``, send ``unknown_script()`` instead
    (the same call with the script's source, ``EVAL``: a script that was not known did not run,
    so this is always safe); after a transient error, send again only if the step is
    ``idempotent``. Each at most ``policy.retries`` times, counted apart: a failover brings
    both, connection errors first and ``NOSCRIPT`` from the new master after them, and the
    errors must not use up the budget of the one ``EVAL`` that answers it.

    ``NOSCRIPT`` is answered by a Redis whose script cache is empty: after a restart, and after
    a failover (scripts are not replicated, so a promoted replica knows none). ``EVAL`` carries
    the source on the same connection that was refused, so the retry cannot land on a node
    other than the one that was just told the script, as a separate ``SCRIPT LOAD`` could.
    """
    failures = unknown = 0
    current = step
    while True:
        try:
            return (yield current())
        except NoScriptError:
            unknown += 1
            if unknown_script is None or unknown > policy.retries:
                raise
            current = unknown_script
        except TRANSIENT_ERRORS:
            failures += 1
            if not idempotent or failures > policy.retries:
                raise
            yield Pause(policy.pause(failures))


# --------------------------------------------------------------------------- drivers

#: What a cluster pipeline answers, per command, when a node is gone or a slot has no master:
#: with errors as replies redis-py neither retries nor refreshes its slot map for them.
_NODE_ERRORS = (redis.ConnectionError, redis.TimeoutError, ClusterDownError, SlotNotCoveredError)


def _is_cluster(r: Any) -> bool:
    return isinstance(r, redis.cluster.RedisCluster | aiocluster.RedisCluster)


def _node_error(step: Step, reply: Any) -> Exception | None:
    """A cluster pipeline's reply naming a lost node (see :data:`_NODE_ERRORS`), else None."""
    if isinstance(step, Pipeline) and step.errors_as_replies and isinstance(reply, list):
        return next((x for x in reply if isinstance(x, _NODE_ERRORS)), None)
    return None


@dataclass(slots=True)
class _Done:
    """A plan :class:`Start`-ed by the blocking driver: it has already finished."""

    value: Any = None
    error: Exception | None = None


def _advance(plan: Plan[Any], reply: Any, error: Exception | None) -> Step | StopIteration:
    """Resume ``plan`` with a reply (or an error): its next step, or its end."""
    try:
        return plan.throw(error) if error is not None else plan.send(reply)
    except StopIteration as end:
        return end


async def run(r: aioredis.Redis, plan: Plan[T]) -> T:
    """Carry out ``plan`` on an asyncio client."""
    started: list[asyncio.Future[Any]] = []
    reply: Any = None
    error: Exception | None = None
    try:
        while not isinstance(step := _advance(plan, reply, error), StopIteration):
            reply, error = None, None
            try:
                if isinstance(step, Pause):
                    await asyncio.sleep(step.seconds)
                elif isinstance(step, Start):
                    reply = asyncio.ensure_future(run(r, step.plan))
                    started.append(reply)
                elif isinstance(step, Join):
                    reply = await step.handle
                else:
                    reply = await step.send(r)
                    if _is_cluster(r) and (lost := _node_error(step, reply)) is not None:
                        # A node died (a failover): drop the slot map, as redis-py's own pipeline
                        # retry does, and fail the step as a lost connection (the plan retries).
                        await r.aclose()
                        raise lost
            except Exception as exc:
                error = exc
        return step.value  # type: ignore[no-any-return]
    finally:
        for future in started:
            future.cancel()
        plan.close()


def run_sync(r: redis.Redis, plan: Plan[T]) -> T:
    """Carry out ``plan`` on a blocking client."""
    reply: Any = None
    error: Exception | None = None
    try:
        while not isinstance(step := _advance(plan, reply, error), StopIteration):
            reply, error = None, None
            try:
                if isinstance(step, Pause):
                    time.sleep(step.seconds)
                elif isinstance(step, Start):
                    try:
                        reply = _Done(value=run_sync(r, step.plan))
                    except Exception as exc:
                        reply = _Done(error=exc)
                elif isinstance(step, Join):
                    if step.handle.error is not None:
                        raise step.handle.error
                    reply = step.handle.value
                else:
                    reply = step.send(r)
                    if _is_cluster(r) and (lost := _node_error(step, reply)) is not None:
                        r.nodes_manager.initialize()  # type: ignore[attr-defined]  # (see run)
                        raise lost
            except Exception as exc:
                error = exc
        return step.value  # type: ignore[no-any-return]
    finally:
        plan.close()
