"""The one writer of ``WorkerPool.status``.

Two parts of the operator report on a pool, each in fields of its own: the pool
path copies the worker Deployment's replica counts (:data:`REPLICA_FIELDS`), and
the pool's autoscaler publishes its last decision (``desiredReplicas``,
``backlog``, ``inFlight``, ``arrivalRate``, ``durationEstimateSeconds``,
``lastScaleTime``, ``lastScaleReason``). Both go through :class:`PoolStatusWriter`
as JSON merge patches of only their own fields, so neither overwrites the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubeworkers.resources import WORKERPOOL_PLURAL

from kubeworkers_operator.adapters.kube import KubeApi, NotFound, custom_path

#: ``WorkerPool.status`` fields copied from the worker Deployment's status.
REPLICA_FIELDS = ("replicas", "readyReplicas")


def replicas_of(deployment_status: Mapping[str, Any] | None) -> dict[str, int]:
    """The pool-status replica fields for a Deployment's ``status`` (absent counts are 0)."""
    status = deployment_status or {}
    return {name: int(status.get(name) or 0) for name in REPLICA_FIELDS}


class PoolStatusWriter:
    """Merges fields into WorkerPool statuses through :class:`KubeApi`."""

    def __init__(self, api: KubeApi) -> None:
        self._api = api
        #: Replica counts last copied per pool (skips redundant writes on every Deployment event).
        self._replicas_written: dict[tuple[str, str], dict[str, int]] = {}

    async def merge(self, namespace: str, name: str, fields: Mapping[str, Any]) -> None:
        """Merge ``fields`` (camelCase) into the pool's status; raises :class:`NotFound` if it is gone."""
        await self._api.merge_patch(custom_path(WORKERPOOL_PLURAL, namespace, name, "status"), {"status": fields})

    async def mirror_replicas(self, namespace: str, name: str, deployment_status: Mapping[str, Any] | None) -> None:
        """Copy the worker Deployment's replica counts into the pool's status, when they changed."""
        wanted = replicas_of(deployment_status)
        if self._replicas_written.get((namespace, name)) == wanted:
            return
        try:
            await self.merge(namespace, name, wanted)
        except NotFound:
            return  # the pool is being deleted
        self._replicas_written[(namespace, name)] = wanted
