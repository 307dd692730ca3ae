"""The fault suite's harness: a fleet of real worker processes on a private ``redis-server``,
a mixed workload, faults injected on a schedule, and the ledger that judges every job's ending.

A scenario submits a few hundred jobs of mixed duration (most short, some longer than the
lease), injects its fault for a bounded time, waits for the backlog to drain and then reads
the truth from Redis — the job records and the events stream every worker appends to (the
scenarios submit through :func:`~tests.support.workers.as_job_objects`, as the operator enqueues
Job objects: the worker path writes no events for an SDK job, docs/protocol.md, *Events*; the
scripts' other writes are the same for both):

- **lost**: an acknowledged submit whose job never reached a terminal state (or vanished);
- **duplicated**: a job whose handler started more than once;
- **explained by a kill**: a duplicated job each of whose earlier starts ran on a worker the
  scenario signalled (SIGKILL or SIGTERM) — the only reason a job may run twice;
- **recovered in**: seconds from the last fault to the first job finishing after it.

Each scenario appends its :class:`Outcome` to :data:`RESULTS`; ``tests/chaos/conftest.py``
prints them as a table at the end of the run (docs/reliability.md keeps a copy).
"""

from __future__ import annotations

import random
import signal
import threading
from collections import defaultdict
from dataclasses import dataclass, field

import redis
from kubeworkers.client import Client
from kubeworkers.protocol import JobState, PoolKeys

from hack.polling import wait_for
from tests.support.workers import LEASE, WorkerProcess, events_sync

POOL = "p"
KEYS = PoolKeys("default", POOL)
#: Attempts every chaos job may use: enough that repeated kills never exhaust them.
ATTEMPTS = 20


@dataclass(frozen=True)
class Outcome:
    scenario: str
    jobs: int
    lost: int
    duplicated: int
    explained: int
    recovered_in: float | None
    note: str = ""

    @property
    def unexplained(self) -> int:
        return self.duplicated - self.explained


#: Every scenario's outcome in this run, in the order they ran.
RESULTS: list[Outcome] = []


