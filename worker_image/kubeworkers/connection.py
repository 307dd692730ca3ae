"""Redis URLs to clients: the one place a Redis connection is made, plain or through Sentinel.

Every process that takes a Redis URL (worker, SDK clients, CLI, operator) builds its client
here, so every one of them accepts the same URLs:

- ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS), ``unix://...``:
  handed to redis-py's ``from_url`` unchanged.
- ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/<master-name>[/db]``:
  the hosts are Sentinels (port 26379 by default); the client asks them where the master named
  ``<master-name>`` is, connects there, and asks again whenever a connection to the master fails
  or the node it reached answers ``READONLY`` (a master demoted by a failover). The password
  (and user) authenticate to the master, not to the Sentinels. ``rediss+sentinel://`` is the
  same with TLS to the master and the Sentinels.

A URL that is none of these is refused with :class:`~kubeworkers.redis_url.RedisUrlError`, one
line that never contains the password (:func:`kubeworkers.redis_url.redacted`); the parsing is
the pure :mod:`kubeworkers.redis_url`.
"""

from __future__ import annotations

from typing import Any, cast

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel

from kubeworkers import redis_url
from kubeworkers.redis_url import RedisUrlError, SentinelUrl

__all__ = ["RedisUrlError", "SentinelUrl", "aclose", "close", "connect", "connect_async"]

def _sentinel_kwargs(parsed: SentinelUrl, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(keyword arguments of the master's connections, of the Sentinels' connections)."""
    master = dict(options, db=parsed.db, username=parsed.username, password=parsed.password)
    sentinel = {k: v for k, v in options.items() if k.startswith("socket_")}
    if parsed.tls:
        master["ssl"] = True
        sentinel["ssl"] = True
    return master, sentinel


def connect(url: str, **options: Any) -> redis.Redis:
    """A blocking client for ``url``; ``options`` are redis-py connection options (timeouts...)."""
    redis_url.check_url(url)
    if not redis_url.is_sentinel(url):
        return redis.Redis.from_url(url, **options)
    parsed = redis_url.parse_sentinel_url(url)
    master, sentinel_kwargs = _sentinel_kwargs(parsed, options)
    manager = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        list(parsed.sentinels), sentinel_kwargs=sentinel_kwargs,
    )
    return cast(redis.Redis, manager.master_for(parsed.master_name, **master))  # type: ignore[no-untyped-call]


def connect_async(url: str, **options: Any) -> aioredis.Redis:
    """:func:`connect` for asyncio code."""
    redis_url.check_url(url)
    if not redis_url.is_sentinel(url):
        return aioredis.Redis.from_url(url, **options)
    parsed = redis_url.parse_sentinel_url(url)
    master, sentinel_kwargs = _sentinel_kwargs(parsed, options)
    manager = aiosentinel.Sentinel(  # type: ignore[no-untyped-call]
        list(parsed.sentinels), sentinel_kwargs=sentinel_kwargs,
    )
    return cast(aioredis.Redis, manager.master_for(parsed.master_name, **master))


def close(r: redis.Redis) -> None:
    """Close a client of :func:`connect`, and for a Sentinel URL its connections to the Sentinels."""
    manager = getattr(r.connection_pool, "sentinel_manager", None)
    r.close()
    if manager is not None:
        manager.close()


async def aclose(r: aioredis.Redis) -> None:
    """:func:`close` for a client of :func:`connect_async`."""
    manager = getattr(r.connection_pool, "sentinel_manager", None)
    await r.aclose()
    if manager is not None:
        await manager.aclose()
