"""Property: whatever a handler does, every job ends in exactly one terminal state, with a true reason,
and no other job is affected.

Hypothesis draws a mix of handler behaviours (return anything, raise anything, block, ignore
cancellation, exit) and runs them, beside well-behaved neighbours, on one real worker against a
real ``redis-server``. For every job it checks: one terminal event, the record's state and error
type are the ones the behaviour deserves, neighbours succeed on their first attempt, the worker
still serves afterwards and stops when asked.
"""

from __future__ import annotations

import asyncio
import math
import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kubeworkers import JobContext, PermanentError, Registry
from kubeworkers.client import AsyncClient
from kubeworkers.protocol import JobRecord, JobState
from pydantic import BaseModel

from tests.support.workers import events, start_worker, until

#: These tests read the events stream, which the worker path writes only for a Job object's jobs
#: (docs/protocol.md, *Events*): their SDK clients submit as the operator enqueues those.
pytestmark = pytest.mark.usefixtures("submits_as_job_objects")

#: Seconds a blocking behaviour may run before its job's timeout stops it.
TIMEOUT = 0.3
#: How much output or error text a handler produces to be over every cap.
HUGE = 2 * 1024 * 1024


class Behaviour(BaseModel):
    kind: str


class Out(BaseModel):
    ok: bool


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str() of this exception fails")


class NotAnException(BaseException):
    """A BaseException subclass that is none of the usual ones."""


@dataclass(frozen=True)
class Expected:
    state: JobState
    error: str | None = None
    #: The job carries a timeout of TIMEOUT seconds.
    timed: bool = False


ASYNC: dict[str, Expected] = {
    "ok": Expected(JobState.SUCCEEDED),
    "none": Expected(JobState.SUCCEEDED),
    "model": Expected(JobState.SUCCEEDED),
    "huge_output": Expected(JobState.SUCCEEDED),
    "unserialisable": Expected(JobState.FAILED, "InvalidOutput"),
    "wrong_type": Expected(JobState.FAILED, "InvalidOutput"),
    "nan": Expected(JobState.FAILED, "InvalidOutput"),
    "infinity": Expected(JobState.FAILED, "InvalidOutput"),
    "recursive": Expected(JobState.FAILED, "InvalidOutput"),
    "deep": Expected(JobState.FAILED, "InvalidOutput"),
    "raise": Expected(JobState.FAILED, "ValueError"),
    "raise_huge": Expected(JobState.FAILED, "ValueError"),
    "raise_unprintable": Expected(JobState.FAILED, "Unprintable"),
    "raise_base": Expected(JobState.FAILED, "NotAnException"),
    "permanent": Expected(JobState.FAILED, "PermanentError"),
    "sys_exit": Expected(JobState.FAILED, "SystemExit"),
    "keyboard_interrupt": Expected(JobState.FAILED, "KeyboardInterrupt"),
    "foreign_cancel": Expected(JobState.FAILED, "CancelledError"),
    "bad_progress": Expected(JobState.FAILED, "TypeError"),
    "sleep_past_timeout": Expected(JobState.FAILED, "Timeout", timed=True),
    "ignore_cancellation": Expected(JobState.FAILED, "Timeout", timed=True),
}
SYNC: dict[str, Expected] = {
    "sync_ok": Expected(JobState.SUCCEEDED),
    "sync_raise": Expected(JobState.FAILED, "ValueError"),
    "sync_exit": Expected(JobState.FAILED, "SystemExit"),
    "sync_base": Expected(JobState.FAILED, "NotAnException"),
    "sync_never_returns": Expected(JobState.FAILED, "Timeout", timed=True),
}
EXPECTED = {**ASYNC, **SYNC}


