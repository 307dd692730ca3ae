"""The worker <-> Lua wire protocol: the arguments and replies of ``take.lua``, ``settle.lua`` and ``reap.lua``.

Python's view of what the worker's scripts take and return is declared here and nowhere else:
the argument lists (:func:`take_args`, :func:`settle_args`, :func:`reap_args`), the writes
``settle.lua`` applies (:class:`FinishWrite`, :class:`RetryWrite`, :class:`RequeueWrite`,
:class:`ProgressWrite`) and its results (:func:`write_error`), ``take.lua``'s reply
(:class:`Taken`, with its :class:`Verdict`) and ``reap.lua``'s (:class:`Reaped`). ``tests/unit/test_worker_wire.py``
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
    #: False for a job that failed before any handler ran (left out of the duration statistics).
    ran: bool
    #: The :class:`~kubeworkers.protocol.JobEvent` JSON appended to the events stream, without
    #: the output (the script splices it in, so it crosses the wire once).
    event: str
    #: '' for none.
    dead_letter_reason: str
    #: The attempt this write ends: applied only while the record is Running exactly it.
    attempt: int


class RetryWrite(_Delivery):
    """Park a failed attempt in the delayed set until ``due`` (unix seconds, as decimal text)."""

    kind: Literal["retry"]
    due: str
    error: str
    message: str
    event: str
    attempt: int
    #: The attempt's duration, seconds as decimal text; '' when no handler ran (statistics).
    duration: str


class RequeueWrite(_Delivery):
    """Hand a delivery back to the end of its stream; ``uncount`` gives its attempt back."""

    kind: Literal["requeue"]
    message: str
    uncount: bool
    #: The consumer that must hold the entry (the worker, or its reaper's consumer).
    owner: str


class ProgressWrite(_Delivery):
    """Record a running job's progress (``progress``: the fraction, as decimal text)."""

    kind: Literal["progress"]
    progress: str
    message: str
    event: str


class WaitWrite(_Delivery):
    """End the attempt with the job Waiting for its children (fan-out): ``then`` is the continuation
    handler, ``input`` the JSON the handler passed to ``ctx.wait`` (see ``lua/children.lua``)."""

    kind: Literal["wait"]
    then: str
    input: str
    message: str
    event: str
    attempt: int
    #: The attempt's duration, seconds as decimal text (statistics).
    duration: str

class AdvanceWrite(_Delivery):
    """End a sequence's step that succeeded (not its last): record its output, make ``next`` (the next
    step's message JSON) the record's message and put it on the same stream, attempts reset."""

    kind: Literal["advance"]
    #: This step's output as JSON text (kept in the record as ``step_output:<index>``).
    output: str
    next: str
    #: The next step's handler (the entry's ``h`` field).
    handler: str
    #: The next step's :class:`~kubeworkers.protocol.StepRef` JSON (the record's ``step`` field).
    step: str
    #: The 0-based index of the step that succeeded.
    index: int
    #: The next step's attempt limit as text ('' for its handler's).
    max_attempts: str
    message: str
    duration: str
    #: The Queued event of the next step (attempt 0).
    event: str
    attempt: int

Write = FinishWrite | RetryWrite | RequeueWrite | ProgressWrite | WaitWrite | AdvanceWrite

#: The write kinds, by the name ``settle.lua`` dispatches on.
WRITE_SHAPES: dict[str, type[Any]] = {
    "finish": FinishWrite,
    "retry": RetryWrite,
    "requeue": RequeueWrite,
    "progress": ProgressWrite,
    "wait": WaitWrite,
    "advance": AdvanceWrite,
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
    dead_letter_maxlen: int,
    writes: Sequence[Write],
) -> list[Arg]:
    """``settle.lua``'s ARGV, in its order; the writes encoded as one JSON list."""
    return [group, now, prefix, events, pointer_prefix, result_ttl, worker, dead_letter_maxlen, encode_writes(writes)]


def encode_writes(writes: Sequence[Write]) -> str:
    """The writes as the JSON list ``settle.lua`` decodes."""
    return json.dumps(writes)


def requeue(stream: int, entry: str, job_id: str, message: str, *, uncount: bool, owner: str) -> RequeueWrite:
    """A hand-back of ``entry`` held by ``owner`` (see :class:`RequeueWrite`)."""
    return RequeueWrite(kind="requeue", stream=stream, entry=entry, job_id=job_id, message=message,
                        uncount=uncount, owner=owner)


#: How a result of ``settle.lua`` says that a write could not be applied.
WRITE_ERROR = b"error: "


def write_error(result: Any) -> str | None:
    """Why ``settle.lua`` could not apply a write, from its result; None when it could."""
    if isinstance(result, bytes) and result.startswith(WRITE_ERROR):
        return result[len(WRITE_ERROR):].decode(errors="replace")
    return None


# --------------------------------------------------------------------------- take.lua


