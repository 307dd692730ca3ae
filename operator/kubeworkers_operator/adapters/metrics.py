"""The operator's Prometheus metrics and its ``/healthz`` + ``/metrics`` HTTP endpoint.

A private registry (not the process-global default) keeps the numbers of one
operator instance together and lets tests start several operators in one
process without duplicate-metric errors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

logger = logging.getLogger(__name__)


@dataclass
class OperatorMetrics:
    """Every metric the operator exports (names prefixed ``kubeworkers_operator_``)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        p = "kubeworkers_operator_"
        self.jobs_enqueued = Counter(p + "jobs_enqueued_total", "Job CRs put on a pool stream.", registry=r)
        self.jobs_enqueue_duplicates = Counter(
            p + "jobs_enqueue_duplicates_total", "Enqueues skipped because the Job uid was already queued.",
            registry=r,
        )
        self.jobs_rejected = Counter(
            p + "jobs_rejected_total", "Job CRs refused by validation.", ["reason"], registry=r
        )
        self.jobs_waiting = Gauge(
            p + "jobs_waiting_for_pool", "Job CRs waiting for their WorkerPool to appear.", registry=r
        )
        self.status_patches = Counter(
            p + "job_status_patches_total", "Writes to jobs/status, by source.", ["source"], registry=r
        )
        self.status_patch_errors = Counter(
            p + "job_status_patch_errors_total", "Failed writes to jobs/status, by reason.", ["reason"],
            registry=r,
        )
        self.events_consumed = Counter(
            p + "events_consumed_total", "Worker events read from the events stream.", registry=r
        )
        self.events_stale = Counter(
            p + "events_ignored_total", "Worker events that changed nothing (replays, stale, unknown Job).",
            registry=r,
        )
        self.sync_batch = Histogram(
            p + "status_sync_batch_jobs", "Jobs patched per status-sync batch.",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500), registry=r,
        )
        self.resync_corrections = Counter(
            p + "resync_corrections_total", "Job statuses corrected by the periodic resync from Redis.",
            registry=r,
        )
        self.k8s_events = Counter(
            p + "k8s_events_posted_total", "Kubernetes Events posted, by type.", ["type"], registry=r
        )
        self.ttl_deleted = Counter(
            p + "jobs_ttl_deleted_total", "Finished Jobs deleted by ttlSecondsAfterFinished.", registry=r
        )
        self.cancels = Counter(p + "jobs_cancelled_total", "Cancellations sent to Redis.", ["via"], registry=r)
        self.orphan_keys_scanned = Counter(
            p + "orphan_sweep_keys_scanned_total", "Job records the orphan sweep has scanned (its progress).",
            registry=r,
        )
        self.orphan_passes = Counter(
            p + "orphan_sweep_passes_total", "Passes of the orphan sweep over every job record completed.",
            registry=r,
        )
        self.lost_jobs_failed = Counter(
            p + "lost_jobs_failed_total",
            "Queued or Running jobs the orphan sweep failed (JobLost) because nothing in Redis could run them.",
            registry=r,
        )
        self.events_stream_length = Gauge(
            p + "events_stream_entries",
            "Entries in the longest pool events stream (kw:{ns/pool}:events), after the last trim.",
            registry=r,
        )
        self.dead_letter_length = Gauge(
            p + "dead_letter_entries", "Entries in each pool's dead-letter stream.", ["namespace", "pool"],
            registry=r,
        )
        self.jobs_queued = Gauge(
            p + "jobs_queued",
            "Jobs waiting on each pool by handler (on its streams, or delayed: retries and notBefore), "
            "as `kubeworkers stats` counts them (the first 10,000 per stream).",
            ["namespace", "pool", "handler"], registry=r,
        )
        self.jobs_in_flight = Gauge(
            p + "jobs_in_flight", "Jobs held by a worker of each pool, by handler (as `kubeworkers stats`).",
            ["namespace", "pool", "handler"], registry=r,
        )
        self.deployments_applied = Counter(
            p + "deployments_applied_total", "Worker Deployments created or updated.", registry=r
        )
        self.loop_heartbeat = Gauge(
            p + "status_sync_heartbeat_seconds", "Unix time of the status sync's last loop turn.", registry=r
        )
        self.chore_runs = Counter(
            p + "chore_runs_total", "Runs of the periodic chores, by chore and outcome (ok, error).",
            ["chore", "outcome"], registry=r,
        )
        self.chore_duration = Gauge(
            p + "chore_last_duration_seconds", "How long each periodic chore's last run took.", ["chore"],
            registry=r,
        )

        self.leader = Gauge(
            p + "leader", "1 while this operator replica leads (holds the leader election Lease), 0 on standby.",
            ["identity"], registry=r,
        )

    def observe_chore(self, chore: str, seconds: float, error: BaseException | None) -> None:
        """Count one run of a periodic chore (see :mod:`kubeworkers_operator.flows.scheduler`)."""
        self.chore_runs.labels(chore=chore, outcome="ok" if error is None else "error").inc()
        self.chore_duration.labels(chore=chore).set(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


#: ``/readyz``'s header naming the replica's role (``leader`` or ``standby``); its body says the same.
ROLE_HEADER = "X-Kubeworkers-Role"


class HealthServer:
    """Serves ``/healthz`` (liveness: the background loops are turning), ``/readyz`` and ``/metrics``.

    ``/readyz`` answers 200 on the leader *and* on a healthy standby, and tells them apart in
    its body and the :data:`ROLE_HEADER` header: a standby must count as Ready, or a rolling
    update with ``maxUnavailable: 0`` could never replace the second replica (the new pod would
    wait for a leadership it cannot get while the old leader lives), and a
    PodDisruptionBudget would count the standby as down.
    """

    def __init__(
        self, metrics: OperatorMetrics, *, port: int, host: str = "0.0.0.0", is_healthy: Callable[[], bool],
        role: Callable[[], str] = lambda: "leader",
    ) -> None:
        self._metrics = metrics
        self._host = host
        self._port = port
        self._is_healthy = is_healthy
        self._role = role
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.started_at = time.time()

    async def start(self) -> int:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_page)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        # Port 0 picks a free port (tests run many operators on one host): report the real one.
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port
        logger.info("health and metrics endpoint listening on port %s", self.port)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        if self._is_healthy():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="unhealthy\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        role = self._role()
        if self._is_healthy():
            return web.Response(text=f"{role}\n", headers={ROLE_HEADER: role})
        return web.Response(status=503, text=f"unhealthy {role}\n", headers={ROLE_HEADER: role})

    async def _metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(body=self._metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})
