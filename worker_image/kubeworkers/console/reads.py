"""What the console reads and does, as calls into the modules the CLI uses (blocking; the server runs
each in a thread).

Each function here is the console's twin of a command: :func:`jobs` is ``jobs list``
(:func:`kubeworkers.inspection.list_jobs` over the bounded jobs index), :func:`job` is ``jobs
describe`` plus ``children``, :func:`pool` is ``stats`` (``Client.stats``), :func:`dead_letters`
and :func:`replay` are ``dlq list|replay``, :func:`retry` is ``jobs retry`` and :func:`cancel` is
``jobs cancel``. The only reads of its own are the ones no module offers yet (the worker registry's
heartbeats, the dead-letter stream's length, and which pools exist); each is one command.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from pydantic import ValidationError

from kubeworkers import dlq, inspection, queue, reruns, stats
from kubeworkers.client import Client
from kubeworkers.protocol import DEFAULT_RESULT_TTL, JobRecord, PoolKeys, WorkerHeartbeat
from kubeworkers.stats import PoolStats

from . import forms

#: How long a discovered list of pools is reused before the keyspace is scanned again.
POOLS_CACHE_S = 30.0
#: Keys one SCAN step asks Redis to look at.
SCAN_COUNT = 10_000
_STREAM_KEY = re.compile(r"kw:\{(?P<ns>[^/{}]+)/(?P<pool>[^{}]+)\}:jobs:")


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class Pools:
    """Which pools a namespace has: those named on the command line, else those whose job streams
    exist (a ``SCAN … TYPE stream`` of the keyspace; the streams outlive their entries, so a pool
    that ran a job once stays listed).

    The scan reads the whole keyspace (about 3.7 s for 10⁶ keys, ``docs/console.md``), so it runs
    at most every :data:`POOLS_CACHE_S`, and only the first look waits for it: later ones get the
    last answer while a thread of its own scans again.
    """

    def __init__(self, namespace: str, named: list[str] | None = None) -> None:
        self.namespace = namespace
        self.named = sorted(set(named or []))
        self._found: list[str] | None = None
        self._at = 0.0
        self._lock = threading.Lock()
        self._scanning = False

    def names(self, r: redis.Redis, *, now: float | None = None) -> list[str]:
        if self.named:
            return self.named
        at = time.monotonic() if now is None else now
        with self._lock:
            found, stale = self._found, self._found is None or at - self._at >= POOLS_CACHE_S
            if found is not None and stale and not self._scanning:
                self._scanning = True
                threading.Thread(target=self._rescan, args=(r,), name="console-pool-scan", daemon=True).start()
        if found is None:
            return self._rescan(r)
        return list(found)

    def _rescan(self, r: redis.Redis) -> list[str]:
        try:
            found = self.scan(r)
        finally:
            with self._lock:
                self._scanning = False
        with self._lock:
            self._found, self._at = found, time.monotonic()
        return list(found)

    def scan(self, r: redis.Redis) -> list[str]:
        """The namespace's pools, from the keyspace now."""
        found: set[str] = set()
        for key in r.scan_iter(match=f"kw:{{{self.namespace}/*}}:jobs:*", count=SCAN_COUNT, _type="stream"):
            m = _STREAM_KEY.match(_text(key))
            if m and m["ns"] == self.namespace and forms.POOL.fullmatch(m["pool"]):
                found.add(m["pool"])
        return sorted(found)


@dataclass
class PoolView:
    """One pool on the pools page: ``kubeworkers stats`` of it, its workers, its dead letters."""

    stats: PoolStats
    workers: list[WorkerHeartbeat] = field(default_factory=list)
    dead_letters: int = 0
    #: Jobs that ended (succeeded + failed) and that failed, per minute of the window, oldest first.
    series: list[tuple[int, int]] = field(default_factory=list)

    @property
    def queued(self) -> int:
        return sum(h.queued for h in self.stats.handlers)

    @property
    def in_flight(self) -> int:
        return sum(h.in_flight for h in self.stats.handlers)

    @property
    def finished(self) -> int:
        return sum(h.jobs for h in self.stats.handlers)

    @property
    def failed(self) -> int:
        return sum(h.failed for h in self.stats.handlers)

    @property
    def per_minute(self) -> float:
        """Jobs that ended per minute over the window."""
        return self.finished / (self.stats.window_s / 60)

    @property
    def mean_duration_s(self) -> float | None:
        count = sum(h.duration_count for h in self.stats.handlers)
        return sum(h.duration_sum_s for h in self.stats.handlers) / count if count else None

    @property
    def slowest_p95_s(self) -> float | None:
        values = [h.p95_duration_s for h in self.stats.handlers if h.p95_duration_s is not None]
        return max(values) if values else None