def registry(release: threading.Event) -> Registry:
    """Handlers that do what their input's ``kind`` says; blockers wait for ``release``."""
    reg = Registry()

    @reg.handler("behave", max_attempts=1)
    async def behave(inp: Behaviour, ctx: JobContext) -> Any:
        kind = inp.kind
        if kind == "ok":
            return {"ok": True}
        if kind == "none":
            return None
        if kind == "model":
            return Out(ok=True)
        if kind == "huge_output":
            return {"blob": "x" * HUGE}
        if kind == "unserialisable":
            return {"x": object()}
        if kind == "wrong_type":
            return object()
        if kind == "nan":
            return {"x": math.nan}
        if kind == "infinity":
            return [math.inf]
        if kind == "recursive":
            loop: dict[str, Any] = {}
            loop["self"] = loop
            return loop
        if kind == "deep":
            nested: list[Any] = []
            for _ in range(100_000):
                nested = [nested]
            return nested
        if kind == "raise":
            raise ValueError("boom")
        if kind == "raise_huge":
            raise ValueError("e" * HUGE)
        if kind == "raise_unprintable":
            raise Unprintable()
        if kind == "raise_base":
            raise NotAnException("not an Exception")
        if kind == "permanent":
            raise PermanentError("never")
        if kind == "sys_exit":
            raise SystemExit(3)
        if kind == "keyboard_interrupt":
            raise KeyboardInterrupt
        if kind == "foreign_cancel":
            # A future someone else cancels: the CancelledError is not the worker's.
            future = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(future.cancel)
            await future
        if kind == "bad_progress":
            await ctx.progress(0.5, {"not": "text"})  # type: ignore[arg-type]
        if kind == "sleep_past_timeout":
            await asyncio.sleep(60)
        if kind == "ignore_cancellation":
            while not release.is_set():
                try:
                    await asyncio.sleep(0.05)
                except asyncio.CancelledError:
                    continue
        raise AssertionError(f"unknown behaviour {kind}")

    @reg.handler("behave_sync", max_attempts=1)
    def behave_sync(inp: Behaviour) -> Any:
        kind = inp.kind
        if kind == "sync_ok":
            return {"ok": True}
        if kind == "sync_raise":
            raise ValueError("boom")
        if kind == "sync_exit":
            raise SystemExit(4)
        if kind == "sync_base":
            raise NotAnException("not an Exception")
        if kind == "sync_never_returns":
            release.wait()
            return None
        raise AssertionError(f"unknown behaviour {kind}")

    return reg


def handler_of(kind: str) -> str:
    return "behave_sync" if kind in SYNC else "behave"


def jobs_total(worker: Any) -> float:
    return sum(
        s.value for m in worker.metrics.jobs.collect() for s in m.samples if s.name == "kubeworkers_jobs_total"
    )


async def scenario(redis_url: str, kinds: list[str], neighbours: int) -> None:
    pool = f"p{uuid.uuid4().hex[:8]}"
    release = threading.Event()
    reg = registry(release)
    r = aioredis.Redis.from_url(redis_url)
    try:
        async with (
            AsyncClient(redis_url, registry=Registry()) as client,
            start_worker(redis_url, reg, pool=pool, concurrency=8, shutdown_grace=2) as worker,
        ):
            jobs: dict[str, str] = {}
            for kind in kinds:
                timeout = TIMEOUT if EXPECTED[kind].timed else None
                job_id = await client.submit(pool, handler_of(kind), {"kind": kind}, timeout=timeout)
                jobs[job_id] = kind
            friends = await client.submit_many(pool, "behave", [{"kind": "ok"}] * neighbours)
            records: dict[str, JobRecord] = {}

            async def all_finished() -> bool:
                for job_id in [*jobs, *friends]:
                    rec = await client.get(job_id, pool=pool)
                    if rec is not None and rec.state.finished:
                        records[job_id] = rec
                return len(records) == len(jobs) + len(friends)

            await until(all_finished, 60, f"every job to finish ({kinds})")
            later = await client.wait(await client.submit(pool, "behave", {"kind": "ok"}), 30, pool=pool)
            counted = jobs_total(worker)
        release.set()
        evs = [e for e in await events(r) if e.pool == pool]
    finally:
        release.set()
        await r.aclose()
    terminal = Counter(e.job_id for e in evs if e.state.finished)
    assert terminal == dict.fromkeys([*jobs, *friends, later.job_id], 1), "a job has no or several terminal events"
    for job_id, kind in jobs.items():
        rec, want = records[job_id], EXPECTED[kind]
        assert rec.state is want.state, (kind, rec)
        assert (rec.error.type if rec.error else None) == want.error, (kind, rec.error)
        if rec.error is not None:
            assert rec.error.message and len(rec.error.message) <= 16 * 1024, kind
    huge = [job_id for job_id, kind in jobs.items() if kind == "huge_output"]
    for job_id in huge:
        marker = records[job_id].output
        assert isinstance(marker, dict) and marker.get("truncated") is True, "an over-limit output is not a marker"
    for job_id in friends:
        assert (records[job_id].state, records[job_id].attempts) == (JobState.SUCCEEDED, 1)
    assert later.state is JobState.SUCCEEDED
    # Every attempt ended once, so it is counted once.
    assert counted == len(jobs) + len(friends) + 1
    starts = Counter(e.job_id for e in evs if e.state is JobState.RUNNING and e.progress is None)
    assert set(starts.values()) == {1}, "a job was started twice"


@settings(
    max_examples=12,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    kinds=st.lists(st.sampled_from(sorted(EXPECTED)), min_size=1, max_size=6),
    neighbours=st.integers(min_value=1, max_value=3),
)
@example(kinds=sorted(ASYNC), neighbours=2)
@example(kinds=sorted(SYNC), neighbours=2)
def test_every_job_ends_in_exactly_one_true_terminal_state_whatever_its_handler_does(
    redis_url: str, kinds: list[str], neighbours: int
) -> None:
    asyncio.run(scenario(redis_url, kinds, neighbours))
