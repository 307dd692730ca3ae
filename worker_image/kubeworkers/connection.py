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

Following the master means following the Sentinels' newest word, not the node a connection
happens to reach. In a planned failover (``SENTINEL FAILOVER``) the replica is promoted at once,
but the old master is demoted only when the Sentinels next look at it, about 10 s later: until
then it is a master that takes writes, and the failover loses them. So here:

- the master is the one named with the highest *config epoch* among the Sentinels that answer
  (each failover raises it), not the first Sentinel's answer, which may still be the old one
  for a couple of seconds;
- a connection of the asyncio client that comes back to the pool while the master has moved
  is closed, not reused (redis-py's blocking pool does so; its asyncio pool keeps it, and every
  later command on it went to the old master until that answered ``READONLY``);
- :func:`follow_master` asks the Sentinels now and drops connections to a master that is not
  one any more; the worker calls it on every heartbeat, so within a beat of a failover its lease
  renewals reach the new master (before, a worker whose connections all reached the old master
  renewed there for those 10 s, and on the new master its running jobs' leases expired and were
  handed out again).

- ``redis+cluster://[[user]:password@]host[:port][,host[:port]...]``: some nodes of a Redis
  Cluster (port 6379 by default; the client learns the others with ``CLUSTER SLOTS``);
  ``rediss+cluster://`` is the same with TLS. The client is redis-py's ``RedisCluster``: it sends
  each command to the master of its key's slot, follows ``MOVED`` (a slot moved: it refreshes its
  slot map) and ``ASK`` (a slot mid-migration) itself, and after a failover finds the promoted
  replica from the nodes that still answer. What differs from one server (docs/scaling-out.md,
  *Redis Cluster*): every command and script call of kubeworkers names keys of one pool (one
  slot), so routing needs nothing from us; a pipeline is split per node (``ClusterPipeline``:
  not a transaction, which kubeworkers never asks for); ``EVALSHA`` goes to the slot of its first
  key, and ``NOSCRIPT`` from a promoted replica is answered by ``EVAL`` as on one server
  (:mod:`kubeworkers.scripts`); ``PUBLISH`` reaches every node's subscribers (the cluster bus
  forwards it); a durable submit's ``WAIT`` cannot be used (it has no key, so no node to go to).
  The client is typed as ``redis.Redis`` (:data:`Client`): kubeworkers calls only the commands
  both have, with the same signatures.

