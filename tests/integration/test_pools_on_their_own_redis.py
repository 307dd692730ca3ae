"""Pools on two separate real Redis servers: the operator's Job path, status sync and autoscaler
each use the Redis the pool's Secret names, not the operator's own.

Real ``redis-server`` processes and real workers; the Kubernetes side is an in-memory object
store with the apiserver's merge-patch and resourceVersion semantics (the real apiserver path is
tests/e2e/test_pools_on_two_redis.py). The operator's Runtime is built as ``lifecycle.start``
builds it, with that store as its API client.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis
from kubeworkers import connection
from kubeworkers.protocol import PoolKeys
from kubeworkers.registry import Registry
from kubeworkers.resources import JOB_PLURAL, WORKERPOOL_PLURAL
from kubeworkers_operator.adapters.enqueuer import Enqueuer
from kubeworkers_operator.adapters.events import EventRecorder
from kubeworkers_operator.adapters.kube import Conflict, NotFound, core_path, custom_path, deployment_path
from kubeworkers_operator.adapters.metrics import OperatorMetrics
from kubeworkers_operator.adapters.pool_status import PoolStatusWriter
from kubeworkers_operator.adapters.status_writer import JobStatusWriter
from kubeworkers_operator.autoscaling import AutoscalerMetrics
from kubeworkers_operator.flows import jobs, pools
from kubeworkers_operator.flows.pools import PoolControllers
from kubeworkers_operator.flows.status_sync import SyncFleet
from kubeworkers_operator.model.index import ClusterIndex
from kubeworkers_operator.model.names import deployment_name
from kubeworkers_operator.runtime import Runtime
from kubeworkers_operator.settings import OperatorSettings
from pydantic import BaseModel

from hack.polling import wait_for_async
from tests.support.redis_fixtures import private_redis
from tests.support.redis_server import RedisServer
from tests.support.workers import start_worker

NS = "team"
PASSWORD = "pool-b-s3cret"


class MemoryKube:
    """The few apiserver calls the operator's Job, pool and autoscaler paths make, on objects in memory."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []

    def put(self, path: str, body: dict[str, Any]) -> None:
        body.setdefault("metadata", {}).setdefault("resourceVersion", "1")
        self.objects[path] = copy.deepcopy(body)

    async def get_or_none(self, path: str) -> dict[str, Any] | None:
        found = self.objects.get(path)
        return None if found is None else copy.deepcopy(found)

    async def get(self, path: str, params: Any = None) -> dict[str, Any]:
        found = await self.get_or_none(path)
        if found is None:
            raise NotFound(404, "GET", path, "")
        return found

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        target = path.removesuffix("/status")
        obj = self.objects.get(target)
        if obj is None:
            raise NotFound(404, "PATCH", path, "")
        wanted_rv = (patch.get("metadata") or {}).get("resourceVersion")
        if wanted_rv is not None and wanted_rv != obj["metadata"]["resourceVersion"]:
            raise Conflict(409, "PATCH", path, "")
        merged = _merge(obj, {k: v for k, v in patch.items() if k != "metadata"})
        merged["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
        self.objects[target] = merged
        return copy.deepcopy(merged)

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if path.endswith("/events"):
            self.events.append(body)
        return body

    async def apply(self, path: str, body: dict[str, Any], *, manager: str) -> dict[str, Any]:
        return body  # the pool's Deployment and disruption budget: not what these tests look at

    async def request(self, method: str, path: str, **_: Any) -> dict[str, Any]:
        return {}

    async def list_all(self, path: str, *, label_selector: str | None = None, page: int = 500) -> list[Any]:
        return []  # no worker pods: the workers of these tests are in-process

    async def close(self) -> None:
        return None

    def job(self, name: str) -> dict[str, Any]:
        return self.objects[custom_path(JOB_PLURAL, NS, name)]

    def replicas(self, pool: str) -> int:
        return int(self.objects[deployment_path(NS, deployment_name(pool), "scale")]["spec"]["replicas"])

    def events_of(self, name: str) -> list[tuple[str, str, str]]:
        return [(e["type"], e["reason"], e["message"]) for e in self.events if e["involvedObject"]["name"] == name]


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def secret(kube: MemoryKube, name: str, url: str) -> None:
    kube.put(core_path("secrets", NS, name), {
        "metadata": {"name": name, "namespace": NS}, "data": {"url": base64.b64encode(url.encode()).decode()},
    })


def pool(kube: MemoryKube, rt: Runtime, name: str, redis_secret: str | None = None) -> None:
    spec: dict[str, Any] = {
        "image": "w:1", "imports": ["app"], "concurrency": 2, "minReplicas": 0, "maxReplicas": 3,
        "autoscaling": {"pollSeconds": 1, "idleSecondsBeforeZero": 600},
    }
    if redis_secret is not None:
        spec["redis"] = {"secretName": redis_secret}
    body = {"metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1}, "spec": spec}
    kube.put(custom_path(WORKERPOOL_PLURAL, NS, name), body)
    kube.put(deployment_path(NS, deployment_name(name), "scale"), {"spec": {"replicas": 0}})
    rt.index.observe_pool(body)


async def submit_cr(kube: MemoryKube, rt: Runtime, name: str, pool_name: str) -> None:
    """A Job CR as kubectl applies it, handed to the operator's Job path as its watch event would be."""
    body = {
        "apiVersion": "workers.io/v1alpha1", "kind": "Job",
        "metadata": {"name": name, "namespace": NS, "uid": str(uuid.uuid4()), "generation": 1},
        "spec": {"pool": pool_name, "handler": "echo", "input": {"word": name}},
    }
    kube.put(custom_path(JOB_PLURAL, NS, name), body)
    await jobs.on_job_event(rt, "ADDED", kube.job(name))


def phase(kube: MemoryKube, name: str) -> str | None:
    return (kube.job(name).get("status") or {}).get("phase")


def enqueued_condition(kube: MemoryKube, name: str) -> dict[str, Any]:
    (cond,) = [c for c in kube.job(name)["status"]["conditions"] if c["type"] == "Enqueued"]
    return cond  # type: ignore[no-any-return]


class Word(BaseModel):
    word: str


def registry() -> Registry:
    reg = Registry()

    @reg.handler("echo")
    async def echo(inp: Word) -> dict[str, str]:
        return {"echo": inp.word}

    return reg


@dataclass
class Operator:
    rt: Runtime
    controllers: PoolControllers
    kube: MemoryKube


@asynccontextmanager
async def operator(kube: MemoryKube, own_url: str) -> AsyncIterator[Operator]:
    """The leader's Runtime, status-sync fleet and autoscalers, as ``lifecycle.start`` wires them."""
    settings = OperatorSettings(redis_url=own_url, namespaces=[NS], consumer_name="op-test")
    metrics = OperatorMetrics()
    own = connection.connect_async(own_url)
    api: Any = kube
    recorder = EventRecorder(api, metrics)
    index = ClusterIndex()
    rt = Runtime(
        settings=settings, api=api, redis=own, metrics=metrics, recorder=recorder,
        writer=JobStatusWriter(api, index, recorder, metrics), enqueuer=Enqueuer(own, linger=0.005),
        index=index, pool_status=PoolStatusWriter(api),
    )
    controllers = PoolControllers(api=api, metrics=AutoscalerMetrics(metrics.registry))
    recorder.start()
    fleet = SyncFleet(rt, claim_at_start=True)
    task = asyncio.create_task(fleet.run())
    try:
        yield Operator(rt, controllers, kube)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await controllers.cancel_all()
        await recorder.stop()
        await rt.enqueuer.close()
        await rt.redises.close()
        await connection.aclose(own)


@pytest.fixture
def pool_b_redis() -> Iterator[RedisServer]:
    """A second redis-server, with a password (which must never show in a status, an Event or a log)."""
    yield from private_redis(password=PASSWORD)


def url_of(server: RedisServer) -> str:
    return f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"


async def stream_length(r: aioredis.Redis, pool_name: str) -> int:
    keys = PoolKeys(NS, pool_name)
    return sum([int(await r.xlen(name)) if await r.exists(name) else 0 for name in keys.streams])


async def test_job_crs_of_pools_on_two_redis_servers_are_enqueued_synced_and_scaled_from_their_own_redis(
    redis_url: str, pool_b_redis: RedisServer,
) -> None:
    kube = MemoryKube()
    b_url = url_of(pool_b_redis)
    secret(kube, "b-redis", b_url)
    own = aioredis.Redis.from_url(redis_url)
    b = aioredis.Redis.from_url(b_url)
    async with operator(kube, redis_url) as op, AsyncExitStack() as workers:
        pool(kube, op.rt, "alpha")  # no spec.redis: the operator's own Redis
        pool(kube, op.rt, "beta", redis_secret="b-redis")
        for name in ("alpha", "beta"):
            await op.controllers.ensure_scaler(op.rt, op.rt.index.pools[(NS, name)])

        await submit_cr(kube, op.rt, "job-a", "alpha")
        await submit_cr(kube, op.rt, "job-b", "beta")
        assert phase(kube, "job-a") == phase(kube, "job-b") == "Queued"
        # Each Job is on its own pool's Redis, and only there.
        assert await stream_length(own, "alpha") == 1 and await stream_length(b, "beta") == 1
        assert await stream_length(own, "beta") == 0 and await stream_length(b, "alpha") == 0

        # Both autoscalers read their backlog from the right Redis and scale their pools from zero.
        for name in ("alpha", "beta"):
            scaler = op.controllers.scalers[(NS, name)].scaler
            await wait_for_async(lambda s=scaler: s.last_load is not None and s.last_load.backlog == 1,  # type: ignore[misc]
                                 timeout=20, what=f"the {name} autoscaler to see its job")
            await wait_for_async(lambda n=name: kube.replicas(n) >= 1, timeout=20,  # type: ignore[misc]
                                 what=f"pool {name} scaled up from zero")
        assert op.controllers.scalers[(NS, "beta")].redis is not op.rt.redis

        # One worker per pool, each on its pool's Redis; the status sync reads both events streams.
        await workers.enter_async_context(start_worker(redis_url, registry(), "alpha", namespace=NS))
        await workers.enter_async_context(start_worker(b_url, registry(), "beta", namespace=NS))
        for name in ("job-a", "job-b"):
            await wait_for_async(lambda n=name: phase(kube, n) == "Succeeded", timeout=30,  # type: ignore[misc]
                                 what=f"{name} Succeeded")
            assert kube.job(name)["status"]["output"] == {"echo": name}
        assert len(op.rt.redises.in_use()) == 2
    await own.aclose()
    await b.aclose()


async def test_a_pool_whose_redis_is_down_or_whose_secret_is_missing_waits_pending_and_runs_once_it_is_back(
    redis_url: str, pool_b_redis: RedisServer, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    kube = MemoryKube()
    b_url = url_of(pool_b_redis)
    secret(kube, "b-redis", b_url)
    pool_b_redis.stop()  # beta's Redis is down from the start
    async with operator(kube, redis_url) as op, AsyncExitStack() as workers:
        pool(kube, op.rt, "alpha")
        pool(kube, op.rt, "beta", redis_secret="b-redis")
        pool(kube, op.rt, "gamma", redis_secret="gamma-redis")  # that Secret does not exist yet
        for name in ("alpha", "beta", "gamma"):
            await op.controllers.ensure_scaler(op.rt, op.rt.index.pools[(NS, name)])
        await submit_cr(kube, op.rt, "job-a", "alpha")
        await submit_cr(kube, op.rt, "job-b", "beta")
        await submit_cr(kube, op.rt, "job-c", "gamma")

        for name, secret_name in (("job-b", "b-redis"), ("job-c", "gamma-redis")):
            assert phase(kube, name) == "Pending"
            cond = enqueued_condition(kube, name)
            assert (cond["status"], cond["reason"]) == ("False", "RedisUnavailable")
            assert f"Secret {NS}/{secret_name}" in cond["message"]
        assert "does not exist" in enqueued_condition(kube, "job-c")["message"]
        await wait_for_async(lambda: kube.events_of("job-b") and kube.events_of("job-c"), timeout=10,
                             what="the Warning Events of the waiting Jobs")
        for name in ("job-b", "job-c"):
            assert [(kind, reason) for kind, reason, _ in kube.events_of(name)] == [("Warning", "RedisUnavailable")]
        assert (NS, "gamma") not in op.controllers.scalers  # nothing to read its signals from

        # The pool on a Redis that is up goes on meanwhile.
        assert phase(kube, "job-a") == "Queued"
        await workers.enter_async_context(start_worker(redis_url, registry(), "alpha", namespace=NS))
        await wait_for_async(lambda: phase(kube, "job-a") == "Succeeded", timeout=30, what="job-a Succeeded")

        # beta's Redis comes back; gamma's Secret is created, naming the same Redis (one client for both).
        pool_b_redis.start()
        secret(kube, "gamma-redis", b_url)
        await pools.resync_pools(op.rt, op.controllers)  # the pool-resync chore
        await jobs.retry_waiting(op.rt)  # the pending-retry chore
        assert phase(kube, "job-b") == phase(kube, "job-c") == "Queued"
        assert len(op.rt.redises.in_use()) == 2
        assert op.controllers.scalers[(NS, "gamma")].redis is op.controllers.scalers[(NS, "beta")].redis
        await workers.enter_async_context(start_worker(b_url, registry(), "beta", namespace=NS))
        await workers.enter_async_context(start_worker(b_url, registry(), "gamma", namespace=NS))
        for name in ("job-b", "job-c"):
            await wait_for_async(lambda n=name: phase(kube, n) == "Succeeded", timeout=30,  # type: ignore[misc]
                                 what=f"{name} Succeeded once its Redis is back")

    # The password of beta's Redis is nowhere the operator writes: statuses, Events, logs.
    assert PASSWORD not in repr(kube.objects) + repr(kube.events)
    operator_logs = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("kubeworkers_operator"))
    assert PASSWORD not in operator_logs and b_url not in operator_logs
