"""Each WorkerPool's Redis: its Secret read, one client per distinct URL, shared by the pools on it.

A pool that names a Secret (``spec.redis``) has its streams, records and events on the Redis that
Secret holds; every operator path that touches a pool's keys (enqueue, status sync, resync, orphan
sweep, TTL, positions, the trim chore, the autoscaler's signals) asks :meth:`RedisByPool.client_for`
for the pool's client. A pool that names none is on the operator's own Redis (``--redis-url``).

The Secrets are read with a GET (never listed or watched: the operator's RBAC is ``get`` on
Secrets, nothing that enumerates them, docs/security.md) when a pool is first used, and re-read by
the ``pool-redis`` chore (:meth:`RedisByPool.refresh`), so an edited Secret (a new password, a moved
server) is followed within a chore period. Pools whose Secrets hold the same URL share one client
(one connection pool); the operator's own URL is the operator's own client.

URLs are only ever held here, in memory: a client is named in logs and messages by the Secret
that led to it (:attr:`RedisByPool.label`), a Secret that yields no URL by a message naming the
Secret (:class:`~kubeworkers_operator.model.redis_source.SecretProblem`), never by the value.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import redis.asyncio as aioredis
from kubeworkers import connection
from kubeworkers.resources import WorkerPoolSpec

from kubeworkers_operator.adapters.kube import ApiError, Forbidden, KubeApi, NotFound, core_path
from kubeworkers_operator.model.redis_source import (
    OPERATOR_REDIS,
    RedisSource,
    SecretProblem,
    describe,
    source_of,
    url_from_secret,
)

logger = logging.getLogger(__name__)

#: Options of the pools' Redis clients: the operator's own client's, plus a connect timeout, so a
#: pool's Redis that does not answer at all (a firewalled address) fails its callers within seconds.
CLIENT_OPTIONS: dict[str, float] = {"health_check_interval": 30, "socket_connect_timeout": 5.0}


class PoolRedisUnavailable(Exception):
    """The pool's Secret yields no Redis URL (missing, unreadable, no such key, not a URL).

    ``str()`` names the Secret and what is wrong with it, never its value.
    """


@dataclass(frozen=True)
class Reading:
    """One read of a pool's Secret: the URL it holds, or why there is none."""

    url: str | None
    problem: str | None = None


def _connect(url: str) -> aioredis.Redis:
    return connection.connect_async(url, **CLIENT_OPTIONS)


