"""The scaling decision, as a specification: numbers in, replicas and reason out."""

from __future__ import annotations

import itertools
from dataclasses import replace

from kubeworkers.resources import WorkerPoolSpec
from kubeworkers_operator.autoscaling.decision import Decision, Load, ScalerState, decide, recommend
from kubeworkers_operator.autoscaling.policy import AutoscalingPolicy

POLICY = AutoscalingPolicy(
    min_replicas=0,
    max_replicas=20,
    concurrency=4,
    target_drain_seconds=30,
    scale_down_stabilization_seconds=60,
    idle_seconds_before_zero=120,
    scale_down_interval_seconds=10,
)
IDLE = Load(backlog=0, in_flight=0)


def run(
    loads: list[tuple[float, Load]], *, current: int, policy: AutoscalingPolicy = POLICY
) -> list[Decision]:
    """Feed timed loads through decide() as the controller does, applying each decision."""
    state = ScalerState()
    out: list[Decision] = []
    for now, load in loads:
        d = decide(load, policy, current, state, now)
        state, current = d.state, d.desired
        out.append(d)
    return out


# --------------------------------------------------------------------------- sizing


def test_without_durations_each_waiting_or_running_job_gets_a_slot() -> None:
    pods, basis = recommend(Load(backlog=30, in_flight=2), POLICY)
    assert pods == 8  # 32 jobs / 4 per pod
    assert "no duration" in basis


def test_little_law_sizes_for_drain_target_and_arrivals() -> None:
    # 480 waiting, 1 s each, drain in 30 s: 16 slots; 2/s arriving at 1 s: 2 more slots -> 18 / 4 -> 5 pods.
    load = Load(backlog=480, in_flight=0, arrival_rate=2.0, duration_estimate=1.0)
    assert recommend(load, POLICY)[0] == 5


def test_long_jobs_never_get_more_than_one_slot_each() -> None:
    # A 10-minute job cannot be drained within 30 s however many pods run: one slot per job is the most useful.
    load = Load(backlog=10, in_flight=0, duration_estimate=600.0)
    assert recommend(load, POLICY)[0] == 3  # ceil(10 / 4)


def test_backlog_waiting_behind_busy_slots_always_gets_a_free_slot() -> None:
    # Every slot busy (maybe with long jobs) while the mean duration comes from short ones:
    # Little's law alone would call 8 slots enough and leave the 3 waiting jobs stuck.
    load = Load(backlog=3, in_flight=8, duration_estimate=0.1)
    assert recommend(load, POLICY)[0] == 3


def test_pods_never_fewer_than_running_jobs_need() -> None:
    load = Load(backlog=0, in_flight=40, duration_estimate=0.01)
    assert recommend(load, POLICY)[0] == 10


# --------------------------------------------------------------------------- the cases


def test_scale_up_from_zero_is_immediate_on_the_first_job() -> None:
    d = decide(Load(backlog=1, in_flight=0), POLICY, 0, ScalerState(), now=0.0)
    assert d.desired == 1
    assert d.reason.startswith("scaled 0 → 1:")


def test_scale_up_is_immediate_even_right_after_a_scale_down() -> None:
    state = ScalerState(last_scale_down=99.0, window=((50.0, 2),))
    d = decide(Load(backlog=400, in_flight=8), POLICY, 2, state, now=100.0)
    assert d.desired == 20  # 408 slots / 4 = 102, capped at maxReplicas


def test_desired_stays_within_min_and_max_replicas() -> None:
    policy = replace(POLICY, min_replicas=2, max_replicas=5)
    assert decide(Load(backlog=1000, in_flight=0), policy, 2, ScalerState(), 0.0).desired == 5
    assert decide(IDLE, policy, 2, ScalerState(idle_since=0.0), 10_000.0).desired == 2
    # maxReplicas lowered below the current size applies at once.
    assert decide(Load(backlog=1000, in_flight=0), policy, 9, ScalerState(), 0.0).desired == 5


def test_crossed_bounds_resolve_to_min_replicas() -> None:
    policy = replace(POLICY, min_replicas=3, max_replicas=1)
    assert decide(Load(backlog=100, in_flight=0), policy, 0, ScalerState(), 0.0).desired == 3


def test_steady_arrivals_with_empty_backlog_keep_the_pool_up() -> None:
    # Fast jobs are taken as soon as they land: snapshots show nothing waiting or running,
    # but jobs keep arriving. The pool must not go to zero while busy.
    busy = Load(backlog=0, in_flight=0, arrival_rate=5.0, duration_estimate=0.05)
    decisions = run([(float(t), busy) for t in range(0, 1000, 5)], current=1)
    assert all(d.desired >= 1 for d in decisions)


def test_steady_arrivals_are_served_at_little_law_size() -> None:
    # 20 jobs/s of 2 s each = 40 busy slots = 10 pods, even with nothing waiting at the instant.
    load = Load(backlog=0, in_flight=0, arrival_rate=20.0, duration_estimate=2.0)
    assert decide(load, POLICY, 1, ScalerState(), 0.0).desired == 10


