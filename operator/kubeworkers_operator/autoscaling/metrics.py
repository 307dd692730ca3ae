"""Prometheus metrics of the autoscaler: the numbers of every decision, labelled by pool."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from kubeworkers_operator.autoscaling.decision import Decision, Load


class AutoscalerMetrics:
    """One set of metrics (names prefixed ``kubeworkers_autoscaler_``) in ``registry``.

    Create it once per registry (the operator passes its own) and share it between pools.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry if registry is not None else CollectorRegistry()
        self.registry = r
        p = "kubeworkers_autoscaler_"
        labels = ["namespace", "pool"]
        self.desired = Gauge(p + "desired_replicas", "Replicas the autoscaler wants.", labels, registry=r)
        self.current = Gauge(p + "current_replicas", "Deployment spec.replicas seen.", labels, registry=r)
        self.recommended = Gauge(
            p + "recommended_replicas", "Replicas the load asks for, before stabilization.", labels, registry=r
        )
        self.backlog = Gauge(p + "backlog_jobs", "Jobs waiting for a worker.", labels, registry=r)
        self.in_flight = Gauge(p + "in_flight_jobs", "Jobs held by live workers.", labels, registry=r)
        self.arrival_rate = Gauge(p + "arrival_rate_jobs_per_second", "Recent job arrivals.", labels, registry=r)
        self.duration = Gauge(
            p + "duration_estimate_seconds", "Mean handler duration measured by workers.", labels, registry=r
        )
        self.live_workers = Gauge(p + "live_workers", "Workers with a fresh heartbeat.", labels, registry=r)
        self.scale_events = Counter(
            p + "scale_events_total", "Replica changes made, by direction.", [*labels, "direction"], registry=r
        )
        self.errors = Counter(p + "loop_errors_total", "Failed autoscaler ticks.", labels, registry=r)

    def record(self, namespace: str, pool: str, load: Load, decision: Decision) -> None:
        """Export one decision and its inputs."""
        lv = (namespace, pool)
        self.desired.labels(*lv).set(decision.desired)
        self.current.labels(*lv).set(decision.current)
        self.recommended.labels(*lv).set(decision.recommended)
        self.backlog.labels(*lv).set(load.backlog)
        self.in_flight.labels(*lv).set(load.in_flight)
        self.arrival_rate.labels(*lv).set(load.arrival_rate)
        self.duration.labels(*lv).set(load.duration_estimate or 0.0)
        self.live_workers.labels(*lv).set(load.live_workers)
        if decision.changed:
            direction = "up" if decision.desired > decision.current else "down"
            self.scale_events.labels(*lv, direction).inc()

    def forget(self, namespace: str, pool: str) -> None:
        """Drop a deleted pool's series."""
        for gauge in (
            self.desired, self.current, self.recommended, self.backlog, self.in_flight,
            self.arrival_rate, self.duration, self.live_workers, self.errors,
        ):
            try:
                gauge.remove(namespace, pool)
            except KeyError:
                pass
        for direction in ("up", "down"):
            try:
                self.scale_events.remove(namespace, pool, direction)
            except KeyError:
                pass
