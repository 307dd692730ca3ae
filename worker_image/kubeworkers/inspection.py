"""``kubeworkers jobs list`` and ``kubeworkers jobs describe``: finding jobs and reading one whole.

A pool may hold a million finished records, so ``list`` never scans keys: it pages through the
pool's jobs index (``lua/jobindex.lua``), sorted sets of job ids by time — one of the live jobs
(scored by enqueue time) and one per finished state (scored by finish time, bounded by
:data:`~kubeworkers.protocol.JOB_INDEX_MAXLEN` and the result TTL) — newest first, merging the
sets a query needs (with ``--handler``, the same sets kept for that handler alone), and resolves
one page of ids to records with one pipeline of ``HMGET``. An id
whose record expired, or whose record is no longer in that index's state (a rerun, a new
incarnation of the id), is skipped: the index is bounded, the record is the truth.

``describe`` reads one record whole, with the attempt history the scripts keep in it
(field ``attempt_log``).

The parsing and formatting here are pure; the reads are two functions over a blocking client.
"""

from __future__ import annotations

import collections
import json
import re
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from pydantic import BaseModel, ValidationError

from kubeworkers import queue
from kubeworkers.protocol import FINISHED_STATES, JobError, JobRecord, JobState, PoolKeys, is_sdk_job

#: The index of the jobs that have not finished (``PoolKeys.index(LIVE)``).
LIVE = "live"
#: ``--state Delayed``: a Queued job with no stream entry, waiting for its start time or a retry's backoff.
DELAYED = "Delayed"
#: What ``--state`` takes (case does not matter).
STATES: tuple[str, ...] = (*(s.value for s in JobState), DELAYED)
FINISHED_NAMES = frozenset(s.value for s in FINISHED_STATES)
#: Default and most rows of one ``jobs list``.
DEFAULT_LIMIT = 50
MAX_LIMIT = 10_000
#: Most index entries one ``jobs list`` reads before it stops looking for more matches (a live
#: ``--state`` filter that matches few jobs); it then says so on stderr.
SCAN_BUDGET = 200_000
#: Record fields a ``jobs list`` row needs (not the input or output, which may be large).
ROW_FIELDS = ("job_id", "uid", "namespace", "pool", "handler", "priority", "state", "attempts", "max_attempts",
              "run", "worker", "entry", "enqueued_at", "started_at", "finished_at", "updated_at", "progress",
              "message", "error", "not_before")

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str) -> float:
    """``--since``: a duration back from now in seconds: ``90s``, ``15m``, ``1h``, ``1h30m``,
    ``2d``, ``1w``, or plain seconds (``3600``). :class:`ValueError` for anything else."""
    t = text.strip().lower()
    try:
        seconds = float(t)
    except ValueError:
        pos, seconds = 0, 0.0
        for m in _DURATION.finditer(t):
            if m.start() != pos:
                break
            seconds += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
            pos = m.end()
        if pos != len(t) or not t:
            raise ValueError(f"--since must be a duration such as 90s, 15m, 1h, 1h30m or 2d, not {text!r}") from None
    if seconds <= 0:
        raise ValueError(f"--since must be more than zero, not {text!r}")
    return seconds


def parse_state(text: str) -> str:
    """``--state``: a job state (or ``Delayed``), any case, as written in records."""
    for state in STATES:
        if state.lower() == text.strip().lower():
            return state
    raise ValueError(f"--state must be one of {', '.join(STATES)}, not {text!r}")


def parse_limit(value: int) -> int:
    if not 1 <= value <= MAX_LIMIT:
        raise ValueError(f"--limit must be between 1 and {MAX_LIMIT}, not {value}")
    return value


def indexes_for(state: str | None) -> list[str]:
    """The index names (:meth:`PoolKeys.index`) a query for ``state`` (None: any) reads."""
    if state is None:
        return [LIVE, *(s.value for s in JobState if s in FINISHED_STATES)]
    if state in {s.value for s in FINISHED_STATES}:
        return [state]
    return [LIVE]


def shown_state(record: JobRecord) -> str:
    """The state a person is shown: ``Delayed`` for a Queued job not on its stream yet."""
    if record.state is JobState.QUEUED and not record.entry:
        return DELAYED
    return record.state.value


@dataclass(frozen=True)
class Query:
    """One ``jobs list``."""

    state: str | None = None
    handler: str | None = None
    since_seconds: float | None = None
    limit: int = DEFAULT_LIMIT

    def matches(self, index: str, fields: dict[str, str]) -> bool:
        """Whether a record (its ``ROW_FIELDS`` as text) found in ``index`` belongs in the answer (the
        record is the truth): checked on the raw fields, so a filter that rejects most ids stays cheap."""
        state = fields.get("state")
        if index == LIVE:
            if state in FINISHED_NAMES:
                return False
        elif state != index:
            return False
        shown = DELAYED if state == JobState.QUEUED.value and not fields.get("entry") else state
        if self.state is not None and shown != self.state:
            return False
        return self.handler is None or fields.get("handler") == self.handler


