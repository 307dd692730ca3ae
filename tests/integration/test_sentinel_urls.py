"""Sentinel URLs at the command line and in a worker process: a password-protected master found
through Sentinels, durable submits that say clearly when no replica acknowledged them, bad URLs
refused in one line, and the password in none of it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from kubeworkers import AsyncClient, JobContext, Registry
from kubeworkers.protocol import JobState, PoolKeys
from pydantic import BaseModel

from tests.integration.test_worker_cli_errors import assert_one_line_error, kubeworkers
from tests.support.sentinel import SentinelSet
from tests.support.workers import WorkerProcess, start_worker, until

PASSWORD = "pw-5e2b-sentinel-never-log-me"


class Nothing(BaseModel):
    pass


@pytest.fixture
def protected_sentinels() -> Iterator[SentinelSet]:
    with SentinelSet(password=PASSWORD) as s:
        yield s


def test_a_worker_and_the_cli_given_a_sentinel_url_run_a_durable_job_without_logging_the_password(
    protected_sentinels: SentinelSet,
) -> None:
    url = protected_sentinels.url
    assert PASSWORD in url
    worker = WorkerProcess(url, "w-sentinel")
    try:
        worker.wait_started()
        done = kubeworkers("submit", "--redis-url", url, "--pool", "p", "--job-id", "j1", "--durable", "1",
                           "--input", '{"text": "a b a"}', "--wait", "30", "word_count")
        assert done.returncode == 0, done.stderr
        assert '"Succeeded"' in done.stdout
        worker.terminate()
        worker.wait(30)
        assert PASSWORD not in done.stdout + done.stderr + worker.log()
    finally:
        worker.close()
    # The job is on the replica too: that is what --durable waited for.
    replica = next(n for n in protected_sentinels.nodes if n.port != protected_sentinels.master_port())
    with protected_sentinels.node_client(replica) as r:
        assert r.hget(PoolKeys("default", "p").record("j1"), "state") == JobState.SUCCEEDED.value


def test_a_durable_submit_no_replica_acknowledges_fails_clearly_and_the_job_is_still_queued(redis_url: str) -> None:
    done = kubeworkers("submit", "--redis-url", redis_url, "--pool", "p", "--job-id", "alone", "--durable", "1",
                       "--durable-timeout", "0.2", "word_count")
    assert_one_line_error(done, says="0 of 1 replica(s) acknowledged job(s) alone within 0.2s", code=1)
    assert "submitting the same job ids again is safe" in done.stderr
    state = redis.Redis.from_url(redis_url).hget(PoolKeys("default", "p").record("alone"), "state")
    assert state == JobState.QUEUED.value.encode()


@pytest.mark.parametrize(("url", "says"), [
    ("redis+sentinel://:hunter2@127.0.0.1:26379", "names the master"),
    ("redis+sentinel://:hunter2@127.0.0.1:26379/kw/db1", "bad database number"),
    ("redis+sentinel://hunter2@127.0.0.1:26379/kw", "colon is missing"),
])
@pytest.mark.parametrize("command", ["worker", "get"])
def test_a_bad_sentinel_url_is_refused_in_one_line_without_the_password(url: str, says: str, command: str) -> None:
    args = ["worker", "--pool", "p", "--import", "kubeworkers.examples"] if command == "worker" else ["get", "job"]
    done = kubeworkers(*args, "--redis-url", url)
    assert_one_line_error(done, says=says, code=2)
    assert "hunter2" not in done.stderr + done.stdout


def test_a_durable_submit_with_a_nonsense_replica_count_is_a_usage_error(redis_url: str) -> None:
    done = kubeworkers("submit", "--redis-url", redis_url, "--pool", "p", "--durable", "0", "word_count")
    assert_one_line_error(done, says="durable replicas must be a whole number >= 1", code=2)


async def test_a_durable_worker_whose_redis_has_no_replica_runs_nothing_and_hands_its_takes_back(
    redis_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    reg = Registry()
    ran: list[str] = []

    @reg.handler("item")
    async def item(inp: Nothing, ctx: JobContext) -> None:
        ran.append(ctx.job_id)

    async with AsyncClient(redis_url, registry=reg) as client:
        await client.submit("p", "item", {}, job_id="unsafe")
        async with start_worker(redis_url, reg, durable_replicas=1):
            await until(lambda: "acknowledged by 0 of 1 replica(s)" in caplog.text, 20,
                        "the worker to say no replica acknowledged its take")
        record = await client.get("unsafe", pool="p")
    assert ran == []
    assert record is not None and record.state is JobState.QUEUED and record.attempts == 0