def table(outcomes: list[Outcome]) -> str:
    """The summary as a Markdown table (the terminal shows the same text)."""
    lines = ["| scenario | jobs | lost | duplicated | explained by a kill | recovered in | note |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for o in outcomes:
        rec = "-" if o.recovered_in is None else f"{o.recovered_in:.2f} s"
        lines.append(f"| {o.scenario} | {o.jobs} | {o.lost} | {o.duplicated} | {o.explained} | {rec} | {o.note} |")
    return "\n".join(lines)


def workload(rng: random.Random, n: int = 300) -> list[dict[str, float | int]]:
    """Inputs for the ``slow`` example handler: 85% short, 10% around a second, 5% past the lease."""
    inputs: list[dict[str, float | int]] = []
    for _ in range(n):
        pick = rng.random()
        if pick < 0.85:
            inputs.append({"seconds": round(rng.uniform(0.02, 0.2), 3), "steps": 1})
        elif pick < 0.95:
            inputs.append({"seconds": round(rng.uniform(0.5, 1.5), 3), "steps": 2})
        else:
            seconds = round(rng.uniform(1.5 * LEASE, 2.5 * LEASE), 3)
            inputs.append({"seconds": seconds, "steps": int(seconds * 2)})
    return inputs


class Fleet:
    """Worker processes of one pool; a signalled worker is replaced at once by a new one."""

    def __init__(
        self, redis_url: str, size: int = 3, concurrency: int = 8, extra_args: list[str] | None = None
    ) -> None:
        self.redis_url = redis_url
        self.concurrency = concurrency
        self.extra_args = extra_args or []
        self.live: list[WorkerProcess] = []
        self.leaving: list[WorkerProcess] = []
        #: Names of the workers this scenario signalled.
        self.signalled: set[str] = set()
        self._spawned = 0
        for _ in range(size):
            self._spawn()
        for worker in self.live:
            worker.wait_started()

    def _spawn(self) -> WorkerProcess:
        worker = WorkerProcess(self.redis_url, f"w{self._spawned}", pool=POOL, concurrency=self.concurrency,
                               extra_args=self.extra_args)
        self._spawned += 1
        self.live.append(worker)
        return worker

    def signal_one(self, rng: random.Random, sig: signal.Signals) -> str:
        """Send ``sig`` to a random live worker and start its replacement (as a rollout would).

        Like a rolling update with ``maxUnavailable: 0``, the previous replacement is up before
        the next worker is signalled: a process signalled while Python is still importing dies
        of the signal's default action before it could drain (nothing held, exit -15), which is
        not the drain this scenario judges."""
        for worker in self.live:
            worker.wait_started()
        victim = self.live.pop(rng.randrange(len(self.live)))
        self.signalled.add(victim.name)
        victim.proc.send_signal(sig)
        self.leaving.append(victim)
        self._spawn()
        return victim.name

    def close(self) -> list[tuple[str, int | None]]:
        """Stop every worker (SIGTERM, so they drain) and return each leaver's exit code."""
        for worker in self.live:
            worker.terminate()
        codes: list[tuple[str, int | None]] = []
        for worker in self.leaving + self.live:
            try:
                codes.append((worker.name, worker.wait(60)))
            except Exception:
                codes.append((worker.name, None))
            worker.close()
        return codes


@dataclass
class Submitter:
    """Submits small batches in a thread while a fault runs; only acknowledged ids are kept."""

    client: Client
    rng: random.Random
    batch: int = 5
    every: float = 0.1
    acknowledged: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Submitter:
        self._thread = threading.Thread(target=self._run, name="chaos-submitter", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            inputs = workload(self.rng, self.batch)
            try:
                ids = self.client.submit_many(POOL, "slow", inputs, max_attempts=ATTEMPTS)
            except Exception as exc:
                self.refusals.append(f"{type(exc).__name__}: {exc}")
            else:
                self.acknowledged.extend(ids)
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)


def settle(r: redis.Redis, ids: list[str], within: float = 180) -> None:
    """Wait until every job's record is finished (records that do not exist count as not finished)."""

    def finished() -> bool:
        pipe = r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(KEYS.record(job_id), "state")
        return all(s is not None and JobState(s.decode()).finished for s in pipe.execute())

    wait_for(finished, within, f"all {len(ids)} jobs to finish", every=0.25)


def read_ledger(
    r: redis.Redis, ids: list[str]
) -> tuple[dict[str, bytes | None], dict[str, list[str]], dict[str, list[float]]]:
    """Each job's record state, the workers its handler started on (in order), and when its
    terminal events were written.

    A ``Running`` event is a start unless the same worker's next event for the job hands it back
    with the attempt given back (a ``Queued`` event one attempt lower): that attempt never reached
    its handler (an attempt counts when a handler starts), as when a durable take no replica
    acknowledged is handed back unrun, or a draining worker returns what it had not started."""
    pipe = r.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(KEYS.record(job_id), "state")
    states = dict(zip(ids, pipe.execute(), strict=True))
    starts: dict[str, list[str]] = defaultdict(list)
    terminal: dict[str, list[float]] = defaultdict(list)
    last_start: dict[str, tuple[str, int]] = {}
    for e in events_sync(r):
        if e.state is JobState.RUNNING and e.progress is None:
            starts[e.job_id].append(e.worker or "")
            last_start[e.job_id] = (e.worker or "", e.attempt)
        elif e.state is JobState.QUEUED and e.job_id in last_start:
            worker, attempt = last_start.pop(e.job_id)
            if e.worker == worker and e.attempt == attempt - 1:
                starts[e.job_id].pop()
        elif e.state.finished:
            terminal[e.job_id].append(e.at)
    return states, starts, terminal


def trail(r: redis.Redis, job_ids: list[str]) -> str:
    """The events of these jobs, one line each, for a failure message."""
    wanted = set(job_ids)
    return "\n".join(
        f"  {e.job_id[:8]} {e.at:.3f} {e.state.value} attempt={e.attempt} worker={e.worker} {e.message or ''}"
        for e in events_sync(r) if e.job_id in wanted and e.progress is None
    )


def judge(
    scenario: str, r: redis.Redis, ids: list[str], signalled: set[str], last_fault: float, *,
    may_lose: frozenset[str] = frozenset(), note: str = "",
) -> Outcome:
    """Read the records and the events stream; assert the guarantees; record the outcome.

    ``may_lose``: ids the scenario's fault is allowed to lose (a crash of Redis without
    ``appendfsync always``); every other acknowledged job must succeed exactly once.
    """
    states, starts, terminal = read_ledger(r, ids)
    lost = {j for j, s in states.items() if s is None or JobState(s.decode()) is not JobState.SUCCEEDED}
    ends = [at for times in terminal.values() for at in times if at >= last_fault]
    first_after = min(ends) if ends else None
    duplicated = {j for j in ids if len(starts.get(j, [])) > 1}
    explained = {j for j in duplicated if set(starts[j][:-1]) <= signalled}
    outcome = Outcome(
        scenario, len(ids), len(lost), len(duplicated), len(explained),
        None if first_after is None else max(0.0, first_after - last_fault), note,
    )
    RESULTS.append(outcome)
    assert lost <= may_lose, f"{scenario}: jobs lost: {sorted(lost - may_lose)[:10]} (states {states})"
    twice = {j: len(times) for j, times in terminal.items() if len(times) != 1 and j in states}
    assert not twice, f"{scenario}: jobs with more than one terminal event: {twice}"
    assert duplicated == explained, (
        f"{scenario}: jobs that ran twice without a kill: "
        f"{ {j: starts[j] for j in sorted(duplicated - explained)[:10]} }; the first ones' events:\n"
        + trail(r, sorted(duplicated - explained)[:3])
    )
    return outcome
