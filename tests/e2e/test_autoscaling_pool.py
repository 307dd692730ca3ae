"""The autoscaler end to end: real apiserver, real Deployment and ReplicaSet controllers, real Redis,
real worker processes (started per Running pod by the kubelet stand-in).

The :class:`PoolAutoscaler` is driven directly here (not through the operator), on the operator's
own Kubernetes edge (``KubeApi`` and its Event recorder), with the worker Deployment built by the
operator's own :func:`build_deployment`; only the container command is swapped for a launcher that
registers a test handler before running the real ``Worker``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import kopf
import pytest
import redis.asyncio as aioredis
from kubeworkers.protocol import JobMessage, JobRecord, JobState, PoolKeys
from kubeworkers.queue import enqueue_many
from kubeworkers.resources import WorkerPoolSpec
from kubeworkers_operator.adapters.events import EventRecorder
from kubeworkers_operator.adapters.kube import KubeApi
from kubeworkers_operator.adapters.metrics import OperatorMetrics
from kubeworkers_operator.autoscaling import KubernetesScaler, PoolAutoscaler
from kubeworkers_operator.model.defaults import DEFAULT_REDIS_SECRET
from kubeworkers_operator.model.deployment import build_deployment
from kubeworkers_operator.model.names import deployment_name, pod_selector

from hack.polling import wait_for_async
from tests.e2e.operator_fixtures import install_crds
from tests.support.cluster import Cluster
from tests.support.pod_runner import PodRunner

# The pod's container: the real Worker, plus one handler that sleeps for the job's `seconds`.
LAUNCHER = r"""
import asyncio, signal
from pydantic import BaseModel
from kubeworkers.registry import handler
from kubeworkers.settings import settings_from
from kubeworkers.worker import Worker

class Nap(BaseModel):
    seconds: float

@handler("nap")
async def nap(inp: Nap, ctx) -> dict:
    await asyncio.sleep(inp.seconds)
    return {"slept": inp.seconds}

async def main() -> None:
    worker = Worker(settings_from())
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.stop)
    await worker.run()

