"""Per-handler statistics of a pool over a window: ``kubeworkers stats`` and ``Client.stats``.

The same numbers as the worker's metrics, because they count the same events with the same
buckets: ``lua/stats.lua`` (spliced into ``settle.lua``) adds each ended attempt to a hash per
minute, by handler and outcome, with its duration in the buckets of the histogram
``kubeworkers_job_duration_seconds`` (:data:`~kubeworkers.protocol.DURATION_BUCKETS_S`, one
home). A window is the sum of its minutes; p50 and p95 are interpolated from the summed buckets
exactly as Prometheus' ``histogram_quantile`` does (:func:`histogram_quantile`), so a quantile
here and one from ``/metrics`` over the same attempts agree.

Mapping to the metrics, per handler: ``succeeded`` = ``kubeworkers_jobs_total{outcome="succeeded"}``;
``failed`` (the job ended Failed) = ``kubeworkers_dead_lettered_total``; ``retried`` =
``kubeworkers_retries_total``; the duration count, sum and buckets = the histogram's.
In flight and queued are read from the pool's streams now (not over the window): entries
delivered and unacknowledged are in flight, the others and the retries waiting out their backoff
are queued.

The arithmetic (window parsing, quantiles, folding minutes into totals) is pure; the one read is
a plan (:mod:`kubeworkers.redis_ops`), run by the blocking and the asyncio client alike.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from kubeworkers import protocol, redis_ops
from kubeworkers.protocol import WORKER_GROUP, PoolKeys
from kubeworkers.redis_ops import Command, Pipeline, Plan

#: The window ``stats`` answers for unless told.
DEFAULT_WINDOW_S = 3600
#: Entries read per stream (and retries from the delayed set) to count queued and in-flight
#: jobs by handler; a longer queue is counted from its first this many (``queue_complete`` False).
QUEUE_SCAN_LIMIT = 10_000

_WINDOW = re.compile(r"(\d+)\s*([smhd]?)")
_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "": 1}


def parse_window(text: str | float | int) -> int:
    """A window as seconds: ``"90m"``, ``"1h"``, ``"1d"``, or a number of seconds.

    Whole minutes (the statistics are kept per minute), from 1 minute to
    :data:`~kubeworkers.protocol.STATS_WINDOW_MAX_S`; anything else is a :class:`ValueError`
    whose message says what is allowed.
    """
    if isinstance(text, bool):
        raise ValueError(f"invalid window {text!r}")
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        match = _WINDOW.fullmatch(text.strip().lower())
        if not match:
            raise ValueError(f"invalid window {text!r}: give a duration such as 15m, 1h or 24h")
        seconds = float(int(match[1]) * _UNITS_S[match[2]])
    most = protocol.STATS_WINDOW_MAX_S
    if not math.isfinite(seconds) or seconds < 60 or seconds > most or seconds % 60:
        raise ValueError(
            f"invalid window {text!r}: whole minutes from 1m to {most // 3600}h (statistics are kept per minute)"
        )
    return int(seconds)


def histogram_quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float | None:
    """The ``q``-quantile of a histogram, interpolated as Prometheus' ``histogram_quantile`` does.

    ``bounds`` are the finite upper bounds, ascending; ``counts`` the observations per bucket,
    not cumulative, one more than ``bounds`` (the last is past the largest bound, ``+Inf``).
    None for a histogram with no observations. Within the bucket the rank falls in the value is
    interpolated linearly (the first bucket starts at 0); a rank in the ``+Inf`` bucket answers
    the largest finite bound.
    """
    if not 0 <= q <= 1:
        raise ValueError(f"a quantile is between 0 and 1, not {q}")
    if len(counts) != len(bounds) + 1:
        raise ValueError(f"{len(bounds)} bounds need {len(bounds) + 1} counts, not {len(counts)}")
    cumulative: list[int] = []
    total = 0
    for n in counts:
        total += n
        cumulative.append(total)
    if total == 0:
        return None
    rank = q * total
    # The first finite bucket whose cumulative count reaches the rank, else +Inf's.
    b = next((i for i, c in enumerate(cumulative[:-1]) if c >= rank), len(bounds))
    if b == len(bounds):
        return float(bounds[-1])
    if b == 0 and bounds[0] <= 0:
        return float(bounds[0])
    start, end, count = 0.0, float(bounds[b]), float(counts[b])
    if b > 0:
        start = float(bounds[b - 1])
        rank -= cumulative[b - 1]
    return start + (end - start) * (rank / count)


def minutes(now: float, window_s: int) -> list[int]:
    """The unix minutes a window ending at ``now`` covers: the current one and those before it."""
    last = int(now // 60)
    return list(range(last - window_s // 60 + 1, last + 1))


@dataclass
class Tally:
    """One handler's counts summed over minutes."""

    outcomes: dict[str, int] = field(default_factory=dict)
    duration_sum_s: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(protocol.DURATION_BUCKETS_S) + 1))


