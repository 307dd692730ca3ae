"""Everything one running operator holds: clients, the index, the writers, the queues.

Built once at startup (:func:`kubeworkers_operator.lifecycle.start`) and
handed to every handler through kopf's ``memo``; the kopf decorators in
:mod:`kubeworkers_operator.main` pass it on to the domain functions.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from kubeworkers.resources import WORKERPOOL_PLURAL

from kubeworkers_operator.adapters.enqueuer import Enqueuer
from kubeworkers_operator.adapters.events import EventRecorder
from kubeworkers_operator.adapters.kube import KubeApi, custom_path
from kubeworkers_operator.adapters.metrics import OperatorMetrics
from kubeworkers_operator.adapters.pool_redis import PoolRedisUnavailable, RedisByPool
from kubeworkers_operator.adapters.pool_status import PoolStatusWriter
from kubeworkers_operator.adapters.status_writer import JobStatusWriter
from kubeworkers_operator.model.index import ClusterIndex, TrackedPool
from kubeworkers_operator.model.ttl import TtlQueue
from kubeworkers_operator.settings import OperatorSettings

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    """The operator's state and clients (one per process)."""

    settings: OperatorSettings
    api: KubeApi
    redis: aioredis.Redis
    """The operator's own Redis (``--redis-url``): that of every pool naming no Secret of its own."""
    metrics: OperatorMetrics
    recorder: EventRecorder
    writer: JobStatusWriter
    enqueuer: Enqueuer
    index: ClusterIndex
    pool_status: PoolStatusWriter
    ttl: TtlQueue = field(default_factory=TtlQueue)
    waiting: set[str] = field(default_factory=set)
    """Job ids in phase Pending: waiting for their pool, their handler, or Redis."""
    cancel_sent: set[str] = field(default_factory=set)
    """Uids of Jobs whose cancellation was already handed to Redis by this process."""
    pool_redis: RedisByPool | None = None
    """Each pool's Redis (built from ``api`` and ``redis`` when not given)."""

    def __post_init__(self) -> None:
        if self.pool_redis is None:
            self.pool_redis = RedisByPool(self.api, self.redis, self.settings.redis_url)

    @property
    def redises(self) -> RedisByPool:
        assert self.pool_redis is not None
        return self.pool_redis

    async def redis_of(self, namespace: str, pool: str) -> aioredis.Redis:
        """The client of the pool's Redis; raises :class:`PoolRedisUnavailable` when its Secret yields none.

        The pool's spec comes from the index (a pool not there any more: where it last was).
        """
        tracked = self.index.pools.get((namespace, pool))
        if tracked is not None:
            self.redises.note_pool(namespace, pool, tracked.spec)
        return await self.redises.client_for(namespace, pool)

    async def lookup_pool(self, namespace: str, name: str) -> TrackedPool | None:
        """The WorkerPool from the index, or from the apiserver when the index has not seen it yet.

        Jobs and pools come from two separate watches; a Job applied together with
        its pool may arrive first, and must not be told its pool does not exist.
        """
        pool = self.index.pools.get((namespace, name))
        if pool is not None:
            return pool
        body = await self.api.get_or_none(custom_path(WORKERPOOL_PLURAL, namespace, name))
        return None if body is None else self.index.observe_pool(body)


async def group_by_redis(
    rt: Runtime, pools: Iterable[tuple[str, str]],
) -> list[tuple[aioredis.Redis, list[tuple[str, str]]]]:
    """``pools`` (namespace, name) grouped by the client of their Redis, in first-seen order.

    A pool whose Redis is unavailable is left out (logged at debug: the Jobs' conditions and
    Events say it). A runtime without pool routing (a test's stand-in with only ``redis``) has
    every pool on its one Redis.
    """
    if getattr(rt, "pool_redis", None) is None:
        listed = list(pools)
        return [(rt.redis, listed)] if listed else []
    groups: dict[int, tuple[aioredis.Redis, list[tuple[str, str]]]] = {}
    for namespace, name in pools:
        try:
            client = await rt.redis_of(namespace, name)
        except PoolRedisUnavailable as exc:
            logger.debug("pool %s/%s skipped: %s", namespace, name, exc)
            continue
        groups.setdefault(id(client), (client, []))[1].append((namespace, name))
    return list(groups.values())


def redis_label(rt: Runtime, client: aioredis.Redis) -> str:
    """What logs call ``client``: the Secret it came from, or the operator's own Redis (never a URL)."""
    routes = getattr(rt, "pool_redis", None)
    return "the operator's own Redis" if routes is None else str(routes.label(client))


def redis_clients(rt: Runtime) -> list[aioredis.Redis]:
    """Every Redis in use: the operator's own first, then each distinct one a pool is on."""
    routes = getattr(rt, "pool_redis", None)
    return [rt.redis] if routes is None else [client for _, client in routes.in_use()]
