"""The SDK (Client and AsyncClient) on a real Redis, with a real in-process worker where a job must run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio as aioredis
from kubeworkers import AsyncClient, Client, InvalidInputError, JobNotFoundError, Registry
from kubeworkers.protocol import JobMessage, JobState, PoolKeys, Priority
from pydantic import BaseModel

from tests.support.workers import start_worker


class Resize(BaseModel):
    url: str
    width: int


@pytest.fixture
def registry() -> Registry:
    reg = Registry()

    @reg.handler("resize_image", timeout=30)
    async def resize(inp: Resize) -> dict[str, int]:
        return {"width": inp.width}

    return reg


@pytest.fixture
def client(redis_url: str, registry: Registry) -> Iterator[Client]:
    with Client(redis_url, registry=registry) as c:
        yield c


@pytest.fixture
async def aclient(redis_url: str, registry: Registry) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(redis_url, registry=registry) as c:
        yield c


def stream_entries(redis_url: str, priority: str = "normal") -> list[JobMessage]:
    r = redis.Redis.from_url(redis_url)
    entries = r.xrange(PoolKeys("default", "pool").stream(priority))
    r.close()
    return [JobMessage.from_fields(f) for _, f in entries]  # type: ignore[union-attr]


def test_submit_writes_the_same_message_the_operator_writes(redis_url: str, client: Client) -> None:
    job_id = client.submit("pool", "resize_image", Resize(url="u", width=3), priority="high", timeout=5,
                           max_attempts=2)
    [msg] = stream_entries(redis_url, "high")
    assert msg.job_id == job_id and msg.uid == job_id
    assert (msg.namespace, msg.pool, msg.handler) == ("default", "pool", "resize_image")
    assert msg.input == {"url": "u", "width": 3}
    assert (msg.priority, msg.timeout_seconds, msg.max_attempts) == (Priority.HIGH, 5, 2)


def test_submitting_the_same_job_id_twice_enqueues_once(redis_url: str, client: Client) -> None:
    first = client.submit("pool", "resize_image", {"url": "u", "width": 1}, job_id="report-42")
    second = client.submit("pool", "resize_image", {"url": "u", "width": 1}, job_id="report-42")
    assert first == second == "report-42"
    assert len(stream_entries(redis_url)) == 1


def test_input_is_validated_at_submit_when_the_handler_is_importable(redis_url: str, client: Client) -> None:
    with pytest.raises(InvalidInputError, match="width"):
        client.submit("pool", "resize_image", {"url": "u", "width": "wide"})
    assert stream_entries(redis_url) == []


def test_input_of_a_handler_unknown_here_is_sent_as_given(redis_url: str, client: Client) -> None:
    client.submit("pool", "elsewhere.handler", {"anything": [1, 2]})
    assert stream_entries(redis_url)[0].input == {"anything": [1, 2]}


def test_submit_many_enqueues_in_bulk_and_skips_known_job_ids(redis_url: str, client: Client) -> None:
    ids = client.submit_many("pool", "resize_image", [{"url": "u", "width": i} for i in range(300)])
    assert len(set(ids)) == 300
    again = client.submit_many("pool", "resize_image", [{"url": "u", "width": 1}] * 2, job_ids=[ids[0], "new"])
    assert again == [ids[0], "new"]
    assert len(stream_entries(redis_url)) == 301


def test_get_finds_a_job_by_id_alone_and_returns_none_for_unknown_ids(client: Client) -> None:
    job_id = client.submit("pool", "resize_image", {"url": "u", "width": 1})
    rec = client.get(job_id)
    assert rec is not None and rec.pool == "pool" and rec.state is JobState.QUEUED
    assert client.get("no-such-job") is None


def test_wait_raises_timeout_while_the_job_is_unfinished_and_not_found_for_unknown_ids(client: Client) -> None:
    job_id = client.submit("pool", "resize_image", {"url": "u", "width": 1})
    with pytest.raises(TimeoutError, match="Queued"):
        client.wait(job_id, 0.2)
    with pytest.raises(JobNotFoundError):
        client.wait("no-such-job", 1)


def test_cancel_of_a_queued_job_by_id(client: Client) -> None:
    job_id = client.submit("pool", "resize_image", {"url": "u", "width": 1})
    assert client.cancel(job_id)
    assert client.wait(job_id, 5).state is JobState.CANCELLED
    assert not client.cancel(job_id)
    assert not client.cancel("no-such-job")


async def test_async_client_submits_waits_for_and_reads_a_job_run_by_a_worker(
    redis_url: str, aclient: AsyncClient, registry: Registry
) -> None:
    async with start_worker(redis_url, registry, pool="pool"):
        job_id = await aclient.submit("pool", "resize_image", Resize(url="u", width=640))
        done = await aclient.wait(job_id, 30)
        many = await aclient.submit_many("pool", "resize_image", [{"url": "u", "width": w} for w in (1, 2)])
        outs = [(await aclient.wait(j, 30)).output for j in many]
    assert done.state is JobState.SUCCEEDED and done.output == {"width": 640}
    assert outs == [{"width": 1}, {"width": 2}]
    assert (await aclient.get(job_id)) == done


async def test_async_client_cancel_and_validation(redis_url: str, aclient: AsyncClient) -> None:
    with pytest.raises(InvalidInputError):
        await aclient.submit("pool", "resize_image", {"url": "u"})
    job_id = await aclient.submit("pool", "resize_image", {"url": "u", "width": 1})
    assert await aclient.cancel(job_id)
    assert (await aclient.wait(job_id, 5)).state is JobState.CANCELLED
    r = aioredis.Redis.from_url(redis_url)
    assert await r.exists(PoolKeys("default", "pool").cancel(job_id))
    await r.aclose()


def test_client_uses_its_namespace_for_keys(redis_url: str, registry: Registry) -> None:
    with Client(redis_url, namespace="team-a", registry=registry) as c:
        job_id = c.submit("pool", "resize_image", {"url": "u", "width": 1})
        rec = c.get(job_id)
    assert rec is not None and rec.namespace == "team-a"
    r = redis.Redis.from_url(redis_url)
    assert r.exists(PoolKeys("team-a", "pool").record(job_id))
    r.close()
