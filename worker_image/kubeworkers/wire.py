"""The worker <-> Lua wire protocol: the arguments and replies of ``lua/take.lua`` and ``lua/settle.lua``.

Python's view of what the two hot scripts take and return is declared here and nowhere else:
the argument lists (:func:`take_args`, :func:`settle_args`), the writes ``settle.lua`` applies
(:class:`FinishWrite`, :class:`RetryWrite`, :class:`RequeueWrite`, :class:`ProgressWrite`), and
``take.lua``'s reply (:class:`Taken`, with its :class:`Verdict`). ``tests/unit/test_worker_wire.py``
checks every name here against the scripts' header comments, so the two cannot drift apart.

The writes are ``TypedDict``\\ s: on the wire they are JSON objects with readable field names, and
in Python they cost what a dict literal costs (a busy worker encodes thousands per second).
Pure: no Redis, no event loop.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Sequence
from typing import Any, Literal, NamedTuple, TypedDict

#: One argument of a Redis command or script call.
Arg = str | bytes | int | float


# --------------------------------------------------------------------------- settle.lua


class _Delivery(TypedDict):
    """Which delivery a write is about: every write names it."""

    #: 1-based index of the entry's stream in ``PoolKeys.streams`` (the script's KEYS).
    stream: int
    #: The stream entry id (the delivery's fencing token).
    entry: str
    job_id: str


class FinishWrite(_Delivery):
    """End a job: Succeeded, Failed (dead-lettered when ``dead_letter_reason`` is set) or Cancelled."""

    kind: Literal["finish"]
    state: str
    #: The output as JSON text ('' for none).
    output: str
    #: The :class:`~kubeworkers.protocol.JobError` as JSON text ('' for none).
    error: str
    message: str
    #: Seconds the attempt ran, as decimal text.
    duration: str
    #: The :class:`~kubeworkers.protocol.JobEvent` JSON appended to the events stream.
    event: str
    #: '' for none.
    dead_letter_reason: str
    attempt: int


class RetryWrite(_Delivery):
    """Park a failed attempt in the delayed set until ``due`` (unix seconds, as decimal text)."""

    kind: Literal["retry"]
    due: str
    error: str
    message: str
    event: str


class RequeueWrite(_Delivery):
    """Hand a delivery back to the end of its stream; ``uncount`` gives its attempt back."""

    kind: Literal["requeue"]
    message: str
    uncount: bool


class ProgressWrite(_Delivery):
    """Record a running job's progress (``progress``: the fraction, as decimal text)."""

    kind: Literal["progress"]
    progress: str
    message: str
    event: str


Write = FinishWrite | RetryWrite | RequeueWrite | ProgressWrite

#: The write kinds, by the name ``settle.lua`` dispatches on.
WRITE_SHAPES: dict[str, type[Any]] = {
    "finish": FinishWrite,
    "retry": RetryWrite,
    "requeue": RequeueWrite,
    "progress": ProgressWrite,
}


def settle_args(
    *,
    group: str,
    now: str,
    prefix: str,
    events: str,
    pointer_prefix: str,
    result_ttl: int,
    worker: str,
    writes: Sequence[Write],
) -> list[Arg]:
    """``settle.lua``'s ARGV, in its order; the writes encoded as one JSON list."""
    return [group, now, prefix, events, pointer_prefix, result_ttl, worker, encode_writes(writes)]


def encode_writes(writes: Sequence[Write]) -> str:
    """The writes as the JSON list ``settle.lua`` decodes."""
    return json.dumps(writes)


def requeue(stream: int, entry: str, job_id: str, message: str, *, uncount: bool) -> RequeueWrite:
    """A hand-back of ``entry`` (see :class:`RequeueWrite`)."""
    return RequeueWrite(kind="requeue", stream=stream, entry=entry, job_id=job_id, message=message, uncount=uncount)


# --------------------------------------------------------------------------- take.lua


class Verdict(enum.StrEnum):
    """What ``take.lua`` decided about one delivered entry."""

    #: The worker runs the attempt (the record is now Running).
    RUN = "run"
    #: No record (deleted): entry dropped.
    GONE = "gone"
    #: The record belongs to another incarnation (uid): entry dropped.
    STALE = "stale"
    #: The job already finished: entry dropped.
    DONE = "done"
    #: Cancelled before it started: recorded Cancelled, entry dropped.
    CANCELLED = "cancelled"
    #: Every allowed attempt was lost with its worker: dead-lettered.
    DEAD = "dead"
    #: Unreadable message: entry dropped.
    BAD = "bad"


class Given(NamedTuple):
    """One entry a blocking ``XREADGROUP`` delivered, passed to ``take.lua`` in mode 'given'."""

    stream: int
    entry: bytes | str
    message: bytes | str
    job_id: bytes | str
    uid: bytes | str
    handler: bytes | str


class Taken(NamedTuple):
    """``take.lua``'s decision about one entry."""

    stream: int
    entry: str
    #: The message JSON as stored in the entry.
    message: bytes
    verdict: Verdict
    #: The attempt the worker runs (``run``), else the attempts so far.
    attempt: int
    max_attempts: int


def take_args(
    *,
    mode: Literal["read", "given"],
    group: str,
    consumer: str,
    count: int,
    now: str,
    prefix: str,
    events: str,
    pointer_prefix: str,
    result_ttl: int,
    default_max_attempts: int,
    handler_max_attempts: str,
    given: Iterable[Given] = (),
) -> list[Arg]:
    """``take.lua``'s ARGV, in its order (``handler_max_attempts``: JSON ``{handler: max}``)."""
    args: list[Arg] = [
        mode, group, consumer, count, now, prefix, events, pointer_prefix, result_ttl, default_max_attempts,
        handler_max_attempts,
    ]
    for entry in given:
        args.extend(entry)
    return args


#: Items per entry in ``take.lua``'s flat reply.
TAKEN_WIDTH = len(Taken._fields)


def parse_take(flat: Sequence[Any]) -> list[Taken]:
    """Decode ``take.lua``'s flat reply into one :class:`Taken` per entry."""
    return [
        Taken(
            stream=int(flat[i]),
            entry=flat[i + 1].decode(),
            message=flat[i + 2],
            verdict=Verdict(flat[i + 3].decode()),
            attempt=int(flat[i + 4]),
            max_attempts=int(flat[i + 5]),
        )
        for i in range(0, len(flat), TAKEN_WIDTH)
    ]
