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


@pytest.fixture
async def r(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def redis_sync(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()
