"""Soft timeouts: the handler is told (``SoftTimeout`` raised into an async one, ``ctx.soft_timed_out``
for a sync one) and gets until its hard timeout; on an in-process worker and a real Redis."""

from __future__ import annotations

import asyncio

from kubeworkers import JobContext, Registry, SoftTimeout
from kubeworkers.client import AsyncClient
from kubeworkers.protocol import JobState
from pydantic import BaseModel

from tests.support.workers import start_worker


class Inp(BaseModel):
    n: int = 0



async def test_async_handler_told_of_its_soft_timeout_cleans_up_and_succeeds(
    redis_url: str, client: AsyncClient
) -> None:
    reg = Registry()
    cleaned: list[str] = []

    @reg.handler("h", soft_timeout=0.2, timeout=60, max_attempts=1)
    async def h(inp: Inp) -> dict[str, str]:
        try:
            await asyncio.sleep(60)
        except SoftTimeout:
            await asyncio.sleep(0.01)  # cleaning up may await: the task is not cancelled
            cleaned.append("yes")
            return {"finished": "early"}
        return {"finished": "late"}

    async with start_worker(redis_url, reg):
        done = await client.wait(await client.submit("p", "h", {}), 30)
    assert (done.state, done.output, cleaned) == (JobState.SUCCEEDED, {"finished": "early"}, ["yes"])


async def test_async_handler_that_does_not_catch_its_soft_timeout_fails_with_timeout(
    redis_url: str, client: AsyncClient
) -> None:
    reg = Registry()

    @reg.handler("h", soft_timeout=0.1, timeout=60, max_attempts=1)
    async def h(inp: Inp) -> None:
        await asyncio.sleep(60)

    async with start_worker(redis_url, reg):
        done = await client.wait(await client.submit("p", "h", {}), 30)
    assert done.state is JobState.FAILED and done.error is not None
    assert done.error.type == "Timeout" and "soft timeout of 0.1s" in done.error.message


async def test_sync_handler_sees_its_soft_timeout_on_the_context_and_returns(
    redis_url: str, client: AsyncClient
) -> None:
    reg = Registry()

    @reg.handler("h", soft_timeout=0.2, timeout=60, max_attempts=1)
    def h(inp: Inp, ctx: JobContext) -> dict[str, bool]:
        before = ctx.soft_timed_out
        told = ctx.wait_soft_timeout(60)
        return {"before": before, "told": told, "after": ctx.soft_timed_out}

    async with start_worker(redis_url, reg):
        done = await client.wait(await client.submit("p", "h", {}), 30)
    assert (done.state, done.output) == (JobState.SUCCEEDED, {"before": False, "told": True, "after": True})


async def test_a_jobs_soft_timeout_overrides_its_handlers(redis_url: str, client: AsyncClient) -> None:
    reg = Registry()

    @reg.handler("h", timeout=60, max_attempts=1)
    async def h(inp: Inp) -> str:
        try:
            await asyncio.sleep(60)
        except SoftTimeout:
            return "told"
        return "never told"

    async with start_worker(redis_url, reg):
        done = await client.wait(await client.submit("p", "h", {}, soft_timeout=0.1), 30)
    assert (done.state, done.output) == (JobState.SUCCEEDED, "told")


async def test_a_handler_that_ignores_its_soft_timeout_is_stopped_at_the_hard_one(
    redis_url: str, client: AsyncClient
) -> None:
    reg = Registry()

    @reg.handler("h", soft_timeout=0.1, timeout=0.5, max_attempts=1)
    async def h(inp: Inp) -> None:
        try:
            await asyncio.sleep(60)
        except SoftTimeout:
            await asyncio.sleep(60)  # carries on regardless

    async with start_worker(redis_url, reg):
        done = await client.wait(await client.submit("p", "h", {}), 30)
    assert done.state is JobState.FAILED and done.error is not None
    assert done.error.type == "Timeout" and "timed out after 0.5s" in done.error.message