asyncio.run(main())
"""


@dataclass
class Pool:
    name: str
    namespace: str
    keys: PoolKeys
    redis: aioredis.Redis
    scaler: PoolAutoscaler
    cluster: Cluster
    api: Any

    async def replicas(self) -> int:
        from kubernetes import client

        scale = await asyncio.to_thread(
            client.AppsV1Api(self.api).read_namespaced_deployment_scale, deployment_name(self.name), self.namespace
        )
        return int(scale.spec.replicas or 0)

    async def pods(self) -> dict[str, bool]:
        """Worker pod name -> terminating."""
        from kubernetes import client

        pods = await asyncio.to_thread(
            client.CoreV1Api(self.api).list_namespaced_pod, self.namespace, label_selector=pod_selector(self.name)
        )
        return {p.metadata.name: p.metadata.deletion_timestamp is not None for p in pods.items}

    async def submit(self, jobs: list[tuple[str, float]]) -> None:
        msgs = [
            JobMessage(
                job_id=job_id, uid=job_id, namespace=self.namespace, pool=self.name, handler="nap",
                input={"seconds": seconds},
            )
            for job_id, seconds in jobs
        ]
        assert all(await enqueue_many(self.redis, msgs))

    async def records(self, job_ids: list[str]) -> dict[str, JobRecord]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(self.keys.record(job_id))
        return {
            job_id: JobRecord.from_hash(raw)
            for job_id, raw in zip(job_ids, await pipe.execute(), strict=True)
            if raw
        }

    def events(self) -> list[str]:
        out = self.cluster.kubectl(
            "get", "events", "-n", self.namespace, "-o", "json",
            "--field-selector", f"involvedObject.name={self.name},involvedObject.kind=WorkerPool",
        ).stdout
        return [f"{e['reason']}: {e['message']}" for e in json.loads(out)["items"]]

    def status(self) -> dict[str, Any]:
        out = self.cluster.kubectl("get", "workerpools.workers.io", self.name, "-n", self.namespace, "-o", "json")
        status: dict[str, Any] = json.loads(out.stdout).get("status", {})
        return status


def operator_api(cluster: Cluster) -> KubeApi:
    """The operator's own async client, logged in from the test cluster's kubeconfig as kopf would."""
    with mock.patch.dict(os.environ, {"KUBECONFIG": cluster.kubeconfig}):
        info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    assert info is not None
    return KubeApi(info)


def pool_manifest(name: str, *, concurrency: int, max_replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "workers.io/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": name},
        "spec": {
            "image": "example.invalid/worker:1",
            "imports": ["json"],
            "concurrency": concurrency,
            "minReplicas": 0,
            "maxReplicas": max_replicas,
            "terminationGracePeriodSeconds": 60,
            "autoscaling": {
                "targetDrainSeconds": 10,
                "scaleDownStabilizationSeconds": 5,
                "idleSecondsBeforeZero": 5,
                "pollSeconds": 1,
            },
        },
    }


@contextlib.asynccontextmanager
async def running_pool(
    cluster: Cluster, namespace: str, redis_url: str, tmp_path: Path, name: str, *, concurrency: int, max_replicas: int
) -> AsyncIterator[Pool]:
    install_crds(cluster)
    cluster.kubectl(
        "create", "secret", "generic", DEFAULT_REDIS_SECRET, "-n", namespace, f"--from-literal=url={redis_url}"
    )
    manifest = pool_manifest(name, concurrency=concurrency, max_replicas=max_replicas)
    cluster.apply(json.dumps(manifest), namespace=namespace)
    uid = json.loads(cluster.kubectl("get", "workerpools.workers.io", name, "-n", namespace, "-o", "json").stdout)[
        "metadata"
    ]["uid"]
    spec = WorkerPoolSpec.model_validate(manifest["spec"])
    deployment = build_deployment(name=name, namespace=namespace, uid=uid, spec=spec)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["command"] = [sys.executable, "-c", LAUNCHER]
    container["args"] = []
    deployment["spec"]["replicas"] = 0
    cluster.apply(json.dumps(deployment), namespace=namespace)

    api = cluster.api_client()
    redis = aioredis.Redis.from_url(redis_url)
    operator = operator_api(cluster)
    recorder = EventRecorder(operator, OperatorMetrics())
    recorder.start()
    kube = KubernetesScaler(namespace, name, operator, recorder, pool_uid=uid)
    scaler = PoolAutoscaler(namespace, name, redis, kube, spec=spec, kube_resync_seconds=2.0)
    runner_env = {
        # Many "pods" share this host: no fixed metrics port; quick heartbeats for a short test.
        "KUBEWORKERS_METRICS_PORT": "-1",
        "KUBEWORKERS_HEARTBEAT_SECONDS": "1",
        "KUBEWORKERS_LOG_FORMAT": "text",
    }
    with PodRunner(cluster, namespace, pod_selector(name), extra_env=runner_env, log_dir=tmp_path / "pods"):
        task = asyncio.create_task(scaler.run())
        try:
            yield Pool(name, namespace, PoolKeys(namespace, name), redis, scaler, cluster, api)
        finally:
            await scaler.stop()
            await task
            await recorder.stop()
            await operator.close()
            await redis.aclose()


async def test_burst_on_a_pool_at_zero_scales_up_drains_and_returns_to_zero(
    cluster: Cluster, namespace: str, redis_url: str, tmp_path: Path
) -> None:
    async with running_pool(cluster, namespace, redis_url, tmp_path, "burst", concurrency=4, max_replicas=5) as pool:
        assert await pool.replicas() == 0
        job_ids = [f"burst-{i}" for i in range(500)]
        await pool.submit([(j, 0.2) for j in job_ids])

        peak = 0

        async def reached_max() -> bool:
            nonlocal peak
            peak = max(peak, await pool.replicas())
            return peak == 5

        await wait_for_async(reached_max, 120, "the Deployment to scale to maxReplicas", every=0.25)

        async def all_succeeded() -> bool:
            records = await pool.records(job_ids)
            return len(records) == 500 and all(r.state is JobState.SUCCEEDED for r in records.values())

        await wait_for_async(all_succeeded, 180, "all 500 jobs to succeed", every=0.25)
        await wait_for_async(lambda: _is(pool.replicas(), 0), 120, "the pool to return to zero", every=0.25)

        records = await pool.records(job_ids)
        assert {r.attempts for r in records.values()} == {1}, "a job was interrupted and run again"
        assert len({r.worker for r in records.values()}) > 1, "one pod did all the work: nothing was scaled"
        events = pool.events()
        assert any(e.startswith("ScaledUp: scaled 0 → ") and "backlog" in e for e in events), events
        assert any(e.startswith("ScaledDown: scaled ") and "→ 0: idle for" in e for e in events), events
        status = pool.status()
        assert status["desiredReplicas"] == 0
        assert status["backlog"] == 0 and status["inFlight"] == 0
        assert "idle for" in status["lastScaleReason"]
        assert "lastScaleTime" in status


async def test_scale_down_removes_idle_pods_and_interrupts_no_running_job(
    cluster: Cluster, namespace: str, redis_url: str, tmp_path: Path
) -> None:
    async with running_pool(cluster, namespace, redis_url, tmp_path, "calm", concurrency=1, max_replicas=4) as pool:
        long_jobs = ["long-0", "long-1"]
        short_jobs = ["short-0", "short-1"]
        await pool.submit([(j, 45.0) for j in long_jobs] + [(j, 0.5) for j in short_jobs])
        await wait_for_async(lambda: _is(pool.replicas(), 4), 120, "four pods for four jobs", every=0.25)

        async def long_jobs_running_and_short_done() -> bool:
            records = await pool.records(long_jobs + short_jobs)
            return all(records[j].state is JobState.RUNNING for j in long_jobs if j in records) and all(
                j in records and records[j].state is JobState.SUCCEEDED for j in short_jobs
            ) and all(j in records for j in long_jobs)

        await wait_for_async(long_jobs_running_and_short_done, 120, "long jobs running, short jobs done", every=0.25)
        busy_pods = {r.worker for r in (await pool.records(long_jobs)).values()}
        assert len(busy_pods) == 2

        # Two busy pods, two idle: the autoscaler goes down to the busy ones and no further.
        await wait_for_async(lambda: _is(pool.replicas(), 2), 120, "scale-down to the two busy pods", every=0.25)

        async def only_busy_pods_left() -> bool:
            pods = await pool.pods()
            return {name for name, terminating in pods.items() if not terminating} == busy_pods and len(pods) == 2

        await wait_for_async(only_busy_pods_left, 120, "the idle pods to be the ones removed", every=0.25)
        records = await pool.records(long_jobs)
        assert all(r.state is JobState.RUNNING and r.attempts == 1 for r in records.values())

        async def long_jobs_done() -> bool:
            records = await pool.records(long_jobs)
            return all(r.state is JobState.SUCCEEDED for r in records.values())

        await wait_for_async(long_jobs_done, 120, "the long jobs to finish", every=0.25)
        records = await pool.records(long_jobs)
        assert {r.worker for r in records.values()} == busy_pods, "a long job moved to another pod"
        assert {r.attempts for r in records.values()} == {1}


async def _is(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


@pytest.fixture(autouse=True)
def _long_test_timeout(request: pytest.FixtureRequest) -> None:
    request.node.add_marker(pytest.mark.timeout(600))
