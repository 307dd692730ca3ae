"""The autoscaling policy of one pool: the WorkerPool spec's knobs as plain numbers.

:class:`AutoscalingPolicy` is what the pure decision function reads. It is
built from :class:`kubeworkers.resources.WorkerPoolSpec` (or the raw ``spec``
mapping kopf hands over), so the CRD stays the single place where defaults and
validation live; the two extra fields here are internal pacing constants.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubeworkers.resources import WorkerPoolSpec


@dataclass(frozen=True)
class AutoscalingPolicy:
    """Everything :func:`~kubeworkers_operator.autoscaling.decision.decide` needs to know about a pool."""

    enabled: bool = True
    """``spec.autoscaling.enabled``; when false the pool is held at :attr:`fixed_replicas`."""
    min_replicas: int = 0
    """``spec.minReplicas``: never fewer pods (0 allows scale to zero)."""
    max_replicas: int = 10
    """``spec.maxReplicas``: never more pods."""
    fixed_replicas: int = 0
    """``spec.replicas`` (or ``minReplicas`` when unset): the size while autoscaling is disabled."""
    concurrency: int = 4
    """``spec.concurrency``: jobs one worker pod runs at once."""
    target_drain_seconds: float = 30.0
    """``spec.autoscaling.targetDrainSeconds``: size the pool to empty the backlog within this time."""
    scale_down_stabilization_seconds: float = 60.0
    """``spec.autoscaling.scaleDownStabilizationSeconds``: scale down to the highest recommendation
    made within this window, never below it."""
    idle_seconds_before_zero: float = 120.0
    """``spec.autoscaling.idleSecondsBeforeZero``: how long the pool must be completely idle
    (no backlog, nothing in flight, no arrivals, no retries waiting) before it goes to zero."""
    poll_seconds: float = 2.0
    """``spec.autoscaling.pollSeconds``: safety-net poll; stream activity wakes the loop at once."""
    max_scale_up_step: int | None = None
    """``spec.autoscaling.maxScaleUpStep``: most pods added per scale-up (None: no limit); step-limited
    scale-ups are at least :attr:`poll_seconds` apart."""
    scale_down_interval_seconds: float = 10.0
    """Least time between two scale-downs, so a window sliding past old peaks lowers the pool in a few
    steps rather than one pod (and one Event, one ReplicaSet sync) per tick."""

    @property
    def upper_bound(self) -> int:
        """``maxReplicas``, raised to ``minReplicas`` if a spec gets them crossed."""
        return max(self.max_replicas, self.min_replicas)

    @classmethod
    def from_spec(cls, spec: WorkerPoolSpec | Mapping[str, Any]) -> AutoscalingPolicy:
        """The policy of a pool from its ``spec`` (model, or the CRD's camelCase mapping)."""
        if not isinstance(spec, WorkerPoolSpec):
            spec = WorkerPoolSpec.model_validate(dict(spec))
        a = spec.autoscaling
        return cls(
            enabled=a.enabled,
            min_replicas=spec.min_replicas,
            max_replicas=spec.max_replicas,
            fixed_replicas=spec.fixed_replicas,
            concurrency=spec.concurrency,
            target_drain_seconds=float(a.target_drain_seconds),
            scale_down_stabilization_seconds=float(a.scale_down_stabilization_seconds),
            idle_seconds_before_zero=float(a.idle_seconds_before_zero),
            poll_seconds=float(a.poll_seconds),
            max_scale_up_step=a.max_scale_up_step,
        )