def fold(hashes: Iterable[Mapping[Any, Any]]) -> dict[str, Tally]:
    """Sum per-minute hashes (``lua/stats.lua``'s fields) into one :class:`Tally` per handler."""
    tallies: dict[str, Tally] = {}
    for raw in hashes:
        for key, value in raw.items():
            name = _text(key)
            handler, sep, what = name.rpartition("|")
            if not sep:
                continue
            tally = tallies.setdefault(handler, Tally())
            text = _text(value)
            if what == "dsum":
                tally.duration_sum_s += float(text)
            elif what.startswith("b") and what[1:].isdigit():
                i = int(what[1:])
                if i < len(tally.buckets):
                    tally.buckets[i] += int(text)
            else:
                tally.outcomes[what] = tally.outcomes.get(what, 0) + int(text)
    return tallies


class HandlerStats(BaseModel):
    """One handler's numbers over the window (counts), and now (``in_flight``, ``queued``)."""

    handler: str
    #: Jobs that ended (succeeded + failed); a sequence's step counts as its handler's success.
    jobs: int
    succeeded: int
    failed: int
    retried: int = Field(description="Attempts that failed and were scheduled again.")
    failure_rate: float | None = Field(description="failed / jobs; None when no job ended.")
    duration_count: int = Field(description="Attempts timed (the duration histogram's _count).")
    duration_sum_s: float
    mean_duration_s: float | None
    p50_duration_s: float | None
    p95_duration_s: float | None
    in_flight: int
    queued: int


class PoolStats(BaseModel):
    """``kubeworkers stats`` of one pool: a :class:`HandlerStats` per handler, by name."""

    namespace: str
    pool: str
    window_s: int
    #: The window's end, unix seconds (it covers whole minutes up to this one).
    at: float
    #: False when a stream held more than :data:`QUEUE_SCAN_LIMIT` entries (queued is a lower bound).
    queue_complete: bool = True
    handlers: list[HandlerStats]


def handler_stats(handler: str, tally: Tally, in_flight: int = 0, queued: int = 0) -> HandlerStats:
    """The numbers of one handler from its tally (pure)."""
    succeeded = tally.outcomes.get("succeeded", 0)
    failed = tally.outcomes.get("failed", 0)
    jobs = succeeded + failed
    count = sum(tally.buckets)
    bounds = protocol.DURATION_BUCKETS_S
    return HandlerStats(
        handler=handler, jobs=jobs, succeeded=succeeded, failed=failed, retried=tally.outcomes.get("retried", 0),
        failure_rate=failed / jobs if jobs else None, duration_count=count,
        duration_sum_s=round(tally.duration_sum_s, 6),
        mean_duration_s=tally.duration_sum_s / count if count else None,
        p50_duration_s=histogram_quantile(0.5, bounds, tally.buckets),
        p95_duration_s=histogram_quantile(0.95, bounds, tally.buckets),
        in_flight=in_flight, queued=queued,
    )


