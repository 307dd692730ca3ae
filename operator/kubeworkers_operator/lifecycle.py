"""Operator startup and shutdown: build the :class:`Runtime`, start and stop the background tasks.

Background tasks of one operator, whatever the number of Jobs: the leader
election, the Event posters and the health/metrics server in every replica;
and, on the leader only (:class:`LeaderWork`), the status sync consumer, one
task per periodic chore (:func:`chores` is the list of every periodic thing the
operator does) and one autoscaler per WorkerPool. A standby only keeps its
index warm from kopf's watches (docs/architecture.md, *High availability*).
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

from kubeworkers_operator.adapters import console
from kubeworkers_operator.adapters.enqueuer import Enqueuer
from kubeworkers_operator.adapters.events import EventRecorder
from kubeworkers_operator.adapters.kube import KubeApi
from kubeworkers_operator.adapters.metrics import HealthServer, OperatorMetrics
from kubeworkers_operator.adapters.pool_status import PoolStatusWriter
from kubeworkers_operator.adapters.status_writer import JobStatusWriter
from kubeworkers_operator.autoscaling import AutoscalerMetrics
from kubeworkers_operator.flows import jobs, orphans, pools, positions, resync, schedules, status_sync
from kubeworkers_operator.flows.leadership import LeaderElector
from kubeworkers_operator.flows.pools import PoolControllers
from kubeworkers_operator.flows.scheduler import Chore, ChoreScheduler, Wakeup
from kubeworkers_operator.flows.status_sync import SyncFleet
from kubeworkers_operator.model.index import ClusterIndex
from kubeworkers_operator.runtime import Runtime, redis_clients
from kubeworkers_operator.settings import OperatorSettings

logger = logging.getLogger(__name__)

#: In-flight requests of the autoscalers' own API client (a few calls per scaling decision).
AUTOSCALER_API_CONCURRENCY = 8
#: In-flight requests of the leader election's client (one read and one write per turn).
LEASE_API_CONCURRENCY = 2
#: How often the leader asks the Sentinels where the master is (nothing for a plain Redis URL).
FOLLOW_MASTER_SECONDS = 1.0
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
        # Also reads every pool's Redis Secret again: an edited Secret is followed, a fixed one frees its Jobs.
        Chore("pool-resync", settings.pending_retry_seconds, partial(pools.resync_pools, rt, controllers)),
        Chore("record-resync", settings.resync_interval_seconds, partial(resync.resync, rt)),
        # Bounded turns, each a few round trips; a pass over every record starts every --orphan-sweep-interval.
        Chore("orphan-sweep", orphans.TURN_SECONDS, partial(orphans.sweep_turns, rt, orphans.sweeps_for(rt))),
        Chore("events-trim", status_sync.TRIM_SECONDS, partial(status_sync.trim_and_measure, rt)),
        Chore("queue-positions", positions.PASS_SECONDS, partial(positions.update, rt, positions.QueuePositions())),
        Chore("redis-master", FOLLOW_MASTER_SECONDS, partial(follow_masters, rt)),
    ]


async def follow_masters(rt: Runtime) -> None:
    """For every Redis in use (the operator's own, each pool's): :func:`kubeworkers.connection.follow_master`.

    A redis+sentinel:// URL: ask the Sentinels where the master is, so that after a planned
    failover the leader's writes leave the old master (still writable for ~10 s) within a second.
    Nothing for a plain URL.
    """
    for client in redis_clients(rt):
        await connection.follow_master(client)


@dataclass
class LeaderWork:
    """What only the leader runs: started when it is elected, stopped when it stops leading.

    Built anew at each election (nothing of a previous term's is reused), so a replica that
    lost the Lease and wins it back starts from a clean slate.
    """

    sync: SyncFleet
    """The status sync: one events-stream consumer per Redis in use."""
    chores: ChoreScheduler
    controllers: PoolControllers
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    """Tasks that run for the whole term (the status sync); one that ends is a failure (/healthz)."""
    take_over: asyncio.Task[None] | None = None
    """The pass over every known pool and Job when the term starts (it ends, and that is fine)."""

    def healthy(self) -> bool:
        """The consumer loop turns and every chore's task runs (a long chore is not a stall)."""
        alive = all(not task.done() for task in self.tasks) and self.chores.alive()
        return alive and time.time() - self.sync.consumer_turned_at < STALL_SECONDS

    async def stop(self) -> None:
        """Stop the term's tasks now, autoscalers mid-decision if need be (the next leader decides afresh).

        Never a graceful wait: a leader stops before its Lease can expire, whether it lost the
        Lease or shuts down, so two replicas' autoscalers never overlap.
        """
        for task in [*self.tasks, *([self.take_over] if self.take_over else [])]:
            task.cancel()  # at once, before any await: nothing of the term runs on meanwhile
        await self.controllers.cancel_all()
        await self.chores.stop()
        for task in [*self.tasks, *([self.take_over] if self.take_over else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


@dataclass
class Background:
    """What :func:`start` started and :func:`stop` stops."""

    rt: Runtime
    health: HealthServer
    autoscaler_api: KubeApi | None = None
    """The autoscalers' own client, shared by every term's :class:`PoolControllers`."""
    autoscaler_metrics: AutoscalerMetrics | None = None
    lease_api: KubeApi | None = None
    elector: LeaderElector | None = None
    """None with ``--no-leader-election``: this process leads from start to stop."""
    work: LeaderWork | None = None
    """The leader's work while this replica leads; None on a standby."""
    schedule_wakeup: Wakeup = field(default_factory=Wakeup)
    """Poked by the kopf wiring when a Schedule or one of its runs changes."""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    """Tasks of the whole process (the elector)."""
    web_console: console.OperatorConsole | None = None
    """The web console (``--console-port``), in every replica: reads need no leader, actions none either."""

    def leading(self) -> bool:
        """This replica acts (enqueues, writes statuses, scales); fenced by the Lease's renew deadline."""
        return self.work is not None and (self.elector is None or self.elector.leading())

    def role(self) -> str:
        return "leader" if self.leading() else "standby"

    @property
    def controllers(self) -> PoolControllers | None:
        return None if self.work is None else self.work.controllers

    def healthy(self) -> bool:
        """The process's tasks run and, on the leader, its work is healthy; a standby is healthy idling."""
        alive = all(not task.done() for task in self.tasks)
        return alive and (self.work is None or self.work.healthy())


async def start_leading(bg: Background) -> None:
    """Start the leader's work: status sync, chores, autoscalers, and a take-over pass over every pool and Job."""
    if bg.work is not None:
        return
    rt = bg.rt
    controllers = PoolControllers(api=bg.autoscaler_api, metrics=bg.autoscaler_metrics)
    sync = SyncFleet(rt, claim_at_start=True)
    scheduler = ChoreScheduler(chores(rt, controllers, bg.schedule_wakeup), observe=rt.metrics.observe_chore)
    work = LeaderWork(sync, scheduler, controllers)
    work.tasks = [asyncio.create_task(sync.run(), name="status-sync")]
    scheduler.start()
    work.take_over = asyncio.create_task(take_over(rt, controllers), name="take-over")
    bg.work = work
    bg.schedule_wakeup.poke()  # the Schedules have waited for a leader: look at them now


async def take_over(rt: Runtime, controllers: PoolControllers) -> None:
    """Pools first (their Deployments and autoscalers), then every Job the standby only observed."""
    started = time.monotonic()
    await pools.take_over(rt, controllers)
    count = await jobs.take_over(rt)
    logger.info("took over %d Jobs and %d pools in %.1f s", count, len(rt.index.pools), time.monotonic() - started)


async def stop_leading(bg: Background) -> None:
    """Stop the leader's work (at once: handlers check :meth:`Background.leading` before acting)."""
    work, bg.work = bg.work, None
    if work is not None:
        # Shielded: a cancelled caller must not leave half the term running on a standby.
        await asyncio.shield(work.stop())


def connection_info(settings: kopf.OperatorSettings) -> kopf.ConnectionInfo:
    """The same credentials kopf uses: the pod's service account, else the kubeconfig."""
    info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise kopf.LoginError("no service account and no kubeconfig: cannot reach the Kubernetes API")
    return info


async def start(settings: OperatorSettings, kopf_settings: kopf.OperatorSettings) -> Background:
    """Build the runtime, start the health server and the elector (or lead at once without election)."""
    metrics = OperatorMetrics()

    def kube_api(concurrency: int, timeout: float = 30.0) -> KubeApi:
        return KubeApi(
            connection_info(kopf_settings), concurrency=concurrency, timeout=timeout,
            relogin=lambda: connection_info(kopf_settings),
        )

    api = kube_api(settings.api_concurrency)
    redis = connection.connect_async(settings.redis_url, health_check_interval=30)
    # Pools naming a Redis Secret of their own get their clients from rt.redises (adapters/pool_redis.py).
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
    # The probe reads `bg` when called, i.e. once everything below has started.
    health = HealthServer(metrics, port=settings.metrics_port, is_healthy=lambda: bg.healthy(), role=lambda: bg.role())
    bg = Background(
        rt, health,
        autoscaler_api=kube_api(AUTOSCALER_API_CONCURRENCY) if settings.autoscaling else None,
        autoscaler_metrics=AutoscalerMetrics(metrics.registry),
    )
    leader_gauge = metrics.leader.labels(identity=settings.consumer_name)
    leader_gauge.set(0)
    await bg.health.start()
    recorder.start()
    if settings.console_port:
        bg.web_console = await console.start(
            rt, port=settings.console_port, namespace=settings.console_shows, actions=settings.console_actions,
            host_names=settings.console_host_names, sample_seconds=settings.console_sample_seconds,
            require_sign_in=settings.console_require_sign_in,
        )
    if settings.leader_election:
        timing = settings.election_timing
        # Its own client: a request never lasts past the renew deadline nor queues behind status writes.
        bg.lease_api = kube_api(LEASE_API_CONCURRENCY, timeout=timing.renew_deadline)
        bg.elector = LeaderElector(
            bg.lease_api,
            namespace=settings.lease_namespace, name=settings.lease_name, identity=settings.consumer_name,
            timing=timing,
            on_started=partial(start_leading, bg),
            on_stopped=lambda reason: stop_leading(bg),
            observe=lambda leading: leader_gauge.set(1 if leading else 0),
        )
        bg.tasks = [asyncio.create_task(bg.elector.run(), name="leader-election")]
    else:
        await start_leading(bg)
        leader_gauge.set(1)
    logger.info(
        "kubeworkers operator started as %s (namespaces: %s, events group %s, leader election: %s)",
        settings.consumer_name, ", ".join(settings.namespaces) or "all", settings.events_group,
        f"Lease {settings.lease_namespace}/{settings.lease_name}" if settings.leader_election else "off",
    )
    return bg


async def stop(bg: Background) -> None:
    """Stop leading (the Lease handed back), then everything else, the Event queue drained first (briefly)."""
    for task in bg.tasks:
        task.cancel()
    for task in bg.tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    await stop_leading(bg)
    if bg.web_console is not None:
        await bg.web_console.stop()
    if bg.elector is not None:
        await bg.elector.release()
    if bg.lease_api is not None:
        await bg.lease_api.close()
    await bg.rt.recorder.stop()
    await bg.rt.enqueuer.close()
    await bg.health.stop()
    if bg.autoscaler_api is not None:
        await bg.autoscaler_api.close()
    await bg.rt.api.close()
    await bg.rt.redises.close()
    await connection.aclose(bg.rt.redis)
