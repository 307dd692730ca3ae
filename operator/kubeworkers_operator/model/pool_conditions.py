"""The WorkerPool's conditions, decided from what its Deployment and its pods report: pure.

* ``Available``: the pool can run jobs now. True while a worker pod is ready, or while
  the pool is scaled to zero on purpose (the first job brings a pod up); False when it
  has pods and none is ready.
* ``PodsFailing``: worker pods cannot start (image pull errors, a crash loop such as an
  import error of ``spec.imports``, unschedulable). Decided by the autoscaler from the
  pods' status (:mod:`kubeworkers_operator.autoscaling.pods`), which also stops growing
  the pool while it is True.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

AVAILABLE = "Available"
PODS_FAILING = "PodsFailing"


@dataclass(frozen=True)
class ConditionValue:
    """One condition's status, reason and message (its type is the caller's)."""

    status: str
    reason: str
    message: str


def available(deployment_status: Mapping[str, Any] | None, *, desired: int | None) -> ConditionValue:
    """``Available`` from the worker Deployment's status and its ``spec.replicas`` (``desired``)."""
    status = deployment_status or {}
    ready = int(status.get("readyReplicas") or 0)
    replicas = int(status.get("replicas") or 0)
    if ready > 0:
        return ConditionValue("True", "WorkersReady", f"{ready} of {replicas} worker pods ready")
    if replicas == 0 and not desired:
        return ConditionValue("True", "ScaledToZero", "no worker pods while idle; the first job brings one up")
    return ConditionValue("False", "NoReadyWorkers", f"none of {max(replicas, desired or 0)} worker pods is ready")
