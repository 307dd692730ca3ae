"""The per-pool control loop: read Redis, decide, act on Kubernetes, report.

One :class:`PoolAutoscaler` per WorkerPool. Each turn ("tick") reads the pool's
signals in one Redis round trip, folds them into a :class:`~.decision.Load`,
asks the pure :func:`~.decision.decide` for a replica count and, if it differs
from the Deployment's, protects busy pods (deletion cost) before a scale-down,
sets the replicas, posts an Event and patches the pool's status.

Between ticks the loop sleeps in a blocking ``XREAD`` on the pool's job
streams, so the first job on an idle pool wakes it at once; ``pollSeconds``
is the safety net (completions, heartbeats, idle timers), and ticks are at
least ``min_tick_seconds`` apart so a busy stream cannot make it spin.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis.asyncio as aioredis
from kubeworkers.protocol import PoolKeys
from kubeworkers.resources import WorkerPoolSpec, WorkerPoolStatus

from kubeworkers_operator.autoscaling.decision import Decision, Load, PodHealth, ScalerState, decide
from kubeworkers_operator.autoscaling.deletion_cost import plan_deletion_costs
from kubeworkers_operator.autoscaling.kube import KubeScaler
from kubeworkers_operator.autoscaling.load import (
    DEFAULT_HEARTBEAT_TIMEOUT,
    ArrivalRate,
    DurationEstimate,
    PoolSnapshot,
    held_by_consumer,
    live_heartbeats,
    measure_load,
)
from kubeworkers_operator.autoscaling.metrics import AutoscalerMetrics
from kubeworkers_operator.autoscaling.pods import assess
from kubeworkers_operator.autoscaling.policy import AutoscalingPolicy
from kubeworkers_operator.autoscaling.signals import RedisSignalReader
from kubeworkers_operator.model.pool_conditions import PODS_FAILING, ConditionValue

logger = logging.getLogger(__name__)

Spec = WorkerPoolSpec | Mapping[str, Any]


class PoolAutoscaler:
    """The autoscaler of one WorkerPool.

    Start it with ``await autoscaler.run()`` (in a kopf daemon or a task of its own), feed it
    spec changes with :meth:`update_spec` (or give :meth:`run` a ``spec_getter``), and end it
    with :meth:`stop` (or by cancelling the task running :meth:`run`).
    """

    def __init__(
        self,
        namespace: str,
        name: str,
        redis: aioredis.Redis,
        kube: KubeScaler,
        *,
        spec: Spec | None = None,
        metrics: AutoscalerMetrics | None = None,
        heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT,
        min_tick_seconds: float = 0.2,
        kube_resync_seconds: float = 30.0,
        status_interval_seconds: float = 10.0,
        pod_check_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.kube = kube
        self.reader = RedisSignalReader(redis, PoolKeys(namespace, name))
        self.metrics = metrics if metrics is not None else AutoscalerMetrics()
        self.policy = AutoscalingPolicy.from_spec(spec) if spec is not None else AutoscalingPolicy()
        self.heartbeat_timeout = heartbeat_timeout
        self.min_tick_seconds = min_tick_seconds
        self.kube_resync_seconds = kube_resync_seconds
        self.status_interval_seconds = status_interval_seconds
        self.pod_check_seconds = pod_check_seconds
        self._clock = clock
        self._wall = wall_clock
        self._state = ScalerState()
        self._arrivals = ArrivalRate()
        self._durations = DurationEstimate()
        self._replicas: int | None = None
        self._replicas_read_at = float("-inf")
        self._status_sent: dict[str, Any] | None = None
        self._status_sent_at = float("-inf")
        self._last_scale_time: dt.datetime | None = None
        self._last_scale_reason: str | None = None
        self._health: PodHealth | None = None
        self._health_read_at = float("-inf")
        #: The PodsFailing reason last reported ("" once reported False; None: not reported yet).
        self._failing_reported: str | None = None
        self._wakeup = asyncio.Event()
        self._stopped = False
        self._done: asyncio.Event | None = None
        #: The inputs and outcome of the last tick (for status, tests and debugging).
        self.last_load: Load | None = None
        self.last_decision: Decision | None = None

    # ------------------------------------------------------------------ public API

    def update_spec(self, spec: Spec) -> None:
        """Take a new WorkerPool spec into account at once (wakes the loop)."""
        self.policy = AutoscalingPolicy.from_spec(spec)
        self._wakeup.set()

    async def run(self, spec_getter: Callable[[], Spec] | None = None) -> None:
        """Run the loop until :meth:`stop` or cancellation; errors are logged and retried, never raised.

        ``spec_getter``, if given, is called before every tick (kopf daemons get a live ``spec``).
        """
        self._done = asyncio.Event()
        failures = 0
        try:
            while not self._stopped:
                started = self._clock()
                snapshot: PoolSnapshot | None = None
                try:
                    if spec_getter is not None:
                        self.policy = AutoscalingPolicy.from_spec(spec_getter())
                    snapshot = await self.tick()
                    failures = 0
                except asyncio.CancelledError:
                    raise
                except Exception:
                    failures += 1
                    self.metrics.errors.labels(self.namespace, self.name).inc()
                    logger.exception("autoscaler tick failed for %s/%s", self.namespace, self.name)
                if self._stopped:
                    break
                if snapshot is None:
                    await self._sleep(min(30.0, self.policy.poll_seconds * 2 ** min(failures, 5)))
                    continue
                await self._wait_for_activity(snapshot, self.policy.poll_seconds)
                # Pace ticks: a stream receiving jobs continuously must not make the loop spin.
                rest = self.min_tick_seconds - (self._clock() - started)
                if rest > 0 and not self._stopped:
                    await asyncio.sleep(rest)
        finally:
            self._done.set()

    async def stop(self) -> None:
        """Ask the loop to end and wait until it has (a no-op if it never ran)."""
        self._stopped = True
        self._wakeup.set()
        if self._done is not None:
            await self._done.wait()

    async def tick(self) -> PoolSnapshot:
        """One turn of the loop: measure, decide, act. Returns the snapshot it decided on."""
        policy = self.policy
        now = self._clock()
        snapshot = await self.reader.read(now=self._wall())
        load = measure_load(
            snapshot,
            arrival_rate=self._arrivals.observe(now, snapshot.entries_added),
            duration_estimate=self._durations.observe(now, snapshot.completed, snapshot.duration_sum),
            heartbeat_timeout=self.heartbeat_timeout,
        )
        self.last_load = load
        current = await self._current_replicas(now)
        if current is None:
            # No Deployment (yet): the operator creates it; nothing to scale until then.
            return snapshot
        health = await self._pod_health(now, current)
        decision = decide(load, policy, current, self._state, now, health=health)
        self._state = decision.state
        self.last_decision = decision
        if decision.changed:
            await self._apply(decision, snapshot)
        self.metrics.record(self.namespace, self.name, load, decision)
        await self._publish_status(load, decision, now, force=decision.changed)
        return snapshot

    # ------------------------------------------------------------------ pods that cannot start

    async def _pod_health(self, now: float, current: int) -> PodHealth | None:
        """What the pool's pods say, re-read every ``pod_check_seconds``; reported on the pool when it changes."""
        if current == 0:
            self._health = None
            if self._failing_reported:
                await self._report_health(PodHealth())  # no pods left, none failing
            return None
        if now - self._health_read_at < self.pod_check_seconds:
            return self._health
        try:
            pods = await self.kube.list_worker_pods()
        except Exception:
            logger.warning("could not list the pods of %s/%s", self.namespace, self.name, exc_info=True)
            return self._health
        self._health_read_at = now
        self._health = assess(pods)
        await self._report_health(self._health)
        return self._health

    async def _report_health(self, health: PodHealth) -> None:
        """The ``PodsFailing`` condition; a Warning Event when pods start failing (not every tick), a Normal
        one when they start again."""
        failing = health.reason if health.failing else ""
        value = (
            ConditionValue("True", health.reason, health.message) if failing
            else ConditionValue("False", "PodsStarting", "no worker pod is failing to start")
        )
        try:
            await self.kube.set_condition(PODS_FAILING, value)
        except Exception:
            logger.warning("could not report pod health of %s/%s", self.namespace, self.name, exc_info=True)
            return
        if failing == self._failing_reported:
            return
        with contextlib.suppress(Exception):
            if failing:
                await self.kube.post_event(
                    "PodsFailing", f"{health.message}; the pool is not grown until its pods start", warning=True
                )
            elif self._failing_reported:
                await self.kube.post_event("PodsStarted", "no worker pod is failing to start any more")
        self._failing_reported = failing

    # ------------------------------------------------------------------ acting

    async def _current_replicas(self, now: float) -> int | None:
        if self._replicas is None or now - self._replicas_read_at >= self.kube_resync_seconds:
            self._replicas = await self.kube.get_replicas()
            self._replicas_read_at = now
        return self._replicas

    async def _apply(self, decision: Decision, snapshot: PoolSnapshot) -> None:
        if decision.desired < decision.current:
            await self._protect_busy_pods(snapshot)
        try:
            await self.kube.set_replicas(decision.desired)
        except Exception:
            self._replicas = None  # re-read next tick rather than trust a stale count
            raise
        self._replicas = decision.desired
        self._last_scale_time = dt.datetime.fromtimestamp(self._wall(), dt.UTC)
        self._last_scale_reason = decision.reason
        logger.info("%s/%s: %s", self.namespace, self.name, decision.reason)
        reason = "ScaledUp" if decision.desired > decision.current else "ScaledDown"
        try:
            await self.kube.post_event(reason, decision.reason)
        except Exception:
            # The Event is a report, not the action: a failed post must not undo or repeat the scaling.
            logger.warning("could not post %s event for %s/%s", reason, self.namespace, self.name, exc_info=True)

    async def _protect_busy_pods(self, snapshot: PoolSnapshot) -> None:
        """Mark busy pods expensive and idle ones cheap, so the ReplicaSet removes idle pods."""
        pods = await self.kube.list_worker_pods()
        live = live_heartbeats(snapshot, self.heartbeat_timeout)
        changes = plan_deletion_costs(pods, live, held_by_consumer(snapshot))
        await asyncio.gather(*(self.kube.set_deletion_cost(pod, cost) for pod, cost in changes.items()))

    async def _publish_status(self, load: Load, decision: Decision, now: float, *, force: bool) -> None:
        status = WorkerPoolStatus(
            desired_replicas=decision.desired,
            backlog=load.backlog,
            in_flight=load.in_flight,
            arrival_rate=round(load.arrival_rate, 3),
            duration_estimate_seconds=(
                None if load.duration_estimate is None else round(load.duration_estimate, 3)
            ),
            last_scale_time=self._last_scale_time,
            last_scale_reason=self._last_scale_reason,
        ).to_k8s()
        status.pop("conditions", None)  # conditions belong to the operator's pool handler
        if status == self._status_sent:
            return
        if not force and now - self._status_sent_at < self.status_interval_seconds:
            return
        try:
            await self.kube.patch_status(status)
        except Exception:
            logger.warning("could not patch status of %s/%s", self.namespace, self.name, exc_info=True)
            return
        self._status_sent = status
        self._status_sent_at = now

    # ------------------------------------------------------------------ waiting

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), seconds)
        self._wakeup.clear()

    async def _wait_for_activity(self, snapshot: PoolSnapshot, seconds: float) -> None:
        """Until a new job entry, a spec update or stop, or ``seconds`` pass."""
        if self._wakeup.is_set():
            self._wakeup.clear()
            return
        activity = asyncio.ensure_future(self.reader.wait_for_activity(snapshot, seconds))
        wakeup = asyncio.ensure_future(self._wakeup.wait())
        try:
            done, _ = await asyncio.wait({activity, wakeup}, return_when=asyncio.FIRST_COMPLETED)
            if activity in done and activity.exception() is not None:
                # Redis hiccup while blocked: fall back to a plain sleep, the next tick will tell.
                logger.debug("XREAD wait failed: %r", activity.exception())
                await self._sleep(seconds)
        finally:
            pending = [task for task in (activity, wakeup) if not task.done()]
            for task in pending:
                task.cancel()
                task.add_done_callback(_consume)
            if pending:
                # A blocking command being cancelled can take until its socket timeout to give up
                # (redis-py); do not make stop() or the next tick wait for that.
                await asyncio.wait(pending, timeout=0.5)
            self._wakeup.clear()


def _consume(task: asyncio.Future[Any]) -> None:
    """Retrieve a background task's outcome so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()
