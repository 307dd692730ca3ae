"""The scaling decision: numbers in, desired replicas and a reason out.

Nothing here does I/O or reads a clock; the controller passes ``now`` (monotonic
seconds) and the previous :class:`ScalerState`, and keeps the state it gets back.

The arithmetic (see ``docs/autoscaling.md``):

* **work to hold**: jobs waiting (``backlog``) plus jobs running (``in_flight``);
* **Little's law**: with a measured mean handler duration ``d`` and arrival rate
  ``λ``, keeping up takes ``λ·d`` busy slots (or the slots busy now, if more);
  draining the backlog within ``targetDrainSeconds`` (``T``) takes
  ``backlog·min(1, d/T)`` slots on top — no more than one slot per waiting job,
  and one slot per waiting job while ``d`` is unknown. Running jobs keep their
  slots in full: a mean drawn from short jobs must not leave the backlog stuck
  behind long ones, so whenever something waits there is a free slot;
* never fewer pods than pods busy when scaling down;
* pods = ceil(slots / concurrency), within ``[minReplicas, maxReplicas]``, at least
  one while anything is waiting, running, arriving or due for retry;
* up at once; down to the highest recommendation of the stabilization window,
  at most once per ``scale_down_interval_seconds``; to zero only after the pool
  has been completely idle for ``idleSecondsBeforeZero``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from kubeworkers_operator.autoscaling.policy import AutoscalingPolicy

# Float slack so that 8.000000001 slots do not become a ninth pod.
_EPSILON = 1e-9


@dataclass(frozen=True)
class Load:
    """What the pool has to do, as measured from Redis (see :func:`~.load.measure_load`)."""

    backlog: int
    """Jobs waiting for a worker: undelivered entries, entries held by dead consumers, due retries."""
    in_flight: int
    """Jobs held by live workers."""
    arrival_rate: float = 0.0
    """Jobs per second added to the pool's streams, recently."""
    duration_estimate: float | None = None
    """Mean handler duration in seconds, from the workers' counters; None until measured."""
    busy_workers: int = 0
    """Live worker pods running at least one job: scale-down never goes below this."""
    live_workers: int = 0
    """Worker pods with a fresh heartbeat."""
    retries_waiting: int = 0
    """Retries waiting out their backoff; a worker must be up to move them back to the stream."""

    @property
    def idle(self) -> bool:
        """Nothing waiting, running, arriving or scheduled: the only state that may lead to zero."""
        return (
            self.backlog == 0 and self.in_flight == 0 and self.arrival_rate <= 0 and self.retries_waiting == 0
        )


@dataclass(frozen=True)
class PodHealth:
    """What the pool's pods say (see :func:`~.pods.assess`): ready ones, and ones that cannot start."""

    ready: int = 0
    failing: int = 0
    """Pods that cannot start (image pull errors, a crash loop, unschedulable)."""
    reason: str = ""
    """The first failing pod's reason (``CrashLoopBackOff``, ``ImagePullBackOff``, ``Unschedulable``...)."""
    message: str = ""


@dataclass(frozen=True)
class ScalerState:
    """What the decision remembers between calls (owned by the controller, opaque to it)."""

    window: tuple[tuple[float, int], ...] = ()
    """(time, recommendation) pairs within the stabilization window, kept as a decreasing sequence:
    a recommendation followed by a higher one can never again be the window's maximum."""
    idle_since: float | None = None
    last_scale_up: float | None = None
    last_scale_down: float | None = None


@dataclass(frozen=True)
class Decision:
    """The outcome of one :func:`decide` call."""

    current: int
    desired: int
    recommended: int
    """What the load alone asks for, before stabilization and rate limits."""
    reason: str
    """Why, in one line: ``"scaled 2 → 6: backlog 480, in-flight 0, drain target 30 s"``."""
    state: ScalerState

    @property
    def changed(self) -> bool:
        return self.desired != self.current


def recommend(load: Load, policy: AutoscalingPolicy) -> tuple[int, str]:
    """Pods the load asks for (before bounds) and the numbers that led there."""
    d = load.duration_estimate
    if d is None or d <= 0:
        share = 1.0
        keep_up = 0.0
        basis = f"backlog {load.backlog}, in-flight {load.in_flight}, one slot per job (no duration yet)"
    else:
        share = min(1.0, d / policy.target_drain_seconds)
        keep_up = load.arrival_rate * d
        basis = (
            f"backlog {load.backlog}, in-flight {load.in_flight}, arrivals {load.arrival_rate:.2f}/s, "
            f"duration {d:.2f} s, drain target {policy.target_drain_seconds:g} s"
        )
    slots = max(float(load.in_flight), keep_up) + load.backlog * share
    if not math.isfinite(slots):  # an absurd arrival rate (a clock step): as many pods as allowed
        return policy.upper_bound, basis
    pods = math.ceil(slots / policy.concurrency - _EPSILON)
    if not load.idle:
        pods = max(pods, 1)
    return pods, basis