def stats_plan(namespace: str, pool: str, window_s: int, *, now: float | None = None) -> Plan[PoolStats]:
    """Read a pool's statistics over ``window_s`` seconds (see :func:`parse_window`) in one
    round trip. Reads only, so repeated after connection errors."""
    at = time.time() if now is None else now
    keys = PoolKeys(namespace, pool)
    covered = minutes(at, window_s)
    streams = keys.streams
    commands = [Command("hgetall", keys.stats_minute(m)) for m in covered]
    for stream in streams:
        commands.append(Command("xrange", stream, "-", "+", count=QUEUE_SCAN_LIMIT))
        commands.append(Command("xpending_range", stream, WORKER_GROUP, "-", "+", QUEUE_SCAN_LIMIT))
    commands.append(Command("zrange", keys.delayed, 0, QUEUE_SCAN_LIMIT - 1))
    replies = yield from redis_ops.retried(lambda: Pipeline(commands, errors_as_replies=True), idempotent=True)
    for reply in replies[: len(covered)]:
        if isinstance(reply, Exception):
            raise reply
    tallies = fold(replies[: len(covered)])
    in_flight: dict[str, int] = {}
    queued: dict[str, int] = {}
    complete = True
    rest = replies[len(covered):]
    for i in range(len(streams)):
        entries, pending = rest[2 * i], rest[2 * i + 1]
        if isinstance(entries, Exception):
            raise entries
        held = set() if isinstance(pending, Exception) else {_text(p["message_id"]) for p in pending}  # no group yet
        complete = complete and len(entries) < QUEUE_SCAN_LIMIT
        for entry_id, fields in entries:
            handler = _text(fields.get(b"h", fields.get("h", b"")))
            into = in_flight if _text(entry_id) in held else queued
            into[handler] = into.get(handler, 0) + 1
    delayed = rest[-1]
    if isinstance(delayed, Exception):
        raise delayed
    complete = complete and len(delayed) < QUEUE_SCAN_LIMIT
    for member in delayed:
        handler = _handler_of(_text(member))
        queued[handler] = queued.get(handler, 0) + 1
    names = sorted(set(tallies) | set(in_flight) | set(queued))
    return PoolStats(
        namespace=namespace, pool=pool, window_s=window_s, at=at, queue_complete=complete,
        handlers=[handler_stats(h, tallies.get(h, Tally()), in_flight.get(h, 0), queued.get(h, 0)) for h in names],
    )


def _handler_of(msg: str) -> str:
    try:
        handler = json.loads(msg).get("handler", "")
    except (ValueError, AttributeError):
        return ""
    return handler if isinstance(handler, str) else ""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --------------------------------------------------------------------------- the command's output

COLUMNS = ("HANDLER", "JOBS", "SUCCEEDED", "FAILED", "FAILURE", "MEAN", "P50", "P95", "IN FLIGHT", "QUEUED")


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f}ms" if value >= 0.01 else f"{value * 1000:.2f}ms"
    return f"{value:.2f}s"


def table(stats: PoolStats) -> str:
    """The human table ``kubeworkers stats`` prints."""
    rows = [COLUMNS]
    for h in stats.handlers:
        rate = "-" if h.failure_rate is None else f"{h.failure_rate:.1%}"
        rows.append((h.handler, str(h.jobs), str(h.succeeded), str(h.failed), rate, _seconds(h.mean_duration_s),
                     _seconds(h.p50_duration_s), _seconds(h.p95_duration_s), str(h.in_flight), str(h.queued)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    window = f"{stats.window_s // 3600}h" if stats.window_s % 3600 == 0 else f"{stats.window_s // 60}m"
    head = f"pool {stats.namespace}/{stats.pool}, last {window}"
    if not stats.handlers:
        return f"{head}: no jobs"
    tail = [] if stats.queue_complete else [f"(queued counted from the first {QUEUE_SCAN_LIMIT} entries per stream)"]
    return "\n".join([head, *lines, *tail])
