"""From Redis observations to load: NULL lag, missing streams and groups, dead consumers, rates."""

from __future__ import annotations

from kubeworkers.protocol import WorkerHeartbeat
from kubeworkers_operator.autoscaling.decision import ScalerState, decide
from kubeworkers_operator.autoscaling.load import (
    ArrivalRate,
    DurationEstimate,
    GroupSnapshot,
    PoolSnapshot,
    StreamSnapshot,
    held_by_consumer,
    measure_load,
    undelivered,
)
from kubeworkers_operator.autoscaling.policy import AutoscalingPolicy

NOW = 1_000_000.0
POLICY = AutoscalingPolicy(min_replicas=0, max_replicas=50, concurrency=2)


def beat(worker: str, in_flight: int = 0, age: float = 1.0) -> WorkerHeartbeat:
    return WorkerHeartbeat(worker=worker, in_flight=in_flight, concurrency=2, at=NOW - age)


def group(lag: int | None, pending: dict[str, int] | None = None, **kw: object) -> GroupSnapshot:
    pending = pending or {}
    return GroupSnapshot(
        lag=lag,
        entries_read=kw.get("entries_read", 0),  # type: ignore[arg-type]
        last_delivered_id="0-0",
        pending=sum(pending.values()),
        pending_by_consumer=pending,
        undelivered_counted=kw.get("counted"),  # type: ignore[arg-type]
    )


def stream(name: str = "s", length: int = 0, added: int = 0, g: GroupSnapshot | None = None) -> StreamSnapshot:
    return StreamSnapshot(name=name, exists=True, length=length, entries_added=added, group=g)


def test_missing_stream_counts_as_nothing_waiting() -> None:
    snap = PoolSnapshot(at=NOW, streams=(StreamSnapshot(name="s", exists=False),))
    load = measure_load(snap)
    assert (load.backlog, load.in_flight) == (0, 0)
    assert decide(load, POLICY, 0, ScalerState(), 0.0).desired == 0


def test_stream_without_group_counts_every_entry_as_waiting() -> None:
    snap = PoolSnapshot(at=NOW, streams=(stream(length=37, added=37, g=None),))
    load = measure_load(snap)
    assert load.backlog == 37
    assert decide(load, POLICY, 0, ScalerState(), 0.0).desired == 19


def test_null_lag_uses_the_counted_undelivered_entries() -> None:
    s = stream(length=100, added=120, g=group(None, entries_read=60, counted=25))
    assert undelivered(s) == 25


def test_null_lag_without_a_count_errs_towards_more_pods_but_not_past_the_stream_length() -> None:
    s = stream(length=30, added=120, g=group(None, entries_read=60))
    assert undelivered(s) == 30  # added - read = 60 would exceed what the stream holds
    s = stream(length=100, added=120, g=group(None, entries_read=60))
    assert undelivered(s) == 60


def test_null_lag_on_a_busy_pool_never_reads_as_idle() -> None:
    # The KEDA failure: lag NULL on a pool with work waiting scaled it to zero.
    s = stream(length=500, added=500, g=group(None, entries_read=None, counted=480))
    load = measure_load(PoolSnapshot(at=NOW, streams=(s,)))
    assert load.backlog == 480
    assert decide(load, POLICY, 3, ScalerState(idle_since=0.0), now=10_000.0).desired == 50


def test_pending_entries_of_dead_consumers_count_as_backlog_not_in_flight() -> None:
    g = group(0, pending={"pod-a": 2, "pod-dead": 5, "pod-gone": 1})
    snap = PoolSnapshot(
        at=NOW,
        streams=(stream(length=8, added=8, g=g),),
        heartbeats=(beat("pod-a", in_flight=2), beat("pod-dead", in_flight=5, age=300.0)),
    )
    load = measure_load(snap, heartbeat_timeout=20.0)
    assert load.in_flight == 2
    assert load.backlog == 6
    assert (load.live_workers, load.busy_workers) == (1, 1)


def test_backlog_and_in_flight_sum_over_all_priority_streams() -> None:
    streams = (
        stream("high", 3, 3, group(1, pending={"p1": 2})),
        stream("normal", 10, 10, group(7, pending={"p1": 1, "p2": 2})),
        StreamSnapshot(name="low", exists=False),
    )
    snap = PoolSnapshot(at=NOW, streams=streams, heartbeats=(beat("p1", 3), beat("p2", 2)), retries_due=4)
    load = measure_load(snap)
    assert load.backlog == 1 + 7 + 4
    assert load.in_flight == 5


def test_busy_ness_comes_from_the_consumers_pending_entries_not_the_heartbeats_count() -> None:
    # A heartbeat's in_flight is up to one beat (5 s) old: p1 took a job since its first beat
    # (in_flight 0), p2 finished its three since its last one. The pending list is written with
    # every take and every ack, so it is the one that is right.
    snap = PoolSnapshot(
        at=NOW, streams=(stream("s", 1, 1, group(0, pending={"p1": 1})),), heartbeats=(beat("p1", 0), beat("p2", 3))
    )
    load = measure_load(snap)
    assert (load.in_flight, load.busy_workers, load.live_workers) == (1, 1, 2)
    assert held_by_consumer(snap) == {"p1": 1}


def test_retries_waiting_for_backoff_are_reported() -> None:
    snap = PoolSnapshot(at=NOW, streams=(), retries_waiting=2)
    load = measure_load(snap)
    assert load.retries_waiting == 2
    assert not load.idle


def test_arrival_rate_is_added_entries_over_the_window() -> None:
    rate = ArrivalRate(window_seconds=10.0)
    rate.observe(0.0, 0)
    for t in range(1, 31):
        r = rate.observe(float(t), 5 * t)
    assert r == 5.0


def test_arrival_rate_of_a_burst_is_spread_over_the_window() -> None:
    rate = ArrivalRate(window_seconds=10.0)
    rate.observe(0.0, 0)
    assert rate.observe(0.1, 500) == 50.0


def test_arrival_rate_falls_to_zero_when_arrivals_stop() -> None:
    rate = ArrivalRate(window_seconds=10.0)
    for t in range(10):
        rate.observe(float(t), 10 * t)
    for t in range(10, 30):
        r = rate.observe(float(t), 90)
    assert r == 0.0


def test_arrival_rate_survives_a_recreated_stream() -> None:
    rate = ArrivalRate(window_seconds=10.0)
    rate.observe(0.0, 1000)
    assert rate.observe(1.0, 3) == 0.0
    assert rate.observe(2.0, 23) == 2.0


def test_duration_estimate_follows_recent_runs_and_keeps_the_last_when_idle() -> None:
    est = DurationEstimate(window_seconds=60.0)
    assert est.observe(0.0, 0, 0.0) is None
    assert est.observe(1.0, 10, 20.0) == 2.0
    for t in range(2, 200):
        last = est.observe(float(t), 10 + 10 * t, 20.0 + 5.0 * t)  # now 0.5 s per job
    assert last == 0.5
    for t in range(200, 400):
        last = est.observe(float(t), 2000, 1015.0)
    assert last == 0.5


def test_duration_estimate_starts_from_the_all_time_mean() -> None:
    est = DurationEstimate()
    assert est.observe(0.0, 4, 6.0) == 1.5