@dataclass
class Listing:
    """What ``jobs list`` found, newest first; ``scanned`` index entries read, ``exhausted`` when
    the scan stopped at :data:`SCAN_BUDGET` before the limit was reached."""

    rows: list[JobRecord] = field(default_factory=list)
    scanned: int = 0
    exhausted: bool = False


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _fields(values: Sequence[Any]) -> dict[str, str]:
    return {name: v for name, raw in zip(ROW_FIELDS, values, strict=True) if (v := _text(raw)) is not None}


def _row(fields: dict[str, str]) -> JobRecord | None:
    if "state" not in fields:
        return None  # expired
    try:
        return JobRecord.from_hash(fields)
    except (ValidationError, ValueError):
        return None


class _Source:
    """One index read newest first, a batch at a time."""

    def __init__(self, key: str, name: str) -> None:
        self.key, self.name = key, name
        self.offset = 0
        self.buffer: collections.deque[tuple[str, float]] = collections.deque()
        self.done = False


def list_jobs(r: redis.Redis, keys: PoolKeys, query: Query, *, now: float | None = None) -> Listing:
    """The jobs of one pool matching ``query``, newest first (see the module docstring)."""
    now = time.time() if now is None else now
    low: str | float = "-inf" if query.since_seconds is None else now - query.since_seconds
    sources = [_Source(keys.index(name) if query.handler is None else keys.handler_index(name, query.handler), name)
               for name in indexes_for(query.state)]
    batch = min(max(query.limit * 2, 100), 5000)
    found = Listing()
    while len(found.rows) < query.limit:
        empty = [s for s in sources if not s.buffer and not s.done]
        if empty:
            pipe = r.pipeline(transaction=False)
            for s in empty:
                pipe.zrevrangebyscore(s.key, "+inf", low, start=s.offset, num=batch, withscores=True)
            for s, got in zip(empty, pipe.execute(), strict=True):
                s.buffer = collections.deque((_text(member) or "", float(score)) for member, score in got)
                s.offset += len(s.buffer)
                s.done = len(s.buffer) < batch
        candidates = list(_merged(sources, batch))
        if not candidates:
            break
        found.scanned += len(candidates)
        pipe = r.pipeline(transaction=False)
        for _, job_id in candidates:
            pipe.hmget(keys.record(job_id), ROW_FIELDS)
        for (index, _), values in zip(candidates, pipe.execute(), strict=True):
            fields = _fields(values)
            record = _row(fields) if query.matches(index, fields) else None
            if record is not None:
                found.rows.append(record)
                if len(found.rows) == query.limit:
                    break
        batch = min(batch * 2, 5000)  # a filter rejected ids: read further in bigger steps
        if found.scanned >= SCAN_BUDGET and len(found.rows) < query.limit:
            found.exhausted = any(s.buffer or not s.done for s in sources)
            break
    return found


def _merged(sources: list[_Source], most: int) -> Iterator[tuple[str, str]]:
    """Up to ``most`` (index, job id) newest first across ``sources``, stopping when a source that
    may have more runs out of its buffer (it must be read further before the order is known)."""
    for _ in range(most):
        live = [s for s in sources if s.buffer]
        if not live or any(not s.buffer and not s.done for s in sources):
            return
        best = max(live, key=lambda s: s.buffer[0][1])
        job_id, _ = best.buffer.popleft()
        yield best.name, job_id


class Attempt(BaseModel):
    """One attempt of a job, as ``lua/jobindex.lua`` records it in the record's ``attempt_log``."""

    attempt: int
    run: int = 0
    worker: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    outcome: str | None = None
    error: dict[str, Any] | None = None
    message: str | None = None


class UnknownJobError(LookupError):
    """No record of that job id (``jobs describe`` exits 1)."""


class AmbiguousJobError(LookupError):
    """The id is on several pools and none was given."""


@dataclass(frozen=True)
class Description:
    """Everything ``jobs describe`` shows."""

    record: JobRecord
    attempts: list[Attempt]
    job_object: str | None  # "<namespace>/<name>" of the Job CR behind the job, None for an SDK job


