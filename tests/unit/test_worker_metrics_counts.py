"""The worker's job counts and durations, kept as plain numbers, export what prometheus_client's own
``Counter`` and ``Histogram`` export for the same observations (``_created`` aside: its value is a time)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from kubeworkers import protocol
from kubeworkers.metrics import WorkerMetrics
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

HANDLERS = st.sampled_from(["resize", "send", "h-ü"])
OUTCOMES = st.sampled_from(["succeeded", "failed", "retried", "timed_out"])
# The bucket bounds themselves (a bound is inclusive), just around them, zero and past the last one.
SECONDS = st.one_of(
    st.sampled_from([0.0, *protocol.DURATION_BUCKETS_S, 3600.0001, 1e9]),
    st.floats(min_value=0, max_value=10_000, allow_nan=False),
)


def reference(observations: list[tuple[str, str, float]], docs: dict[str, str]) -> str:
    """The exposition of the same metrics through prometheus_client's classes."""
    registry = CollectorRegistry()
    jobs = Counter("kubeworkers_jobs", docs["kubeworkers_jobs"], ["namespace", "pool", "handler", "outcome"],
                   registry=registry)
    duration = Histogram("kubeworkers_job_duration_seconds", docs["kubeworkers_job_duration_seconds"],
                         ["namespace", "pool", "handler"], buckets=protocol.DURATION_BUCKETS_S, registry=registry)
    for handler, outcome, seconds in observations:
        jobs.labels("ns", "p", handler, outcome).inc()
        duration.labels("ns", "p", handler).observe(seconds)
    return generate_latest(registry).decode()


def without_created(text: str) -> list[str]:
    """The exposition's lines without ``_created`` samples, sorted (a family's samples may come in
    another order)."""
    return sorted(line for line in text.splitlines() if "_created" not in line)


def created_series(text: str) -> list[str]:
    return sorted(line.rsplit(" ", 1)[0] for line in text.splitlines()
                  if "_created" in line and not line.startswith("#"))


@given(st.lists(st.tuples(HANDLERS, OUTCOMES, SECONDS), max_size=30))
def test_the_counts_and_durations_export_what_prometheus_clients_classes_would(
    observations: list[tuple[str, str, float]],
) -> None:
    metrics = WorkerMetrics("p", "ns")
    for handler, outcome, seconds in observations:
        metrics.outcome(handler, outcome)
        metrics.observe(handler, seconds)
    registry = CollectorRegistry()  # the worker's registry also holds its gauges and process metrics
    registry.register(metrics.jobs)
    ours = generate_latest(registry).decode()
    theirs = reference(observations, {family.name: family.documentation for family in metrics.jobs.describe()})
    assert without_created(ours) == without_created(theirs)
    assert created_series(ours) == created_series(theirs)


def test_the_worker_registry_exports_them_beside_its_other_metrics() -> None:
    metrics = WorkerMetrics("p", "ns")
    metrics.outcome("h", "succeeded")
    metrics.observe("h", 0.002)
    text = metrics.render().decode()
    assert 'kubeworkers_jobs_total{handler="h",namespace="ns",outcome="succeeded",pool="p"} 1.0' in text
    assert 'kubeworkers_job_duration_seconds_bucket{handler="h",le="0.005",namespace="ns",pool="p"} 1.0' in text
    assert 'kubeworkers_job_duration_seconds_bucket{handler="h",le="0.001",namespace="ns",pool="p"} 0.0' in text
    assert "kubeworkers_jobs_in_flight" in text
