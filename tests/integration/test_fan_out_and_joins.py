"""Fan-out and joins on a real Redis: children record their parent, a waiting parent holds no
slot, the last child's end queues the continuation, cancelling a parent cancels its children."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from kubeworkers import ChildrenDone, JobContext, Registry
from kubeworkers.client import AsyncClient
from kubeworkers.protocol import JobState
from pydantic import BaseModel

from tests.support.workers import start_worker, until


class Fan(BaseModel):
    n: int
    fail_at: int = -1


class Item(BaseModel):
    i: int
    fail: bool = False


def fan_registry(sleep: float = 0.0) -> Registry:
    reg = Registry()

    @reg.handler("fan")
    async def fan(inp: Fan, ctx: JobContext) -> object:
        await ctx.map("item", [Item(i=i, fail=i == inp.fail_at) for i in range(inp.n)])
        return ctx.wait(then="join", input={"n": inp.n})

    @reg.handler("item", max_attempts=1)
    async def item(inp: Item) -> dict[str, int]:
        if sleep:
            await asyncio.sleep(sleep)
        if inp.fail:
            raise ValueError(f"item {inp.i} is broken")
        return {"square": inp.i * inp.i}

    @reg.handler("join")
    async def join(inp: ChildrenDone) -> dict[str, object]:
        total = sum(c.output["square"] for c in inp.children if c.state is JobState.SUCCEEDED)
        return {"n": inp.input["n"], "sum": total, "succeeded": inp.counts.succeeded,
                "failed": [c.job_id for c in inp.failed]}

    return reg


async def test_parent_with_200_children_on_a_pool_of_concurrency_2_finishes_without_deadlock(
    redis_url: str, client: AsyncClient
) -> None:
    async with start_worker(redis_url, fan_registry(), concurrency=2):
        job_id = await client.submit("p", "fan", {"n": 200})
        done = await client.wait(job_id, 90)
    assert done.state is JobState.SUCCEEDED, done
    assert done.output == {"n": 200, "sum": sum(i * i for i in range(200)), "succeeded": 200, "failed": []}
    assert done.children is not None and done.children.total == 200 and done.children.succeeded == 200
    kids = await client.children(job_id)
    assert len(kids) == 200 and all(k.parent == job_id and k.state is JobState.SUCCEEDED for k in kids)


async def test_a_failed_child_is_counted_on_the_parent_and_named_to_its_continuation(
    redis_url: str, client: AsyncClient
) -> None:
    async with start_worker(redis_url, fan_registry(), concurrency=4):
        job_id = await client.submit("p", "fan", {"n": 5, "fail_at": 3})
        done = await client.wait(job_id, 60)
    assert done.state is JobState.SUCCEEDED, done
    assert done.output is not None and done.output["failed"] == [f"{job_id}:fan:3"]
    assert done.children is not None and (done.children.succeeded, done.children.failed) == (4, 1)


async def test_waiting_parent_holds_no_slot_and_is_waiting_until_its_children_end(
    redis_url: str, r: aioredis.Redis, client: AsyncClient
) -> None:
    async with start_worker(redis_url, fan_registry(sleep=0.3), concurrency=1):
        job_id = await client.submit("p", "fan", {"n": 3})
        await until(lambda: _state(client, job_id, JobState.WAITING), 30, "the parent to wait")
        done = await client.wait(job_id, 60)
    assert done.state is JobState.SUCCEEDED and done.output is not None and done.output["succeeded"] == 3


async def test_cancelling_a_waiting_parent_cancels_its_running_and_queued_children(
    redis_url: str, client: AsyncClient
) -> None:
    async with start_worker(redis_url, fan_registry(sleep=30), concurrency=2):
        job_id = await client.submit("p", "fan", {"n": 6})
        await until(lambda: _state(client, job_id, JobState.WAITING), 30, "the parent to wait")
        await until(lambda: _running_children(client, job_id, 2), 30, "two children to run")
        assert await client.cancel(job_id)
        kids = await _wait_children_finished(client, job_id)
        parent = await client.get(job_id)
    assert parent is not None and parent.state is JobState.CANCELLED
    assert [k.state for k in kids] == [JobState.CANCELLED] * 6


async def _state(client: AsyncClient, job_id: str, state: JobState) -> bool:
    rec = await client.get(job_id)
    return rec is not None and rec.state is state


async def _running_children(client: AsyncClient, job_id: str, n: int) -> bool:
    return sum(k.state is JobState.RUNNING for k in await client.children(job_id)) >= n


async def _wait_children_finished(client: AsyncClient, job_id: str) -> list:  # type: ignore[type-arg]
    for _ in range(300):
        kids = await client.children(job_id)
        if kids and all(k.state.finished for k in kids):
            return kids
        await asyncio.sleep(0.1)
    raise AssertionError(f"children still unfinished: {[k.state for k in await client.children(job_id)]}")


async def test_cli_children_lists_a_parents_children_with_their_states(
    redis_url: str, client: AsyncClient, capsys: object
) -> None:
    from kubeworkers import cli

    async with start_worker(redis_url, fan_registry(), concurrency=2):
        job_id = await client.submit("p", "fan", {"n": 3, "fail_at": 1})
        await client.wait(job_id, 60)
    code = await asyncio.to_thread(cli.main, ["children", job_id, "--redis-url", redis_url])
    out = capsys.readouterr().out.splitlines()  # type: ignore[attr-defined]
    assert code == 0
    assert out[0] == f"{job_id}:fan:0\tp\tSucceeded"
    assert out[1].startswith(f"{job_id}:fan:1\tp\tFailed\tValueError: item 1 is broken")
    assert len(out) == 3
