"""The WorkerPool path: its Deployment, its autoscaler loop, its status, its waiting Jobs.

Pools are few, so their handling is direct: every watch event of a pool
server-side applies the Deployment built by
:mod:`kubeworkers_operator.model.deployment` when the pool's ``generation``
moved (or the first time this process sees it), starts or updates the pool's
autoscaler, and lets Jobs that waited for the pool go. The Deployment's replica
counts reach the pool's status through :mod:`kubeworkers_operator.adapters.pool_status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from kubeworkers_operator.adapters.events import ObjectRef
from kubeworkers_operator.adapters.kube import (
    ApiError,
    Conflict,
    KubeApi,
    NotFound,
    deployment_path,
    disruption_budget_path,
)
from kubeworkers_operator.adapters.pool_redis import PoolRedisUnavailable
from kubeworkers_operator.autoscaling import AutoscalerMetrics, KubernetesScaler, PoolAutoscaler
from kubeworkers_operator.flows import jobs
from kubeworkers_operator.model.deployment import (
    build_deployment,
    build_disruption_budget,
    initial_replicas,
    selector_string,
)
from kubeworkers_operator.model.index import TrackedPool
from kubeworkers_operator.model.names import FIELD_MANAGER, deployment_name
from kubeworkers_operator.model.redis_source import REDIS_UNAVAILABLE
from kubeworkers_operator.runtime import Runtime

logger = logging.getLogger(__name__)


@dataclass
class _RunningScaler:
    scaler: PoolAutoscaler
    task: asyncio.Task[None]
    redis: aioredis.Redis
    """The client its signals are read with: a pool whose Secret now names another Redis gets a new scaler."""


@dataclass
class PoolControllers:
    """One autoscaler loop per pool, plus what was last applied per pool."""

    api: KubeApi | None = None
    """The autoscalers' own client: scale writes never queue behind a burst of status writes."""
    metrics: AutoscalerMetrics | None = None
    scalers: dict[tuple[str, str], _RunningScaler] = field(default_factory=dict)
    applied_generation: dict[tuple[str, str], int] = field(default_factory=dict)
    redis_warned: dict[tuple[str, str], str] = field(default_factory=dict)
    """Each pool's Redis problem last posted as a Warning Event (posted once per problem)."""

    async def redis_for(self, rt: Runtime, pool: TrackedPool) -> aioredis.Redis | None:
        """The pool's Redis client, or None (a Warning Event on the pool, once per problem) when its
        Secret yields none."""
        key = (pool.namespace, pool.name)
        try:
            client = await rt.redis_of(pool.namespace, pool.name)
        except PoolRedisUnavailable as exc:
            if self.redis_warned.get(key) != str(exc):
                self.redis_warned[key] = str(exc)
                rt.recorder.warning(pool_ref(pool), REDIS_UNAVAILABLE,
                                    f"{exc}: the pool's Jobs wait as Pending and it is not autoscaled")
            return None
        if self.redis_warned.pop(key, None) is not None:
            rt.recorder.normal(pool_ref(pool), "RedisAvailable",
                               f"the pool's Redis is back ({rt.redises.describe(*key)})")
        return client

    async def ensure_scaler(self, rt: Runtime, pool: TrackedPool) -> None:
        key = (pool.namespace, pool.name)
        running = self.scalers.get(key)
        if pool.spec is None or not rt.settings.autoscaling or not pool.spec.autoscaling.enabled:
            await self.stop_scaler(key)
            return
        redis = await self.redis_for(rt, pool)
        if redis is None:  # nothing to read its signals from: the pool-redis chore starts it once there is
            await self.stop_scaler(key)
            return
        if running is not None and not running.task.done() and running.redis is redis:
            running.scaler.update_spec(pool.spec)
            return
        if running is not None:
            await self.stop_scaler(key)  # its Redis moved (or its loop ended): start afresh on the new one
        kube = KubernetesScaler(
            pool.namespace, pool.name, self.api or rt.api, rt.recorder, pool_uid=pool.uid, pool_status=rt.pool_status
        )
        scaler = PoolAutoscaler(pool.namespace, pool.name, redis, kube, spec=pool.spec, metrics=self.metrics)
        task = asyncio.create_task(scaler.run(), name=f"autoscaler-{pool.namespace}/{pool.name}")
        self.scalers[key] = _RunningScaler(scaler, task, redis)

    async def stop_scaler(self, key: tuple[str, str]) -> None:
        running = self.scalers.pop(key, None)
        if running is None:
            return
        try:
            await asyncio.wait_for(running.scaler.stop(), 10)
        except TimeoutError:
            running.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await running.task

    async def cancel_all(self) -> None:
        """Stop every autoscaler now, mid-decision if need be: a leader losing its Lease must not scale on."""
        running, self.scalers = list(self.scalers.values()), {}
        for each in running:
            each.task.cancel()
        await asyncio.gather(*(each.task for each in running), return_exceptions=True)


