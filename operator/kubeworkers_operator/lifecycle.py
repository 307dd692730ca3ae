"""Operator startup and shutdown: build the :class:`Runtime`, start and stop the background tasks.

Background tasks of one operator, whatever the number of Jobs: the status
sync consumer, one task per periodic chore (:func:`chores` is the list of every
periodic thing the operator does), the Event posters, the health/metrics
server, and one autoscaler per WorkerPool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from functools import partial

import kopf
from kubeworkers import connection

from kubeworkers_operator.adapters.enqueuer import Enqueuer
from kubeworkers_operator.adapters.events import EventRecorder
from kubeworkers_operator.adapters.kube import KubeApi
from kubeworkers_operator.adapters.metrics import HealthServer, OperatorMetrics
from kubeworkers_operator.adapters.pool_status import PoolStatusWriter
from kubeworkers_operator.adapters.status_writer import JobStatusWriter
from kubeworkers_operator.autoscaling import AutoscalerMetrics
from kubeworkers_operator.flows import jobs, orphans, pools, resync, schedules, status_sync
from kubeworkers_operator.flows.pools import PoolControllers
from kubeworkers_operator.flows.scheduler import Chore, ChoreScheduler, Wakeup
from kubeworkers_operator.flows.status_sync import StatusSync
from kubeworkers_operator.model.index import ClusterIndex
from kubeworkers_operator.runtime import Runtime
from kubeworkers_operator.settings import OperatorSettings

logger = logging.getLogger(__name__)

#: In-flight requests of the autoscalers' own API client (a few calls per scaling decision).
AUTOSCALER_API_CONCURRENCY = 8
#: The status-sync consumer silent for longer than this makes /healthz fail (liveness restarts the pod).
STALL_SECONDS = 120.0


def chores(rt: Runtime, controllers: PoolControllers, schedule_wakeup: Wakeup | None = None) -> list[Chore]:
    """Every periodic thing the operator does, each owned (and tested) by its own module.

    ``schedule_wakeup`` wakes the Schedule chore at its next slot, and when the kopf wiring
    sees a Schedule change or a run finish.
    """
    settings = rt.settings
    wakeup = schedule_wakeup or Wakeup()
    return [
        Chore("schedules", schedules.PASS_SECONDS, partial(schedules.run_pass, rt, wakeup.at), wakeup),
        Chore("ttl-deletion", jobs.TTL_CHECK_SECONDS, partial(jobs.delete_expired, rt)),
        Chore("pending-retry", settings.pending_retry_seconds, partial(jobs.retry_waiting, rt)),
        Chore("pool-resync", settings.pending_retry_seconds, partial(pools.resync_pools, rt, controllers)),
        Chore("record-resync", settings.resync_interval_seconds, partial(resync.resync, rt)),
        # Bounded turns, each a few round trips; a pass over every record starts every --orphan-sweep-interval.
        Chore("orphan-sweep", orphans.TURN_SECONDS, partial(orphans.sweep_turn, rt, orphans.sweep_for(rt))),
        Chore("events-trim", status_sync.TRIM_SECONDS, partial(status_sync.trim_and_measure, rt)),
    ]


@dataclass
class Background:
    """What :func:`start` started and :func:`stop` stops."""

    rt: Runtime
    sync: StatusSync
    chores: ChoreScheduler
    controllers: PoolControllers
    health: HealthServer
    schedule_wakeup: Wakeup = field(default_factory=Wakeup)
    """Poked by the kopf wiring when a Schedule or one of its runs changes."""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def healthy(self) -> bool:
        """The consumer loop turns and every chore's task runs (a long chore is not a stall)."""
        alive = all(not task.done() for task in self.tasks) and self.chores.alive()
        return alive and time.time() - self.sync.consumer_turned_at < STALL_SECONDS


def connection_info(settings: kopf.OperatorSettings) -> kopf.ConnectionInfo:
    """The same credentials kopf uses: the pod's service account, else the kubeconfig."""
    info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise kopf.LoginError("no service account and no kubeconfig: cannot reach the Kubernetes API")
    return info


async def start(settings: OperatorSettings, kopf_settings: kopf.OperatorSettings) -> Background:
    """Build the runtime and start every background task."""
    metrics = OperatorMetrics()

    def kube_api(concurrency: int) -> KubeApi:
        return KubeApi(
            connection_info(kopf_settings), concurrency=concurrency, relogin=lambda: connection_info(kopf_settings)
        )

    api = kube_api(settings.api_concurrency)
    redis = connection.connect_async(settings.redis_url, health_check_interval=30)
    recorder = EventRecorder(api, metrics)
    index = ClusterIndex()
    rt = Runtime(
        settings=settings,
        api=api,
        redis=redis,
        metrics=metrics,
        recorder=recorder,
        writer=JobStatusWriter(api, index, recorder, metrics),
        enqueuer=Enqueuer(redis, linger=settings.enqueue_linger_seconds),
        index=index,
        pool_status=PoolStatusWriter(api),
    )
    controllers = PoolControllers(
        api=kube_api(AUTOSCALER_API_CONCURRENCY) if settings.autoscaling else None,
        metrics=AutoscalerMetrics(metrics.registry),
    )
    sync = StatusSync(rt)
    schedule_wakeup = Wakeup()
    scheduler = ChoreScheduler(chores(rt, controllers, schedule_wakeup), observe=metrics.observe_chore)
    # The probe reads `bg` when called, i.e. once everything below has started.
    health = HealthServer(metrics, port=settings.metrics_port, is_healthy=lambda: bg.healthy())
    bg = Background(rt, sync, scheduler, controllers, health, schedule_wakeup)
    await bg.health.start()
    recorder.start()
    bg.tasks = [asyncio.create_task(sync.run(), name="status-sync")]
    scheduler.start()
    logger.info(
        "kubeworkers operator started (namespaces: %s, events group %s)",
        ", ".join(settings.namespaces) or "all", settings.events_group,
    )
    return bg


async def stop(bg: Background) -> None:
    """Stop everything :func:`start` started, the Event queue drained first (briefly)."""
    await bg.controllers.stop_all()
    await bg.chores.stop()
    for task in bg.tasks:
        task.cancel()
    for task in bg.tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    await bg.rt.recorder.stop()
    await bg.rt.enqueuer.close()
    await bg.health.stop()
    if bg.controllers.api is not None:
        await bg.controllers.api.close()
    await bg.rt.api.close()
    await connection.aclose(bg.rt.redis)
