"""Typed SDK results on a real Redis with a real in-process worker: ``result`` (the output as its
model, or a typed error), ``wait_many`` and ``as_completed`` (fan-in from outside).

The blocking ``Client`` runs in a thread (``asyncio.to_thread``) so the in-process worker's event
loop keeps running while it waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from kubeworkers import (
    AsyncClient,
    Client,
    JobCancelledError,
    JobFailedError,
    JobNotFoundError,
    OutputValidationError,
    Registry,
    RetryPolicy,
)
from kubeworkers.protocol import JobState
from pydantic import BaseModel

from tests.support.workers import start_worker

POOL = "pool"


class Resize(BaseModel):
    url: str
    width: int


class Resized(BaseModel):
    url: str
    width: int


class Other(BaseModel):
    height: int


class Gate(BaseModel):
    name: str


class Broken(ValueError):
    pass


@pytest.fixture
def gates() -> dict[str, asyncio.Event]:
    """One event per ``gated`` job name: the job finishes when its event is set."""
    return {}


@pytest.fixture
def registry(gates: dict[str, asyncio.Event]) -> Registry:
    reg = Registry()

    @reg.handler("resize_image", timeout=30)
    async def resize(inp: Resize) -> Resized:
        return Resized(url=inp.url, width=inp.width)

    @reg.handler("broken", timeout=30)
    async def broken(inp: Resize) -> None:
        raise Broken(f"cannot resize {inp.url}")

    @reg.handler("gated", timeout=30)
    async def gated(inp: Gate) -> dict[str, str]:
        await gates.setdefault(inp.name, asyncio.Event()).wait()
        return {"name": inp.name}

    return reg


@pytest.fixture
def client(redis_url: str, registry: Registry) -> Iterator[Client]:
    with Client(redis_url, registry=registry) as c:
        yield c


@pytest.fixture
async def aclient(redis_url: str, registry: Registry) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(redis_url, registry=registry) as c:
        yield c


async def test_result_returns_the_validated_output_model(
    redis_url: str, registry: Registry, client: Client, aclient: AsyncClient
) -> None:
    async with start_worker(redis_url, registry, pool=POOL):
        job_id = await aclient.submit(POOL, "resize_image", Resize(url="u", width=640))
        typed = await aclient.result(job_id, Resized, timeout=30)
        blocking = await asyncio.to_thread(client.result, job_id, Resized, 30)
    assert typed == blocking == Resized(url="u", width=640)
    assert isinstance(typed, Resized)


async def test_result_without_a_model_returns_the_output_as_stored(
    redis_url: str, registry: Registry, aclient: AsyncClient
) -> None:
    async with start_worker(redis_url, registry, pool=POOL):
        job_id = await aclient.submit(POOL, "resize_image", Resize(url="u", width=3))
        assert await aclient.result(job_id, timeout=30) == {"url": "u", "width": 3}


async def test_result_of_a_failed_job_raises_job_failed_error_with_its_type_and_message(
    redis_url: str, registry: Registry, client: Client, aclient: AsyncClient
) -> None:
    async with start_worker(redis_url, registry, pool=POOL):
        job_id = await aclient.submit(POOL, "broken", {"url": "u", "width": 1},
                                      retry=RetryPolicy(maximum_attempts=2, initial_interval_seconds=0.01))
        with pytest.raises(JobFailedError) as failed:
            await aclient.result(job_id, Resized, timeout=30)
        with pytest.raises(JobFailedError) as blocking:
            await asyncio.to_thread(client.result, job_id, Resized, 30)
    err = failed.value
    assert type(err) is JobFailedError and type(blocking.value) is JobFailedError
    assert (err.job_id, err.error_type, err.message) == (job_id, "Broken", "cannot resize u")
    assert (err.retryable, err.attempts) == (True, 2)
    assert err.dead_letter is not None and err.record.state is JobState.FAILED
    assert f"job {job_id} failed after 2 attempt(s): Broken: cannot resize u" in str(err)


async def test_result_of_a_cancelled_job_raises_job_cancelled_error(client: Client, aclient: AsyncClient) -> None:
    job_id = client.submit(POOL, "resize_image", {"url": "u", "width": 1})
    assert client.cancel(job_id)
    with pytest.raises(JobCancelledError) as cancelled:
        client.result(job_id, Resized, timeout=5)
    with pytest.raises(JobCancelledError):
        await aclient.result(job_id, timeout=5)
    assert cancelled.value.job_id == job_id and cancelled.value.record.state is JobState.CANCELLED
    # It never ran: its record has no error, only a message.
    assert (cancelled.value.error_type, cancelled.value.message) == ("Cancelled", "cancelled while queued")
    assert isinstance(cancelled.value, JobFailedError)


async def test_result_whose_output_does_not_match_the_model_raises_naming_the_job_and_the_model(
    redis_url: str, registry: Registry, client: Client, aclient: AsyncClient
) -> None:
    async with start_worker(redis_url, registry, pool=POOL):
        job_id = await aclient.submit(POOL, "resize_image", Resize(url="u", width=1))
        with pytest.raises(OutputValidationError, match=f"output of job {job_id} does not match Other") as bad:
            await aclient.result(job_id, Other, timeout=30)
        with pytest.raises(OutputValidationError, match=f"output of job {job_id} does not match Other"):
            await asyncio.to_thread(client.result, job_id, Other, 30)
    assert bad.value.job_id == job_id and bad.value.model is Other


def test_result_times_out_like_wait_and_raises_not_found_for_unknown_ids(client: Client) -> None:
    job_id = client.submit(POOL, "resize_image", {"url": "u", "width": 1})
    with pytest.raises(TimeoutError, match="Queued"):
        client.result(job_id, Resized, timeout=0.2)
    with pytest.raises(JobNotFoundError):
        client.result("no-such-job", timeout=1)


async def test_as_completed_yields_jobs_in_completion_order(
    redis_url: str, registry: Registry, gates: dict[str, asyncio.Event], aclient: AsyncClient
) -> None:
    names = ["a", "b", "c"]
    for name in names:
        gates[name] = asyncio.Event()
    async with start_worker(redis_url, registry, pool=POOL):
        ids = {n: await aclient.submit(POOL, "gated", {"name": n}) for n in names}
        completed = aclient.as_completed(list(ids.values()), timeout=30)
        seen = []
        for name in ("c", "a", "b"):
            gates[name].set()
            record = await anext(completed)
            seen.append(record.output["name"])
            assert record.job_id == ids[name] and record.state is JobState.SUCCEEDED
        assert [r async for r in completed] == []
    assert seen == ["c", "a", "b"]


async def test_blocking_as_completed_yields_jobs_in_completion_order(
    redis_url: str, registry: Registry, gates: dict[str, asyncio.Event], client: Client
) -> None:
    for name in ("x", "y"):
        gates[name] = asyncio.Event()
    async with start_worker(redis_url, registry, pool=POOL):
        x, y = (client.submit(POOL, "gated", {"name": n}) for n in ("x", "y"))
        completed = client.as_completed([x, y], timeout=30)
        gates["y"].set()
        first = await asyncio.to_thread(next, completed)
        gates["x"].set()
        second = await asyncio.to_thread(next, completed)
        rest = await asyncio.to_thread(list, completed)
    assert (first.job_id, second.job_id, rest) == (y, x, [])


async def test_wait_many_returns_every_record_by_id_in_the_order_given(
    redis_url: str, registry: Registry, gates: dict[str, asyncio.Event], client: Client, aclient: AsyncClient
) -> None:
    names = ["a", "b", "c"]
    for name in names:
        gates[name] = asyncio.Event()
    async with start_worker(redis_url, registry, pool=POOL):
        ids = {n: await aclient.submit(POOL, "gated", {"name": n}) for n in names}
        many = asyncio.ensure_future(aclient.wait_many(list(ids.values()), timeout=30))
        for name in ("c", "a", "b"):  # finished in another order than asked for
            gates[name].set()
            await aclient.wait(ids[name], 30)
        records = await many
        blocking = await asyncio.to_thread(client.wait_many, [ids["b"], ids["c"], ids["b"], ids["a"]], 30)
    assert list(records) == [ids["a"], ids["b"], ids["c"]]
    assert list(blocking) == [ids["b"], ids["c"], ids["a"]]
    assert [r.output["name"] for r in records.values()] == names
    assert all(r.state is JobState.SUCCEEDED for r in records.values())


async def test_wait_many_times_out_naming_the_pending_jobs(client: Client, aclient: AsyncClient) -> None:
    done, pending, waiting = client.submit_many(POOL, "resize_image", [{"url": "u", "width": 1}] * 3)
    client.cancel(done)
    with pytest.raises(TimeoutError) as timed_out:
        client.wait_many([done, pending, waiting], timeout=0.2)
    assert f"2 job(s) still unfinished after 0.2s: {pending}, {waiting}" in str(timed_out.value)
    assert done not in str(timed_out.value)
    with pytest.raises(TimeoutError, match=f"{pending}, {waiting}"):
        await aclient.wait_many([pending, waiting], timeout=0.2)


async def test_as_completed_yields_the_finished_then_times_out_naming_the_pending_jobs(
    client: Client, aclient: AsyncClient
) -> None:
    done, pending = client.submit_many(POOL, "resize_image", [{"url": "u", "width": 1}] * 2)
    client.cancel(done)
    completed = aclient.as_completed([done, pending], timeout=0.2)
    assert (await anext(completed)).job_id == done
    with pytest.raises(TimeoutError, match=f"1 job\\(s\\) still unfinished after 0.2s: {pending}$"):
        await anext(completed)
    blocking = client.as_completed([done, pending], timeout=0.2)
    assert next(blocking).job_id == done
    with pytest.raises(TimeoutError, match=pending):
        next(blocking)


def test_wait_many_raises_not_found_for_an_unknown_id(client: Client) -> None:
    job_id = client.submit(POOL, "resize_image", {"url": "u", "width": 1})
    with pytest.raises(JobNotFoundError, match="no-such-job"):
        client.wait_many([job_id, "no-such-job"], timeout=1)