class Verdict(enum.StrEnum):
    """What ``take.lua`` decided about one delivered entry."""

    #: The worker runs the attempt (the record is now Running).
    RUN = "run"
    #: No record (deleted): entry dropped.
    GONE = "gone"
    #: The record belongs to another incarnation (uid): entry dropped.
    STALE = "stale"
    #: The record's current delivery is another entry: this one dropped.
    DUPLICATE = "duplicate"
    #: The job already finished: entry dropped.
    DONE = "done"
    #: Cancelled before it started: recorded Cancelled, entry dropped.
    CANCELLED = "cancelled"
    #: Every allowed attempt was lost with its worker: dead-lettered.
    DEAD = "dead"
    #: Unreadable message: entry dropped.
    BAD = "bad"
    #: Its handler is at its concurrency limit on this worker: handed back to the end of its stream.
    DEFERRED = "deferred"
    #: (Mode 'given') not pending for this worker on this server: the read reached another master
    #: (a failover fell between the read and the take) or another worker holds it. Left unchanged for
    #: this master's own delivery.
    UNDELIVERED = "undelivered"


class Given(NamedTuple):
    """One entry pending for this worker that no take decided (a take whose reply was lost),
    passed to ``take.lua`` in mode 'given'."""

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
    #: '' when the message was unreadable (verdict ``bad``).
    job_id: str
    uid: str
    handler: str
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
    wake: bool = False,
    result_ttl: int,
    default_max_attempts: int,
    handler_max_attempts: str,
    handler_free: str = "{}",
    dead_letter_maxlen: int,
    aging_ms: int = 0,
    given: Iterable[Given] = (),
) -> list[Arg]:
    """``take.lua``'s ARGV, in its order (``handler_max_attempts``: JSON ``{handler: max}``;
    ``handler_free``: JSON ``{handler: free slots}`` of the handlers with a concurrency limit;
    ``aging_ms``: the priority aging period, 0 for strict priority order; ``wake``: the reply
    ends with the ids to block from, :func:`parse_take_woken`)."""
    args: list[Arg] = [
        mode, group, consumer, count, now, prefix, events, "1" if wake else "", result_ttl, default_max_attempts,
        handler_max_attempts, handler_free, dead_letter_maxlen, aging_ms,
    ]
    for entry in given:
        args.extend(entry)
    return args


#: Items per entry in ``take.lua``'s flat reply.
TAKEN_WIDTH = len(Taken._fields)


#: Each :class:`Verdict` by its bytes in the reply (an enum call per entry costs more than the rest
#: of its decoding).
_VERDICTS: dict[bytes, Verdict] = {v.value.encode(): v for v in Verdict}


def _verdict(raw: bytes) -> Verdict:
    verdict = _VERDICTS.get(raw)
    return verdict if verdict is not None else Verdict(raw.decode())  # ValueError: not a verdict


def parse_take(flat: Sequence[Any]) -> list[Taken]:
    """Decode ``take.lua``'s flat reply into one :class:`Taken` per entry (fields in
    :class:`Taken`'s order)."""
    return [
        Taken(
            int(flat[i]),  # stream
            flat[i + 1].decode(),  # entry
            flat[i + 2].decode(errors="replace"),  # job_id
            flat[i + 3].decode(errors="replace"),  # uid
            flat[i + 4].decode(errors="replace"),  # handler
            flat[i + 5],  # message
            _verdict(flat[i + 6]),
            int(flat[i + 7]),  # attempt
            int(flat[i + 8]),  # max_attempts
        )
        for i in range(0, len(flat), TAKEN_WIDTH)
    ]


def parse_take_woken(reply: Sequence[Any]) -> tuple[list[Taken], list[str] | None]:
    """Decode a ``take.lua`` reply of mode 'read' with ``wake``: the entries, and the ids a
    blocking ``XREAD`` of the streams starts from (None when the take did not read every stream
    to its end: the next take reads without blocking)."""
    ids = reply[-1]
    return parse_take(reply[:-1]), [i.decode() for i in ids] if ids else None


# --------------------------------------------------------------------------- reap.lua


def reap_args(*, group: str, reaper: str, lease_ms: int, gap_ms: int, count: int) -> list[Arg]:
    """``reap.lua``'s ARGV, in its order (``count`` 0: record the pulse only)."""
    return [group, reaper, lease_ms, gap_ms, count]


class Claimed(NamedTuple):
    """An expired entry ``reap.lua`` claimed for the reaper to hand back."""

    stream: int
    entry: str
    job_id: str


class Reaped(NamedTuple):
    """``reap.lua``'s reply."""

    #: 'pulse', 'wait' (Redis has been back for less than a lease) or 'claimed'.
    status: str
    wait_ms: int
    claimed: list[Claimed]


def parse_reap(flat: Sequence[Any]) -> Reaped:
    width = len(Claimed._fields)
    return Reaped(
        status=flat[0].decode(),
        wait_ms=int(flat[1]),
        claimed=[
            Claimed(int(flat[i]), flat[i + 1].decode(), flat[i + 2].decode(errors="replace"))
            for i in range(2, len(flat), width)
        ],
    )