A URL that is none of these is refused with :class:`~kubeworkers.redis_url.RedisUrlError`, one
line that never contains the password (:func:`kubeworkers.redis_url.redacted`); the parsing is
the pure :mod:`kubeworkers.redis_url`.
"""

from __future__ import annotations

from typing import Any, cast

import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.asyncio.sentinel as aiosentinel
import redis.cluster
import redis.sentinel
from redis.exceptions import RedisClusterException

from kubeworkers import redis_url
from kubeworkers.redis_url import ClusterUrl, RedisUrlError, SentinelUrl

__all__ = [
    "ClusterUrl", "RedisUrlError", "SentinelUrl", "aclose", "close", "connect", "connect_async", "follow_master",
    "is_cluster_client",
]

#: What :func:`connect` returns. A ``redis.cluster.RedisCluster`` is not a ``redis.Redis`` subclass,
#: but every command kubeworkers sends has the same name and signature on both, and so does
#: ``pipeline(transaction=False)``; the one alias keeps the callers' annotations one type
#: (:func:`is_cluster_client` tells the two apart where they differ: blocking reads over many slots).
Client = redis.Redis
#: What :func:`connect_async` returns (see :data:`Client`).
AsyncClient = aioredis.Redis


def is_cluster_client(r: object) -> bool:
    """Whether ``r`` is a Redis Cluster client (of a ``redis+cluster://`` URL)."""
    return isinstance(r, redis.cluster.RedisCluster | aiocluster.RedisCluster)


def _cluster_kwargs(parsed: ClusterUrl, options: dict[str, Any]) -> dict[str, Any]:
    kwargs = dict(options, username=parsed.username, password=parsed.password)
    if parsed.tls:
        kwargs["ssl"] = True
    return kwargs


def newest_master(answers: list[dict[str, Any]]) -> tuple[str, int] | None:
    """The master of the highest config epoch among the Sentinels' valid answers (``SENTINEL
    MASTERS`` states of one master name), or None when there is none."""
    if not answers:
        return None
    newest = max(answers, key=lambda state: int(state.get("config-epoch", 0)))
    return str(newest["ip"]), int(newest["port"])


def _newest_or_raise(
    answers: list[dict[str, Any]], errors: list[str], service_name: str, not_found: type[Exception],
) -> tuple[str, int]:
    """:func:`newest_master` of the answers, or ``not_found`` in redis-py's words (both clients)."""
    found = newest_master(answers)
    if found is None:
        raise not_found(f"No master found for {service_name!r}" + (f" : {', '.join(errors)}" if errors else ""))
    return found


class _Sentinel(redis.sentinel.Sentinel):
    """Blocking Sentinel client that follows the newest configuration (see the module docstring)."""

    def discover_master(self, service_name: str) -> tuple[str, int]:
        answers, errors = [], []
        for sentinel in self.sentinels:
            try:
                masters: Any = sentinel.sentinel_masters()
                state = masters.get(service_name)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                errors.append(f"{sentinel} - {exc!r}")
                continue
            if state and self.check_master_state(state, service_name):  # type: ignore[no-untyped-call]
                answers.append(state)
        return _newest_or_raise(answers, errors, service_name, redis.sentinel.MasterNotFoundError)


class _AsyncSentinel(aiosentinel.Sentinel):
    """:class:`_Sentinel` for asyncio."""

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        answers, errors = [], []
        for sentinel in self.sentinels:
            try:
                masters: Any = await sentinel.sentinel_masters()
                state = masters.get(service_name)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                errors.append(f"{sentinel} - {exc!r}")
                continue
            if state and self.check_master_state(state, service_name):
                answers.append(state)
        return _newest_or_raise(answers, errors, service_name, aiosentinel.MasterNotFoundError)


class _AsyncSentinelPool(aiosentinel.SentinelConnectionPool):
    """The asyncio Sentinel pool, closing a connection that comes back to a master that moved."""

    async def release(self, connection: Any) -> None:
        if self.master_address is not None and (connection.host, connection.port) != self.master_address:
            await connection.disconnect()
        await super().release(connection)


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
    if redis_url.is_cluster(url):
        nodes = redis_url.parse_cluster_url(url)
        startup = [redis.cluster.ClusterNode(h, p) for h, p in nodes.nodes]  # type: ignore[no-untyped-call]
        try:  # the blocking cluster client reads the slot map at once (the asyncio one at its first command)
            cluster = redis.cluster.RedisCluster(startup_nodes=startup, **_cluster_kwargs(nodes, options))
        except RedisClusterException as exc:  # not a RedisError: said as the ConnectionError every caller knows
            cause = type(exc.__cause__ or exc).__name__  # AuthenticationError, ConnectionError...
            raise redis.ConnectionError(f"no node of {redis_url.where(url)} could be used ({cause})") from None
        return cast(Client, cluster)
    if not redis_url.is_sentinel(url):
        return redis.Redis.from_url(url, **options)
    parsed = redis_url.parse_sentinel_url(url)
    master, sentinel_kwargs = _sentinel_kwargs(parsed, options)
    # Through Any: redis-py before 8.2 leaves these untyped, 8.2 types them (one spelling for both).
    manager = cast(Any, _Sentinel)(list(parsed.sentinels), sentinel_kwargs=sentinel_kwargs)
    return cast(redis.Redis, manager.master_for(parsed.master_name, **master))


def connect_async(url: str, **options: Any) -> aioredis.Redis:
    """:func:`connect` for asyncio code."""
    redis_url.check_url(url)
    if redis_url.is_cluster(url):
        nodes = redis_url.parse_cluster_url(url)
        cluster = aiocluster.RedisCluster(
            startup_nodes=[aiocluster.ClusterNode(h, p) for h, p in nodes.nodes], **_cluster_kwargs(nodes, options))
        return cast(AsyncClient, cluster)
    if not redis_url.is_sentinel(url):
        return aioredis.Redis.from_url(url, **options)
    parsed = redis_url.parse_sentinel_url(url)
    master, sentinel_kwargs = _sentinel_kwargs(parsed, options)
    manager = cast(Any, _AsyncSentinel)(list(parsed.sentinels), sentinel_kwargs=sentinel_kwargs)  # as in connect
    return cast(aioredis.Redis, manager.master_for(
        parsed.master_name, connection_pool_class=_AsyncSentinelPool, **master,
    ))


async def follow_master(r: aioredis.Redis) -> None:
    """For a client of a ``redis+sentinel://`` URL: ask the Sentinels where the master is now, and
    if it moved, close the connections to the old one (idle ones at once, busy ones when they come
    back), so the next command reaches the new master. Nothing for any other URL."""
    pool = getattr(r, "connection_pool", None)  # a cluster client has one pool per node, and follows itself
    if isinstance(pool, aiosentinel.SentinelConnectionPool):
        await pool.get_master_address()  # type: ignore[no-untyped-call]


def close(r: redis.Redis) -> None:
    """Close a client of :func:`connect`, and for a Sentinel URL its connections to the Sentinels."""
    manager = getattr(getattr(r, "connection_pool", None), "sentinel_manager", None)
    r.close()
    if manager is not None:
        manager.close()


async def aclose(r: aioredis.Redis) -> None:
    """:func:`close` for a client of :func:`connect_async`."""
    manager = getattr(getattr(r, "connection_pool", None), "sentinel_manager", None)
    await r.aclose()
    if manager is not None:
        await manager.aclose()