class RedisByPool:
    """The Redis clients of every pool the operator serves (one per distinct URL)."""

    def __init__(
        self, api: KubeApi, default: aioredis.Redis, default_url: str,
        *, connect: Callable[[str], aioredis.Redis] = _connect,
    ) -> None:
        self._api = api
        self.default = default
        """The operator's own client (``--redis-url``): pools without ``spec.redis``, and the Lease's peers."""
        self._default_url = default_url
        self._connect = connect
        self._clients: dict[str, aioredis.Redis] = {default_url: default}
        self._labels: dict[str, str] = {default_url: OPERATOR_REDIS}
        self._readings: dict[RedisSource, Reading] = {}
        self._pools: dict[tuple[str, str], RedisSource | None] = {}
        """Each pool's last known source; kept after the pool is deleted (its parked Jobs stay there)."""

    # ------------------------------------------------------------------ pools

    def note_pool(self, namespace: str, name: str, spec: WorkerPoolSpec | None) -> RedisSource | None:
        """Remember where the pool ``namespace/name`` (with ``spec``) has its Redis; returns its source."""
        source = source_of(namespace, spec)
        self._pools[(namespace, name)] = source
        return source

    def source(self, namespace: str, name: str) -> RedisSource | None:
        return self._pools.get((namespace, name))

    def describe(self, namespace: str, name: str) -> str:
        """Where the pool's Redis comes from, for messages (a Secret's name, never a URL)."""
        return describe(self.source(namespace, name))

    async def client_for(self, namespace: str, name: str) -> aioredis.Redis:
        """The client of the pool's Redis (as last noted by :meth:`note_pool`; unknown: the operator's own).

        Raises :class:`PoolRedisUnavailable` when the pool's Secret yields no URL. The Secret is
        read the first time it is needed; afterwards the ``pool-redis`` chore keeps it fresh.
        """
        source = self._pools.get((namespace, name))
        if source is None:
            return self.default
        reading = self._readings.get(source)
        if reading is None:
            reading = await self.read(source)
        if reading.url is None:
            raise PoolRedisUnavailable(reading.problem or f"{source.describe()} yields no Redis URL")
        return self._client(reading.url, source)

    # ------------------------------------------------------------------ Secrets

    async def read(self, source: RedisSource) -> Reading:
        """GET the Secret now and remember what it says (a URL, or the problem)."""
        where = source.describe()
        try:
            body = await self._api.get_or_none(core_path("secrets", source.namespace, source.secret))
            reading = Reading(url_from_secret(source, body))
        except SecretProblem as exc:
            reading = Reading(None, str(exc))
        except Forbidden:
            reading = Reading(None, f"the operator may not read {where} (its RBAC needs get on secrets)")
        except NotFound:
            reading = Reading(None, f"{where} does not exist")
        except ApiError as exc:
            reading = Reading(None, f"could not read {where} (HTTP {exc.status})")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            reading = Reading(None, f"could not read {where} ({type(exc).__name__})")
        previous = self._readings.get(source)
        self._readings[source] = reading
        if previous is not None and previous != reading:
            if reading.url is None:
                logger.warning("the Redis of %s is unavailable: %s", where, reading.problem)
            else:
                logger.info("%s now names %s Redis", where, "another" if previous.url else "a usable")
        return reading

    async def refresh(self) -> set[RedisSource]:
        """Read every Secret a known pool names again (one GET each); returns those whose reading changed."""
        changed: set[RedisSource] = set()
        for source in {s for s in self._pools.values() if s is not None}:
            before = self._readings.get(source)
            after = await self.read(source)
            if before != after:
                changed.add(source)
        return changed

    def pools_of(self, source: RedisSource) -> list[tuple[str, str]]:
        """The pools (namespace, name) whose Redis is read from ``source``."""
        return [key for key, s in self._pools.items() if s == source]

    # ------------------------------------------------------------------ clients

    def _client(self, url: str, source: RedisSource) -> aioredis.Redis:
        client = self._clients.get(url)
        if client is None:
            client = self._clients[url] = self._connect(url)
            self._labels[url] = f"the Redis of {source.describe()}"
        return client

    def in_use(self) -> list[tuple[str, aioredis.Redis]]:
        """Every distinct Redis some pool is on, with its :meth:`label` (the operator's own first).

        The label names a Secret, not a URL: callers log by it.
        """
        urls = [self._default_url]
        for source in sorted({s for s in self._pools.values() if s is not None}, key=repr):
            reading = self._readings.get(source)
            if reading is not None and reading.url is not None and reading.url not in urls:
                urls.append(reading.url)
                self._client(reading.url, source)
        return [(self._labels[url], self._clients[url]) for url in urls]

    def url_of(self, client: aioredis.Redis) -> str | None:
        """The URL ``client`` was made from (None: not one of these, or retired). For code that
        needs a second client of the same Redis (the console's blocking reads); never logged."""
        for url, known in self._clients.items():
            if known is client:
                return url
        return None

    def label(self, client: aioredis.Redis) -> str:
        """What logs call ``client``: the Secret it came from, or the operator's own Redis."""
        for url, known in self._clients.items():
            if known is client:
                return self._labels[url]
        return "a Redis no pool uses any more"

    async def retire_unused(self) -> list[aioredis.Redis]:
        """Close the clients of URLs no pool is on any more (a Secret edited to another URL); returns them."""
        used = {id(c) for _, c in self.in_use()}
        retired = [(url, c) for url, c in self._clients.items() if id(c) not in used]
        for url, client in retired:
            del self._clients[url]
            self._labels.pop(url, None)
            await connection.aclose(client)
        return [c for _, c in retired]

    async def close(self) -> None:
        """Close every pool client (not the operator's own: its owner closes it)."""
        for url, client in list(self._clients.items()):
            if client is not self.default:
                await connection.aclose(client)
            del self._clients[url]