def pool_ref(pool: TrackedPool) -> ObjectRef:
    return ObjectRef.workerpool(pool.namespace, pool.name, pool.uid)


async def apply_deployment(rt: Runtime, pool: TrackedPool) -> None:
    """Create the pool's Deployment and PodDisruptionBudget, or bring them in line with the pool's spec.

    Created with the initial replica count; afterwards server-side applied
    without ``replicas`` (unless the pool autoscales not at all), so the
    autoscaler's scale writes are never undone.
    """
    assert pool.spec is not None
    manifest = build_deployment(
        name=pool.name, namespace=pool.namespace, uid=pool.uid, spec=pool.spec,
        default_redis_secret=rt.settings.default_redis_secret,
    )
    name = deployment_name(pool.name)
    # A plain create first: had server-side apply created it, the operator's manager would own
    # `replicas`, and every later apply without it would hand the field back to its default.
    created = {**manifest, "spec": {**manifest["spec"]}}
    created["spec"].setdefault("replicas", initial_replicas(pool.spec))
    # The disruption budget first: a node drain that starts while the Deployment is new finds it.
    await rt.api.apply(
        disruption_budget_path(pool.namespace, name),
        build_disruption_budget(name=pool.name, namespace=pool.namespace, uid=pool.uid),
        manager=FIELD_MANAGER,
    )
    try:
        await rt.api.request(
            "POST", deployment_path(pool.namespace), body=created, params={"fieldManager": FIELD_MANAGER}
        )
    except Conflict:  # it exists: bring it in line
        await rt.api.apply(deployment_path(pool.namespace, name), manifest, manager=FIELD_MANAGER)
        rt.metrics.deployments_applied.inc()
        return
    rt.metrics.deployments_applied.inc()
    rt.recorder.normal(pool_ref(pool), "DeploymentCreated", f"created Deployment {name}")


async def on_pool_event(
    rt: Runtime, controllers: PoolControllers, event_type: str | None, body: Mapping[str, Any]
) -> None:
    """React to one watch event of a WorkerPool (kopf's ``on.event``)."""
    meta = body.get("metadata", {})
    key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
    if event_type == "DELETED":
        rt.index.forget_pool(*key)
        rt.pool_status.forget(*key)
        controllers.applied_generation.pop(key, None)
        controllers.redis_warned.pop(key, None)
        await controllers.stop_scaler(key)
        if controllers.metrics is not None:
            controllers.metrics.forget(*key)  # a deleted pool must not linger on dashboards
        # The garbage collector removes the Deployment (owner reference); its Jobs wait for a namesake.
        await jobs.park_jobs_of_deleted_pool(rt, *key)
        return
    pool = rt.index.observe_pool(body)
    rt.pool_status.observe(pool.namespace, pool.name, body.get("status"))
    if pool.spec is None:
        # Once per generation: status updates of the same pool must not repeat the warning.
        if controllers.applied_generation.get(key) != -pool.generation:
            controllers.applied_generation[key] = -pool.generation
            rt.recorder.warning(pool_ref(pool), "InvalidSpec", "the WorkerPool spec does not parse; nothing applied")
        return
    await sync_pool(rt, controllers, pool)
    await controllers.ensure_scaler(rt, pool)