def describe_job(r: redis.Redis, namespace: str, pool: str | None, job_id: str) -> Description:
    """One job whole; :class:`UnknownJobError` / :class:`AmbiguousJobError` when it cannot be found."""
    if not pool:
        pools = queue.find_pools_sync(r, namespace, job_id)
        if len(pools) > 1:
            raise AmbiguousJobError(f"job {job_id} is on pools {', '.join(pools)}: pass --pool")
        if not pools:
            raise UnknownJobError(f"job {job_id}: not found in namespace {namespace}")
        pool = pools[0]
    raw: Any = r.hgetall(PoolKeys(namespace, pool).record(job_id))
    if not raw:
        raise UnknownJobError(f"job {job_id}: not found on pool {pool}")
    record = JobRecord.from_hash(raw)
    log = _text(raw.get(b"attempt_log", raw.get("attempt_log")))
    attempts: list[Attempt] = []
    if log:
        try:
            attempts = [Attempt.model_validate(a) for a in json.loads(log)]
        except (ValueError, TypeError):
            attempts = []
    job_object = None if is_sdk_job(record.job_id, record.uid) else record.job_id
    return Description(record, attempts, job_object)


# -- output -----------------------------------------------------------------------------------

def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ago(ts: float | None, now: float) -> str:
    if not ts:
        return "-"
    return _span(max(0.0, now - ts))


def _span(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    if seconds < 86400:
        return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"
    return f"{seconds // 86400:.0f}d{seconds % 86400 // 3600:02.0f}h"


def row_json(record: JobRecord) -> dict[str, Any]:
    """One ``jobs list --json`` line."""
    return {
        "job_id": record.job_id, "pool": record.pool, "namespace": record.namespace, "state": shown_state(record),
        "handler": record.handler, "attempts": record.attempts, "max_attempts": record.max_attempts,
        "run": record.run, "worker": record.worker, "enqueued_at": record.enqueued_at,
        "started_at": record.started_at, "finished_at": record.finished_at, "updated_at": record.updated_at,
        "progress": record.progress, "message": record.message,
        "error": None if record.error is None else {"type": record.error.type, "message": record.error.message},
        "job_object": None if is_sdk_job(record.job_id, record.uid) else record.job_id,
    }


def _duration(record: JobRecord) -> str:
    if record.started_at and record.finished_at:
        return _span(max(0.0, record.finished_at - record.started_at))
    return "-"


def table(records: Sequence[JobRecord], now: float) -> list[str]:
    """``jobs list``'s human table, a header and a line per job."""
    rows = [("JOB", "STATE", "HANDLER", "ATTEMPTS", "AGE", "DURATION", "MESSAGE")]
    for rec in records:
        when = rec.finished_at if rec.state.finished else (rec.updated_at or rec.enqueued_at)
        note = f"{rec.error.type}: {rec.error.message}" if rec.error and rec.state is not JobState.SUCCEEDED \
            else (rec.message or "")
        note = " ".join(note.split())
        rows.append((rec.job_id, shown_state(rec), rec.handler,
                     f"{rec.attempts}/{rec.max_attempts}" if rec.max_attempts else str(rec.attempts),
                     _ago(when, now), _duration(rec), note[:60] + ("…" if len(note) > 60 else "")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]]).rstrip() for row in rows]


def description_json(d: Description) -> dict[str, Any]:
    """``jobs describe --json``: the record, its attempts and the Job CR behind it."""
    return {**d.record.model_dump(mode="json"), "state_shown": shown_state(d.record),
            "attempt_history": [a.model_dump(mode="json") for a in d.attempts], "job_object": d.job_object}


def _error_lines(error: JobError) -> list[str]:
    lines = [f"  type:      {error.type}", f"  message:   {error.message}",
             f"  retryable: {'yes' if error.retryable else 'no'}"]
    if error.traceback:
        lines.append("  traceback:")
        lines += [f"    {line}" for line in error.traceback.rstrip().splitlines()]
    return lines


