"""A job's identity is (namespace, pool, job_id): the job -> pools pointer agrees (issue 17, defect 9).

Real redis-server; the CLI as a subprocess.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from kubeworkers import AmbiguousJobIdError, Client, queue
from kubeworkers.protocol import JOB_HINT_TTL, JobState, PoolKeys, job_pool_key

from tests.integration.test_worker_cli_errors import assert_one_line_error, kubeworkers


@pytest.fixture
def client(redis_url: str) -> Iterator[Client]:
    with Client(redis_url) as c:
        yield c


def test_the_same_id_on_two_pools_is_two_jobs_and_get_without_a_pool_names_both(
    client: Client, redis_sync: redis.Redis
) -> None:
    client.submit("alpha", "h", {"n": 1}, job_id="report-42")
    client.submit("beta", "h", {"n": 2}, job_id="report-42")
    assert redis_sync.xlen(PoolKeys("default", "alpha").stream("normal")) == 1
    assert redis_sync.xlen(PoolKeys("default", "beta").stream("normal")) == 1
    with pytest.raises(AmbiguousJobIdError, match=r"alpha, beta.*pass pool=") as raised:
        client.get("report-42")
    assert raised.value.pools == ["alpha", "beta"]
    with pytest.raises(AmbiguousJobIdError):
        client.wait("report-42", 1)
    with pytest.raises(AmbiguousJobIdError):
        client.cancel("report-42")
    alpha, beta = client.get("report-42", pool="alpha"), client.get("report-42", pool="beta")
    assert alpha is not None and alpha.input == {"n": 1}
    assert beta is not None and beta.input == {"n": 2}


def test_get_without_a_pool_takes_the_one_pool_whose_record_still_exists(
    client: Client, redis_sync: redis.Redis
) -> None:
    client.submit("alpha", "h", job_id="report-42")
    client.submit("beta", "h", job_id="report-42")
    redis_sync.delete(PoolKeys("default", "alpha").record("report-42"))  # as when its record expired
    found = client.get("report-42")
    assert found is not None and found.pool == "beta"
    assert client.cancel("report-42")
    assert client.wait("report-42", 5).state is JobState.CANCELLED


def test_deleting_a_job_removes_its_pool_from_the_pointer_and_the_last_one_removes_the_key(
    client: Client, redis_sync: redis.Redis
) -> None:
    client.submit("alpha", "h", job_id="report-42")
    client.submit("beta", "h", job_id="report-42")
    queue.delete_job_sync(redis_sync, "default", "alpha", "report-42")
    assert queue.find_pools_sync(redis_sync, "default", "report-42") == ["beta"]
    queue.delete_job_sync(redis_sync, "default", "beta", "report-42")
    assert queue.find_pools_sync(redis_sync, "default", "report-42") == []
    assert not redis_sync.exists(job_pool_key("default", "report-42"))
    assert client.get("report-42") is None


def test_an_old_string_pointer_of_the_same_id_causes_no_error(client: Client, redis_sync: redis.Redis) -> None:
    redis_sync.set("kw:{default}:jobpool:report-42", "alpha")  # the key layout before the pointer became a set
    client.submit("beta", "h", job_id="report-42")
    found = client.get("report-42")
    assert found is not None and found.pool == "beta"


def test_the_pointer_is_a_hint_that_lives_its_own_ttl_from_its_last_write(
    client: Client, redis_sync: redis.Redis
) -> None:
    # The hint is in the namespace's slot, so no script touches it (docs/protocol.md): the client
    # writes it beside the enqueue with JOB_HINT_TTL, and a finish leaves it alone.
    client.submit("alpha", "h", job_id="report-42")
    assert 0 < redis_sync.ttl(job_pool_key("default", "report-42")) <= JOB_HINT_TTL
    redis_sync.expire(job_pool_key("default", "report-42"), 60)
    assert client.cancel("report-42")
    assert 0 < redis_sync.ttl(job_pool_key("default", "report-42")) <= 60
    client.submit("beta", "h", job_id="report-42")  # another enqueue of the id: the hint lives on
    assert redis_sync.ttl(job_pool_key("default", "report-42")) > JOB_HINT_TTL - 60
    assert queue.find_pools_sync(redis_sync, "default", "report-42") == ["alpha", "beta"]


def test_cli_get_of_an_id_on_two_pools_without_a_pool_says_pass_pool_and_exits_non_zero(
    redis_url: str, client: Client
) -> None:
    client.submit("alpha", "h", job_id="report-42")
    client.submit("beta", "h", job_id="report-42")
    done = kubeworkers("get", "report-42", "--redis-url", redis_url)
    assert_one_line_error(done, says="report-42 is on pools alpha, beta: pass --pool", code=1)
    picked = kubeworkers("get", "report-42", "--redis-url", redis_url, "--pool", "beta")
    assert picked.returncode == 0, picked.stderr
    assert '"pool": "beta"' in picked.stdout