def observe(rt: Runtime, event_type: str | None, body: Mapping[str, Any]) -> None:
    """A standby's handling of a WorkerPool's watch event: remember it (the leader applies and scales)."""
    meta = body.get("metadata", {})
    key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
    if event_type == "DELETED":
        rt.index.forget_pool(*key)
        rt.pool_status.forget(*key)
        return
    rt.index.observe_pool(body)
    rt.pool_status.observe(*key, body.get("status"))


async def take_over(rt: Runtime, controllers: PoolControllers) -> None:
    """On becoming the leader: apply each known pool's Deployment (none applied this term) and start its autoscaler."""
    for pool in list(rt.index.pools.values()):
        try:
            await sync_pool(rt, controllers, pool)
            await controllers.ensure_scaler(rt, pool)
        except Exception:
            logger.exception("take-over of pool %s/%s failed (the pool resync retries)", pool.namespace, pool.name)


async def sync_pool(rt: Runtime, controllers: PoolControllers, pool: TrackedPool) -> None:
    """Apply the pool's Deployment if this generation has not been applied yet, then free its waiting Jobs."""
    key = (pool.namespace, pool.name)
    if pool.spec is None or controllers.applied_generation.get(key) == pool.generation:
        return
    try:
        await apply_deployment(rt, pool)
    except ApiError as exc:
        rt.recorder.warning(pool_ref(pool), "DeploymentFailed", f"could not apply the Deployment: {exc}")
        raise
    controllers.applied_generation[key] = pool.generation
    # The scale subresource's labelSelectorPath (HPA, kubectl scale) and the generation acted on.
    with contextlib.suppress(NotFound):
        await rt.pool_status.merge(
            pool.namespace, pool.name, {"selector": selector_string(pool.name), "observedGeneration": pool.generation}
        )
    await jobs.retry_waiting(rt, pool.namespace, pool.name)


async def resync_pools(rt: Runtime, controllers: PoolControllers) -> None:
    """The `pool-resync` chore: follow every pool's Redis Secret (:func:`refresh_redis`), and retry
    pools whose Deployment could not be applied."""
    await refresh_redis(rt, controllers)
    for pool in list(rt.index.pools.values()):
        try:
            await sync_pool(rt, controllers, pool)
        except ApiError as exc:
            logger.warning("Deployment of pool %s/%s still not applied: %s", pool.namespace, pool.name, exc)


async def refresh_redis(rt: Runtime, controllers: PoolControllers) -> int:
    """Read every pool's Redis Secret again (one GET each), and follow what changed (``pool-resync`` chore).

    A pool whose Secret now yields another URL gets its autoscaler on the new Redis (and the status
    sync's fleet a consumer there); one whose Secret came back (created, fixed, readable again)
    gets its autoscaler and its waiting Jobs enqueued; one whose Secret went bad gets a Warning
    Event and no autoscaler. Returns the Secrets whose reading changed.
    """
    for pool in list(rt.index.pools.values()):
        rt.redises.note_pool(pool.namespace, pool.name, pool.spec)
    changed = await rt.redises.refresh()
    for source in changed:
        for key in rt.redises.pools_of(source):
            tracked = rt.index.pools.get(key)
            if tracked is None:
                continue
            try:
                await controllers.ensure_scaler(rt, tracked)
                if key not in controllers.redis_warned:
                    await jobs.retry_waiting(rt, *key)
            except Exception:
                logger.exception("following the Redis of pool %s/%s failed (retried next turn)", *key)
    return len(changed)


async def on_deployment_event(rt: Runtime, event_type: str | None, body: Mapping[str, Any], pool_name: str) -> None:
    """Copy the worker Deployment's replica counts into its WorkerPool's status."""
    if event_type == "DELETED":
        return
    namespace = body.get("metadata", {}).get("namespace", "")
    desired = (body.get("spec") or {}).get("replicas")
    await rt.pool_status.mirror_replicas(
        namespace, pool_name, body.get("status"), desired=None if desired is None else int(desired)
    )