def pool(r: redis.Redis, namespace: str, name: str, window_s: int) -> PoolView:
    found = Client(connection=r, namespace=namespace).stats(name, window=window_s)
    keys = PoolKeys(namespace, name)
    covered = stats.minutes(found.at, window_s)
    pipe = r.pipeline(transaction=False)
    pipe.hgetall(keys.workers)
    pipe.xlen(keys.dead_letter)
    # The window minute by minute, folded by the stats module (its per-minute hashes, lua/stats.lua).
    for minute in covered:
        pipe.hgetall(keys.stats_minute(minute))
    beats, dead, *per_minute = pipe.execute()
    series = []
    for raw in per_minute:
        tallies = stats.fold([raw]).values()
        succeeded = sum(t.outcomes.get("succeeded", 0) for t in tallies)
        failed = sum(t.outcomes.get("failed", 0) for t in tallies)
        series.append((succeeded + failed, failed))
    workers = []
    for raw in beats.values():
        try:
            workers.append(WorkerHeartbeat.model_validate_json(raw))
        except ValidationError:
            continue
    return PoolView(found, sorted(workers, key=lambda w: w.worker), int(dead), series)


def jobs(r: redis.Redis, namespace: str, chosen: forms.JobsFilter, *, now: float | None = None) -> inspection.Listing:
    """``kubeworkers jobs list`` with the filter's flags."""
    return inspection.list_jobs(r, PoolKeys(namespace, chosen.pool), chosen.query(), now=now)


@dataclass
class JobView:
    """``kubeworkers jobs describe`` and ``kubeworkers children`` of one job."""

    description: inspection.Description
    children: list[JobRecord]


def job(r: redis.Redis, namespace: str, pool_name: str, job_id: str) -> JobView:
    """:class:`kubeworkers.inspection.UnknownJobError` when there is no such job."""
    d = inspection.describe_job(r, namespace, pool_name, job_id)
    kids: list[JobRecord] = []
    if d.record.children is not None:
        kids = Client(connection=r, namespace=namespace).children(job_id, pool=pool_name)
    return JobView(d, kids)


def dead_letters(r: redis.Redis, namespace: str, pool_name: str) -> list[dlq.DeadLetter | dlq.Unreadable]:
    return dlq.list_dead(r, PoolKeys(namespace, pool_name), forms.DLQ_PAGE)


@dataclass(frozen=True)
class Outcome:
    """What an action did, in one line, and whether it was done."""

    ok: bool
    text: str


def retry(r: redis.Redis, namespace: str, pool_name: str, job_id: str) -> Outcome:
    """``kubeworkers jobs retry ID --pool P``."""
    try:
        done = reruns.rerun_job(r, PoolKeys(namespace, pool_name), job_id, by="kubeworkers ui")
    except reruns.RerunRefusedError as exc:
        return Outcome(False, str(exc))
    return Outcome(True, f"job {done.job_id}: rerun {done.run} queued on pool {done.pool}")


def cancel(r: redis.Redis, namespace: str, pool_name: str, job_id: str,
           result_ttl: int = DEFAULT_RESULT_TTL) -> Outcome:
    """``kubeworkers jobs cancel ID --pool P``."""
    if queue.cancel_sync(r, namespace, pool_name, job_id, result_ttl=result_ttl):
        return Outcome(True, f"job {job_id}: cancel requested on pool {pool_name}")
    record = queue.get_record_sync(r, namespace, pool_name, job_id)
    if record is None:
        return Outcome(False, f"job {job_id}: not found")
    return Outcome(False, f"job {job_id}: not cancelled: it has finished ({record.state.value})")


def replay(r: redis.Redis, namespace: str, pool_name: str, entry: str | None) -> Outcome:
    """``kubeworkers dlq replay --id ENTRY`` (``--all`` when ``entry`` is None)."""
    done = dlq.replay(r, PoolKeys(namespace, pool_name), None if entry is None else [entry], by="kubeworkers ui")
    parts = [f"replayed {len(done.job_ids)} job(s)"]
    parts += [f"{exc} (its entry is left in place)" for exc in done.refused]
    if done.unreadable:
        parts.append(f"left {len(done.unreadable)} unreadable entry(ies) in place")
    if entry is not None and not done.job_ids and not done.refused and not done.unreadable:
        return Outcome(False, f"no dead-letter entry {entry} on pool {pool_name}")
    return Outcome(not done.refused and not done.unreadable, "; ".join(parts))
