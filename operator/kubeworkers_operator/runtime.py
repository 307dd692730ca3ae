"""Everything one running operator holds: clients, the index, the writers, the queues.

Built once at startup (:func:`kubeworkers_operator.lifecycle.start`) and
handed to every handler through kopf's ``memo``; the kopf decorators in
:mod:`kubeworkers_operator.main` pass it on to the domain functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis.asyncio as aioredis
from kubeworkers.resources import WORKERPOOL_PLURAL

from kubeworkers_operator.adapters.enqueuer import Enqueuer
from kubeworkers_operator.adapters.events import EventRecorder
from kubeworkers_operator.adapters.kube import KubeApi, custom_path
from kubeworkers_operator.adapters.metrics import OperatorMetrics
from kubeworkers_operator.adapters.pool_status import PoolStatusWriter
from kubeworkers_operator.adapters.status_writer import JobStatusWriter
from kubeworkers_operator.model.index import ClusterIndex, TrackedPool
from kubeworkers_operator.model.ttl import TtlQueue
from kubeworkers_operator.settings import OperatorSettings


@dataclass
class Runtime:
    """The operator's state and clients (one per process)."""

    settings: OperatorSettings
    api: KubeApi
    redis: aioredis.Redis
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