def describe_text(d: Description, now: float) -> list[str]:
    """``jobs describe``'s human form."""
    rec = d.record
    source = f"Job CR {d.job_object} (uid {rec.uid})" if d.job_object else "SDK (no Job CR)"
    lines = [
        f"Job:        {rec.job_id}",
        f"Pool:       {rec.namespace}/{rec.pool}",
        f"Source:     {source}",
        f"Handler:    {rec.handler}" + (f" (step {rec.step.index + 1} of {len(rec.step.names)}: "
                                        f"{rec.step.names[rec.step.index]})" if rec.step else ""),
        f"State:      {shown_state(rec)}" + (" (cancel requested)" if rec.cancel_requested else ""),
        f"Priority:   {rec.priority.value}",
        f"Attempts:   {rec.attempts}" + (f" of {rec.max_attempts}" if rec.max_attempts else "")
        + (f", run {rec.run}" if rec.run else ""),
        f"Enqueued:   {_when(rec.enqueued_at)}",
        f"Started:    {_when(rec.started_at)}",
        f"Finished:   {_when(rec.finished_at)}" + (f" (took {_duration(rec)})" if rec.finished_at else ""),
    ]
    if rec.not_before:
        lines.append(f"Not before: {_when(rec.not_before)}")
    if rec.progress is not None or rec.message:
        pct = "-" if rec.progress is None else f"{rec.progress * 100:.0f}%"
        lines.append(f"Progress:   {pct}" + (f"  {rec.message}" if rec.message else ""))
    if rec.parent:
        lines.append(f"Parent:     {rec.parent}")
    if rec.children is not None:
        c = rec.children
        lines.append(f"Children:   {c.total} (active {c.active}, succeeded {c.succeeded}, failed {c.failed}, "
                     f"cancelled {c.cancelled})" + (f"; continues with {rec.continuation}" if rec.continuation else ""))
    if rec.dead_letter:
        lines.append(f"Dead letter: {rec.dead_letter}")
    lines.append("Input:")
    lines += [f"  {line}" for line in json.dumps(rec.input, indent=2, sort_keys=True).splitlines()]
    if rec.output is not None:
        lines.append("Output:")
        lines += [f"  {line}" for line in json.dumps(rec.output, indent=2, sort_keys=True).splitlines()]
    if rec.error is not None:
        lines.append("Error:")
        lines += _error_lines(rec.error)
    lines.append("Attempts:" if d.attempts else "Attempts:   none recorded")
    if d.attempts:
        head = ("#", "RUN", "WORKER", "STARTED", "ENDED", "TOOK", "OUTCOME")
        rows = [head]
        for a in d.attempts:
            took = _span(a.ended_at - a.started_at) if a.ended_at and a.started_at else "-"
            outcome = a.outcome or ("running" if rec.state is JobState.RUNNING else "?")
            if a.error:
                outcome += f" ({a.error.get('type')}: {a.error.get('message')})"
            elif a.message:
                outcome += f" ({a.message})"
            rows.append((str(a.attempt), str(a.run), a.worker or "-", _when(a.started_at), _when(a.ended_at),
                         took, outcome))
        widths = [max(len(row[i]) for row in rows) for i in range(len(head) - 1)]
        lines += ["  " + "  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]]).rstrip()
                  for row in rows]
    return lines


# -- command line (the hook in cli.py adds these to ``kubeworkers jobs``) -------------------------

def add_parsers(jsub: Any, connection_args: Any) -> None:
    """``jobs list`` and ``jobs describe`` on the ``jobs`` subparsers; ``connection_args`` adds
    ``--redis-url``, ``--namespace``, ``--pool``."""
    jl = jsub.add_parser("list", help="list a pool's jobs, newest first (live and finished, from its jobs index)")
    connection_args(jl)
    jl.add_argument("--state", help=f"only jobs in this state: {', '.join(STATES)}")
    jl.add_argument("--handler", help="only jobs of this handler")
    jl.add_argument("--since", help="only jobs enqueued (live) or finished within this long: 90s, 15m, 1h, 2d")
    jl.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help=f"most jobs shown (default {DEFAULT_LIMIT})")
    jl.add_argument("--json", action="store_true", help="one JSON object per job")
    jd = jsub.add_parser("describe", help="one job whole: input, output, error, every attempt, children, Job CR")
    connection_args(jd)
    jd.add_argument("job_id", metavar="ID", help="job id (<namespace>/<name> for a Job object)")
    jd.add_argument("--json", action="store_true", help="one JSON object")


def query_of(args: Any) -> Query:
    """The :class:`Query` of ``jobs list``'s arguments; :class:`ValueError` for a bad one."""
    return Query(state=None if args.state is None else parse_state(args.state), handler=args.handler or None,
                 since_seconds=None if args.since is None else parse_since(args.since),
                 limit=parse_limit(args.limit))


def run_list(r: redis.Redis, keys: PoolKeys, query: Query, *, as_json: bool) -> int:
    now = time.time()
    found = list_jobs(r, keys, query, now=now)
    if as_json:
        for rec in found.rows:
            print(json.dumps(row_json(rec)))
    else:
        for line in table(found.rows, now):
            print(line)
    if found.exhausted:
        print(f"kubeworkers jobs list: stopped after reading {found.scanned} index entries; "
              "narrow it with --since or --state", file=sys.stderr)
    return 0


def run_describe(r: redis.Redis, namespace: str, pool: str | None, job_id: str, *, as_json: bool) -> int:
    try:
        d = describe_job(r, namespace, pool, job_id)
    except LookupError as exc:
        print(f"kubeworkers jobs describe: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(description_json(d)))
    else:
        for line in describe_text(d, time.time()):
            print(line)
    return 0
