"""The Kubernetes side of the autoscaler: a small Protocol and its implementation.

The controller talks to Kubernetes only through :class:`KubeScaler` (one per
pool), so tests and benchmarks can put a recording fake in its place and the
operator can back it with whatever client it already has.
:class:`KubernetesScaler` uses the official ``kubernetes`` client, whose calls
block, so each one runs in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any, Protocol

from kubeworkers.resources import GROUP, VERSION, WORKERPOOL_KIND, WORKERPOOL_PLURAL

from kubeworkers_operator.autoscaling.deletion_cost import DELETION_COST_ANNOTATION, WorkerPod
from kubeworkers_operator.model.names import deployment_name, pod_selector

MERGE_PATCH = "application/merge-patch+json"
#: ``source.component`` of the Events the autoscaler posts.
EVENT_COMPONENT = "kubeworkers-autoscaler"


class KubeScaler(Protocol):
    """What the autoscaler of one pool does to Kubernetes."""

    async def get_replicas(self) -> int | None:
        """The worker Deployment's ``spec.replicas``; None if the Deployment does not exist."""
        ...

    async def set_replicas(self, replicas: int) -> None:
        """Set the worker Deployment's ``spec.replicas`` (through its scale subresource)."""
        ...

    async def list_worker_pods(self) -> list[WorkerPod]:
        """The pool's worker pods with their current deletion-cost annotation."""
        ...

    async def set_deletion_cost(self, pod: str, cost: int) -> None:
        """Write ``controller.kubernetes.io/pod-deletion-cost`` on one pod (gone pods are ignored)."""
        ...

    async def patch_status(self, status: dict[str, Any]) -> None:
        """Merge ``status`` (camelCase keys) into the WorkerPool's status subresource."""
        ...

    async def post_event(self, reason: str, message: str, *, warning: bool = False) -> None:
        """Post a Kubernetes Event about the WorkerPool."""
        ...


def _parse_cost(annotations: dict[str, str] | None) -> int | None:
    raw = (annotations or {}).get(DELETION_COST_ANNOTATION)
    try:
        return None if raw is None else int(raw)
    except ValueError:
        return None


class KubernetesScaler:
    """:class:`KubeScaler` over the official ``kubernetes`` client (blocking calls run in threads)."""

    def __init__(self, namespace: str, pool: str, api_client: Any = None) -> None:
        from kubernetes import client

        self.namespace = namespace
        self.pool = pool
        self.deployment = deployment_name(pool)
        self._client = client
        self._apps = client.AppsV1Api(api_client)
        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._pool_uid: str | None = None

    @staticmethod
    def _not_found(exc: Exception) -> bool:
        return getattr(exc, "status", None) == 404

    async def get_replicas(self) -> int | None:
        from kubernetes.client.exceptions import ApiException

        try:
            scale = await asyncio.to_thread(
                self._apps.read_namespaced_deployment_scale, self.deployment, self.namespace
            )
        except ApiException as exc:
            if self._not_found(exc):
                return None
            raise
        return int(scale.spec.replicas or 0)

    async def set_replicas(self, replicas: int) -> None:
        await asyncio.to_thread(
            self._apps.patch_namespaced_deployment_scale,
            self.deployment,
            self.namespace,
            {"spec": {"replicas": replicas}},
            _content_type=MERGE_PATCH,
        )

    async def list_worker_pods(self) -> list[WorkerPod]:
        pods = await asyncio.to_thread(
            self._core.list_namespaced_pod, self.namespace, label_selector=pod_selector(self.pool)
        )
        return [
            WorkerPod(
                name=p.metadata.name,
                deletion_cost=_parse_cost(p.metadata.annotations),
                terminating=p.metadata.deletion_timestamp is not None,
            )
            for p in pods.items
        ]

    async def set_deletion_cost(self, pod: str, cost: int) -> None:
        from kubernetes.client.exceptions import ApiException

        body = {"metadata": {"annotations": {DELETION_COST_ANNOTATION: str(cost)}}}
        try:
            await asyncio.to_thread(
                self._core.patch_namespaced_pod, pod, self.namespace, body, _content_type=MERGE_PATCH
            )
        except ApiException as exc:
            if not self._not_found(exc):
                raise

    async def patch_status(self, status: dict[str, Any]) -> None:
        await asyncio.to_thread(
            self._custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            self.namespace,
            WORKERPOOL_PLURAL,
            self.pool,
            {"status": status},
            _content_type=MERGE_PATCH,
        )

    async def _uid(self) -> str | None:
        if self._pool_uid is None:
            body = await asyncio.to_thread(
                self._custom.get_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                WORKERPOOL_PLURAL,
                self.pool,
            )
            self._pool_uid = body.get("metadata", {}).get("uid")
        return self._pool_uid

    async def post_event(self, reason: str, message: str, *, warning: bool = False) -> None:
        c = self._client
        now = dt.datetime.now(dt.UTC)
        event = c.CoreV1Event(
            metadata=c.V1ObjectMeta(name=f"{self.pool}.{uuid.uuid4().hex[:12]}", namespace=self.namespace),
            involved_object=c.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}",
                kind=WORKERPOOL_KIND,
                name=self.pool,
                namespace=self.namespace,
                uid=await self._uid(),
            ),
            reason=reason,
            message=message[:1024],
            type="Warning" if warning else "Normal",
            source=c.V1EventSource(component=EVENT_COMPONENT),
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            reporting_component=EVENT_COMPONENT,
        )
        await asyncio.to_thread(self._core.create_namespaced_event, self.namespace, event)