def decide(
    load: Load, policy: AutoscalingPolicy, current: int, state: ScalerState, now: float,
    *, health: PodHealth | None = None,
) -> Decision:
    """Desired replicas for a pool that now has ``current`` (the Deployment's ``spec.replicas``).

    ``health`` (None: not known): while pods cannot start, more pods would not run a job
    either, so the pool is held at its ready pods (at least its busy ones, at least one,
    which shows when the cause is fixed) until they start.
    """
    decision = _decide(load, policy, current, state, now)
    if health is None or not health.failing or not policy.enabled:
        return decision
    cap = max(health.ready, load.busy_workers, 1)
    if decision.desired <= cap:
        return decision
    why = (
        f"holding at {cap}: worker pods cannot start ({health.reason}); not growing until pods start "
        f"({health.ready} ready, recommendation {decision.recommended})"
    )
    return _result(current, cap, decision.recommended, why, decision.state)


def _decide(load: Load, policy: AutoscalingPolicy, current: int, state: ScalerState, now: float) -> Decision:
    if not policy.enabled:
        held = policy.fixed_replicas
        return Decision(
            current, held, held, f"autoscaling disabled: held at spec.replicas {held}", ScalerState()
        )

    lo, hi = policy.min_replicas, policy.upper_bound
    wanted, basis = recommend(load, policy)
    rec = min(max(wanted, lo), hi)

    idle_since = (state.idle_since if state.idle_since is not None else now) if load.idle else None
    if load.idle and lo == 0:
        idle_for = now - idle_since if idle_since is not None else 0.0
        if idle_for >= policy.idle_seconds_before_zero:
            # Idle for the whole idle window is stricter than any stabilization: nothing ran,
            # waited or arrived, so there is nothing the window could protect.
            new = ScalerState((), idle_since, state.last_scale_up, _down_at(current, 0, state, now))
            reason = f"idle for {idle_for:.0f} s (idleSecondsBeforeZero {policy.idle_seconds_before_zero:g})"
            return _result(current, 0, 0, reason, new)
        # Keep one warm pod through the idle window (and stay at zero if already there).
        rec = min(max(rec, 1), max(current, 0), hi)

    window = _push(_expire(state.window, now, policy.scale_down_stabilization_seconds), now, rec)
    state = replace(state, window=window, idle_since=idle_since)

    if rec > current:
        desired = rec
        if policy.max_scale_up_step is not None:
            if state.last_scale_up is not None and now - state.last_scale_up < policy.poll_seconds:
                return _result(current, current, rec, f"holding {current}: scale-up step pacing; {basis}", state)
            desired = min(rec, current + policy.max_scale_up_step)
        return _result(current, desired, rec, basis, replace(state, last_scale_up=now))

    if rec == current:
        return _result(current, current, rec, basis, state)

    # Scaling down: the window's peak, never below busy pods, never more often than the interval.
    peak = window[0][1]
    desired = min(current, max(peak, load.busy_workers, lo), hi)
    recently = state.last_scale_down is not None and now - state.last_scale_down < policy.scale_down_interval_seconds
    if recently and current <= hi:
        desired = current
    if desired == current:
        why = (
            f"holding {current}: recommendation {rec}, "
            f"stabilization peak {peak} (window {policy.scale_down_stabilization_seconds:g} s), "
            f"busy pods {load.busy_workers}; {basis}"
        )
        return _result(current, current, rec, why, state)
    return _result(current, desired, rec, basis, replace(state, last_scale_down=now))


def _result(current: int, desired: int, rec: int, basis: str, state: ScalerState) -> Decision:
    reason = f"scaled {current} → {desired}: {basis}" if desired != current else basis
    return Decision(current, desired, rec, reason, state)


def _down_at(current: int, desired: int, state: ScalerState, now: float) -> float | None:
    return now if desired < current else state.last_scale_down


def _expire(window: tuple[tuple[float, int], ...], now: float, span: float) -> tuple[tuple[float, int], ...]:
    return tuple((t, r) for t, r in window if now - t < span)


def _push(window: tuple[tuple[float, int], ...], now: float, rec: int) -> tuple[tuple[float, int], ...]:
    # Monotonic queue: drop earlier entries the new one dominates, so the max is window[0]
    # and the window stays short however often the loop ticks.
    kept = [(t, r) for t, r in window if r > rec]
    kept.append((now, rec))
    return tuple(kept)
