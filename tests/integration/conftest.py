"""Fixtures of the integration tests (the redis-server itself, ``redis_url`` and
``redis_factory``, come from tests/conftest.py).

- ``r``: an asyncio client of the test's (flushed) Redis, closed afterwards.
- ``redis_sync``: the same as a blocking client, for tests that are not coroutines.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio as aioredis
from kubeworkers import Registry
from kubeworkers.client import AsyncClient


@pytest.fixture
async def r(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[AsyncClient]:
    """An SDK client with an empty registry: in these tests the worker, not the client, is under test
    (modules testing the client itself define their own)."""
    async with AsyncClient(redis_url, registry=Registry()) as c:
        yield c


@pytest.fixture
def redis_sync(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()
