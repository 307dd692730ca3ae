"""Process isolation (``@handler(isolation="process")``): each attempt in a child process that a
hard timeout or a cancel kills and whose crash fails only that attempt; on a real Redis."""

from __future__ import annotations

import os

import pytest
import redis.asyncio as aioredis
from kubeworkers.client import AsyncClient
from kubeworkers.protocol import JobState

from tests.integration.isolated_handlers import isolated
from tests.support.workers import events, start_worker, until, wait_state

#: These tests read the events stream, which the worker path writes only for a Job object's jobs
#: (docs/protocol.md, *Events*): their SDK clients submit as the operator enqueues those.
pytestmark = pytest.mark.usefixtures("submits_as_job_objects")


async def _child_pid(r: aioredis.Redis, job_id: str) -> int:
    found: list[int] = []

    async def reported() -> bool:
        for event in await events(r, job_id):
            if event.message and event.message.startswith("pid "):
                found.append(int(event.message.split()[1]))
                return True
        return False

    await until(reported, 30, f"{job_id}'s child to report its pid")
    return found[0]


def _children() -> list[int]:
    """Process ids of this process's live children that are isolated handlers' processes."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as cmd:
                cmdline = cmd.read()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and b"kubeworkers.isolation" in cmdline:
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_isolated_handler_gets_its_input_reports_progress_and_returns_its_output(
    redis_url: str, r: aioredis.Redis, client: AsyncClient
) -> None:
    async with start_worker(redis_url, isolated):
        job_id = await client.submit("p", "iso.double", {"n": 21})
        done = await client.wait(job_id, 60)
    assert done.state is JobState.SUCCEEDED, done.error
    assert done.output["doubled"] == 42 and done.output["pid"] != os.getpid()
    assert [(e.progress, e.message) for e in await events(r, job_id) if e.progress == 0.5] == [(0.5, "half way")]


async def test_sync_handler_past_its_hard_timeout_in_process_isolation_is_killed_and_its_slot_reused(
    redis_url: str, r: aioredis.Redis, client: AsyncClient
) -> None:
    async with start_worker(redis_url, isolated, concurrency=1):
        spinning = await client.submit("p", "iso.spin", {})
        await until(_children, 30, "the handler's child process to start")
        timed_out = await client.wait(spinning, 60)
        assert _children() == []  # killed and reaped before the attempt was recorded
        # The one slot is free again: the next job runs on it.
        after = await client.wait(await client.submit("p", "iso.double", {"n": 1}), 60)
    assert timed_out.state is JobState.FAILED and timed_out.error is not None
    assert timed_out.error.type == "Timeout"
    assert after.state is JobState.SUCCEEDED


async def test_cancelling_an_isolated_handler_kills_its_process(
    redis_url: str, r: aioredis.Redis, client: AsyncClient
) -> None:
    async with start_worker(redis_url, isolated, concurrency=1):
        job_id = await client.submit("p", "iso.block", {})
        pid = await _child_pid(r, job_id)
        assert await client.cancel(job_id)
        done = await wait_state(r, job_id, {JobState.CANCELLED}, 60)
        assert not _alive(pid)
        after = await client.wait(await client.submit("p", "iso.double", {"n": 1}), 60)
    assert done.state is JobState.CANCELLED and after.state is JobState.SUCCEEDED


@pytest.mark.parametrize(("how", "error_type", "says"), [
    ("segfault", "ProcessCrashed", "killed by SIGSEGV"),
    ("exit", "ProcessCrashed", "exited with code 3"),
    ("memory", "MemoryError", "no more memory"),
])
async def test_a_crash_of_an_isolated_handler_fails_its_attempt_and_not_the_worker(
    redis_url: str, client: AsyncClient, how: str, error_type: str, says: str
) -> None:
    async with start_worker(redis_url, isolated, concurrency=1):
        crashed = await client.wait(await client.submit("p", "iso.crash", {"how": how}), 60)
        after = await client.wait(await client.submit("p", "iso.double", {"n": 1}), 60)
    assert crashed.state is JobState.FAILED and crashed.error is not None
    assert crashed.error.type == error_type and says in crashed.error.message
    assert after.state is JobState.SUCCEEDED


async def test_an_isolated_async_handler_is_told_of_its_soft_timeout_in_its_process(
    redis_url: str, client: AsyncClient
) -> None:
    async with start_worker(redis_url, isolated):
        done = await client.wait(await client.submit("p", "iso.soft", {}), 60)
    assert (done.state, done.output) == (JobState.SUCCEEDED, "cleaned up")