def test_scale_down_waits_for_the_stabilization_window_and_takes_its_peak() -> None:
    high = Load(backlog=72, in_flight=8)  # 80 slots -> 20 pods
    low = Load(backlog=0, in_flight=8)  # 2 pods
    loads = [(0.0, high)] + [(float(t), low) for t in range(1, 80)]
    decisions = run(loads, current=0)
    sizes = {int(t): d.desired for (t, _), d in zip(loads, decisions, strict=True)}
    assert sizes[0] == 20
    assert all(sizes[t] == 20 for t in range(1, 60)), "scaled down inside the stabilization window"
    assert sizes[60] == 2
    assert "stabilization peak 20" in decisions[30].reason


def test_flapping_load_does_not_flap_the_replicas() -> None:
    # Backlog alternating every second between a burst and nothing, for five minutes.
    burst, calm = Load(backlog=60, in_flight=4), Load(backlog=0, in_flight=4)
    loads = [(float(t), burst if t % 2 == 0 else calm) for t in range(300)]
    decisions = run(loads, current=1)
    changes = [d for d in decisions if d.changed]
    assert [(d.current, d.desired) for d in changes] == [(1, 16)]


def test_slowly_falling_load_scales_down_in_paced_steps() -> None:
    # Recommendations falling one pod per second: scale-downs are at least the interval apart.
    loads = [(float(t), Load(backlog=0, in_flight=max(4, 80 - 4 * t))) for t in range(200)]
    decisions = run(loads, current=20)
    down_times = [t for (t, _), d in zip(loads, decisions, strict=True) if d.desired < d.current]
    assert down_times, "never scaled down"
    assert all(b - a >= POLICY.scale_down_interval_seconds for a, b in itertools.pairwise(down_times))
    assert decisions[-1].desired == 1


def test_scale_down_never_goes_below_busy_pods() -> None:
    # Six pods each running one job: by slots one pod would do, but five would have to die mid-job.
    state = ScalerState(window=((0.0, 2),))
    d = decide(Load(backlog=0, in_flight=6, busy_workers=6), POLICY, 10, state, now=100.0)
    assert d.desired == 6


def test_scale_to_zero_only_after_idle_window() -> None:
    loads = [(0.0, Load(backlog=0, in_flight=1))] + [(float(t), IDLE) for t in range(1, 200)]
    decisions = run(loads, current=3)
    zero_at = next(t for (t, _), d in zip(loads, decisions, strict=True) if d.desired == 0)
    assert zero_at == 1 + POLICY.idle_seconds_before_zero
    assert all(d.desired >= 1 for d in decisions[: int(zero_at)])
    assert "idle for 120 s" in decisions[int(zero_at)].reason


def test_any_activity_restarts_the_idle_window() -> None:
    loads = [(float(t), IDLE) for t in range(100)]
    loads += [(100.0, Load(backlog=0, in_flight=0, retries_waiting=1))]
    loads += [(float(t), IDLE) for t in range(101, 200)]
    decisions = run(loads, current=1)
    assert all(d.desired == 1 for d in decisions), "went to zero less than idleSecondsBeforeZero after activity"


def test_retries_waiting_out_their_backoff_keep_one_worker() -> None:
    waiting = Load(backlog=0, in_flight=0, retries_waiting=3)
    decisions = run([(float(t), waiting) for t in range(0, 1000, 10)], current=0)
    assert decisions[0].desired == 1
    assert all(d.desired == 1 for d in decisions)


def test_idle_pool_at_zero_stays_at_zero() -> None:
    decisions = run([(float(t), IDLE) for t in range(0, 600, 10)], current=0)
    assert all(d.desired == 0 and not d.changed for d in decisions)


def test_min_replicas_above_zero_prevents_scale_to_zero() -> None:
    policy = replace(POLICY, min_replicas=1)
    decisions = run([(float(t), IDLE) for t in range(0, 600, 10)], current=4, policy=policy)
    assert decisions[-1].desired == 1


def test_disabled_autoscaling_holds_spec_replicas_whatever_the_load() -> None:
    policy = replace(POLICY, enabled=False, fixed_replicas=3)
    for load in (Load(backlog=10_000, in_flight=50), IDLE):
        d = decide(load, policy, 7, ScalerState(), 0.0)
        assert d.desired == 3
        assert "disabled" in d.reason


def test_max_scale_up_step_limits_and_paces_scale_ups() -> None:
    policy = replace(POLICY, max_scale_up_step=4, poll_seconds=2.0)
    big = Load(backlog=1000, in_flight=0)
    decisions = run([(0.0, big), (1.0, big), (2.0, big), (4.0, big)], current=0, policy=policy)
    assert [d.desired for d in decisions] == [4, 4, 8, 12]


def test_policy_is_read_from_the_worker_pool_spec() -> None:
    spec = WorkerPoolSpec.model_validate(
        {
            "image": "w:1",
            "imports": ["app.handlers"],
            "concurrency": 8,
            "minReplicas": 1,
            "maxReplicas": 30,
            "replicas": 5,
            "autoscaling": {"enabled": False, "targetDrainSeconds": 90, "idleSecondsBeforeZero": 10},
        }
    )
    p = AutoscalingPolicy.from_spec(spec)
    assert (p.enabled, p.concurrency, p.min_replicas, p.max_replicas, p.fixed_replicas) == (False, 8, 1, 30, 5)
    assert (p.target_drain_seconds, p.idle_seconds_before_zero) == (90, 10)
    assert AutoscalingPolicy.from_spec(spec.to_k8s()) == p
