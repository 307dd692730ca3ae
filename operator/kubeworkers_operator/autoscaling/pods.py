"""The pool's worker pods as the autoscaler sees them, and whether they can start: pure.

A pod that cannot start (its image cannot be pulled, its worker exits at once — an
import error of ``spec.imports`` — and the kubelet backs off, or no node can take it)
does no work however many of them there are, so the decision stops growing such a
pool (:class:`~.decision.PodHealth`) and the pool reports it (``PodsFailing``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kubeworkers_operator.autoscaling.decision import PodHealth

#: Container waiting reasons the kubelet reports for a container that cannot start.
FAILING_WAITING_REASONS = frozenset({
    "CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName",
    "CreateContainerConfigError", "CreateContainerError", "RunContainerError",
})
#: The scheduler's reason on ``PodScheduled=False`` for a pod no node can take.
UNSCHEDULABLE = "Unschedulable"


@dataclass(frozen=True)
class WorkerPod:
    """A worker pod as the autoscaler needs to see it."""

    name: str
    deletion_cost: int | None
    """The current ``pod-deletion-cost`` annotation value (None: unset or unparsable)."""
    terminating: bool = False
    ready: bool = True
    """The pod's ``Ready`` condition."""
    failure: str | None = None
    """Why it cannot start (a :data:`FAILING_WAITING_REASONS` entry or :data:`UNSCHEDULABLE`); None if it can."""
    failure_message: str = ""


def assess(pods: Iterable[WorkerPod]) -> PodHealth:
    """How many pods are ready, and which cannot start (terminating pods do not count)."""
    present = [p for p in pods if not p.terminating]
    ready = sum(1 for p in present if p.ready)
    failing = [p for p in present if p.failure]
    if not failing:
        return PodHealth(ready=ready)
    first = failing[0]
    detail = f": {first.failure_message}" if first.failure_message else ""
    message = f"{len(failing)} of {len(present)} worker pods cannot start ({first.name}: {first.failure}{detail})"
    return PodHealth(ready=ready, failing=len(failing), reason=str(first.failure), message=message[:1024])
