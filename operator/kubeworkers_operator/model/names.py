"""Names and labels the operator gives the objects it creates, and that the autoscaler finds them by.

The Deployment builder, the autoscaler and the kopf wiring all take these from here,
so a pool's Deployment, its pods' label and the selector the autoscaler lists pods
with cannot drift apart.
"""

from __future__ import annotations

#: Label on every worker pod of a pool (and the Deployment's selector): ``workers.io/pool=<pool>``.
POOL_LABEL = "workers.io/pool"
#: Name of a pool's worker Deployment is ``<pool>`` + this suffix.
DEPLOYMENT_SUFFIX = "-workers"
#: Field manager the operator applies Deployments with (and ``app.kubernetes.io/managed-by``).
FIELD_MANAGER = "kubeworkers-operator"


def deployment_name(pool: str) -> str:
    """The worker Deployment of ``pool`` (same namespace): ``<pool>-workers``."""
    return f"{pool}{DEPLOYMENT_SUFFIX}"


def pod_selector(pool: str) -> str:
    """Label selector of the worker pods of ``pool``."""
    return f"{POOL_LABEL}={pool}"
