"""Fixtures of the fault suite, and its summary table printed at the end of the run."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import redis
from kubeworkers import Registry
from kubeworkers.client import Client

from tests.chaos.harness import RESULTS, table
from tests.support.redis_fixtures import private_redis
from tests.support.redis_server import RedisServer
from tests.support.workers import as_job_objects


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if RESULTS:
        terminalreporter.write_sep("=", "fault suite (tests/chaos): every job's ending")
        terminalreporter.write_line(table(RESULTS))


@pytest.fixture
def rng() -> random.Random:
    return random.Random(20261202)




@pytest.fixture
def redis_always() -> Iterator[RedisServer]:
    """A private redis-server with the append-only file fsynced on every write."""
    yield from private_redis(aof=True, fsync="always")


@pytest.fixture
def redis_everysec() -> Iterator[RedisServer]:
    """A private redis-server with the append-only file fsynced once a second (Redis' default)."""
    yield from private_redis(aof=True, fsync="everysec")


@pytest.fixture
def admin(redis_always: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_always.url)
    yield client
    client.close()


@pytest.fixture
def sdk(redis_always: RedisServer) -> Iterator[Client]:
    with Client(redis_always.url, registry=Registry()) as client:
        yield as_job_objects(client)  # the ledger reads the events (tests/chaos/harness.py)
