"""A small asynchronous Kubernetes API client for the operator's own calls.

kopf drives the watches and handlers; everything the operator writes outside
a handler (status patches from the status sync, Deployments, Events, TTL
deletions) goes through this client so that no synchronous kubernetes-client
call ever blocks the event loop. It reuses kopf's login result
(:class:`kopf.ConnectionInfo`), so in-cluster service accounts and kubeconfig
files both work exactly as they do for kopf itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import kopf
from kubeworkers.resources import GROUP, VERSION

logger = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


class ApiError(Exception):
    """A non-2xx answer from the apiserver. Callers branch on the subclasses, never on ``status``."""

    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        super().__init__(f"{method} {path} -> {status}: {body[:300]}")
        self.status = status
        """The HTTP status, for logs and metric labels."""
        self.body = body


class Unauthorized(ApiError):
    """401: the credentials were refused (the client logs in again once before raising this)."""


class Forbidden(ApiError):
    """403: RBAC does not allow the request."""


class NotFound(ApiError):
    """404: the object (or its namespace) does not exist."""


class Conflict(ApiError):
    """409: a stale ``resourceVersion``, a failed uid precondition, or a create of an existing name."""


class Gone(ApiError):
    """410: a list ``continue`` token or watch ``resourceVersion`` that expired."""


class Unprocessable(ApiError):
    """422: the object failed validation (schema, CEL rule, immutable field)."""


_BY_STATUS: dict[int, type[ApiError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    422: Unprocessable,
}


def error_for(status: int, method: str, path: str, body: str) -> ApiError:
    """The :class:`ApiError` subclass for an HTTP status: the one place statuses become types."""
    return _BY_STATUS.get(status, ApiError)(status, method, path, body)


Body = dict[str, Any]

#: Times a paged list starts over after its ``continue`` token expired, before it raises :class:`Gone`.
LIST_RESTARTS = 3


def resource_path(api: str, plural: str, namespace: str, name: str | None = None, sub: str | None = None) -> str:
    """URL path of a namespaced resource under ``api`` (``/api/v1``, ``/apis/apps/v1``), its
    collection (no ``name``) or one of its subresources (``sub``: ``status``, ``scale``)."""
    path = f"{api}/namespaces/{quote(namespace)}/{plural}"
    if name is not None:
        path += f"/{quote(name)}"
    if sub is not None:
        path += f"/{sub}"
    return path


def custom_path(plural: str, namespace: str, name: str | None = None, sub: str | None = None) -> str:
    """URL path of a ``workers.io`` custom resource (or collection, or subresource)."""
    return resource_path(f"/apis/{GROUP}/{VERSION}", plural, namespace, name, sub)


def cluster_custom_path(plural: str) -> str:
    """URL path of a ``workers.io`` collection across every namespace (a cluster-wide list)."""
    return f"/apis/{GROUP}/{VERSION}/{plural}"


def deployment_path(namespace: str, name: str | None = None, sub: str | None = None) -> str:
    """URL path of an ``apps/v1`` Deployment (or the collection, or a subresource such as ``scale``)."""
    return resource_path("/apis/apps/v1", "deployments", namespace, name, sub)


def disruption_budget_path(namespace: str, name: str | None = None) -> str:
    """URL path of a ``policy/v1`` PodDisruptionBudget (or the collection)."""
    return resource_path("/apis/policy/v1", "poddisruptionbudgets", namespace, name)


def lease_path(namespace: str, name: str | None = None) -> str:
    """URL path of a ``coordination.k8s.io/v1`` Lease (or the collection): the leader election's."""
    return resource_path("/apis/coordination.k8s.io/v1", "leases", namespace, name)


def core_path(plural: str, namespace: str, name: str | None = None) -> str:
    """URL path of a core (``v1``) namespaced resource: ``pods``, ``events``."""
    return resource_path("/api/v1", plural, namespace, name)


class KubeApi:
    """Async JSON client bound to one apiserver, with bounded concurrency.

    ``concurrency`` caps in-flight requests so a burst (a thousand finished
    jobs) queues here instead of overwhelming the apiserver or the operator.
    """

    def __init__(
        self,
        info: kopf.ConnectionInfo,
        *,
        concurrency: int = 16,
        timeout: float = 30.0,
        relogin: Callable[[], kopf.ConnectionInfo] | None = None,
    ) -> None:
        self._info = info
        # Projected service-account tokens rotate: on a 401 the credentials are read again.
        self._relogin = relogin
        self._server = info.server.rstrip("/")
        self._limit = asyncio.Semaphore(concurrency)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        #: Counts of requests by verb, for the operator's metrics and the benchmark.
        self.requests: dict[str, int] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ssl=self._info.as_ssl_context()),
                headers={**self._info.as_http_headers(), "User-Agent": "kubeworkers-operator"},
                timeout=self._timeout,
            )
        return self._session

    async def _reconnect(self) -> None:
        assert self._relogin is not None
        self._info = await asyncio.to_thread(self._relogin)
        old, self._session = self._session, None
        if old is not None:
            await old.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> Body:
        """Send one request; return the decoded JSON body or raise an :class:`ApiError` subclass."""
        url = self._server + path
        if params:
            url += "?" + urlencode(params)
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if data is not None else {}
        async with self._limit:
            self.requests[method] = self.requests.get(method, 0) + 1
            for attempt in range(2):
                async with self._get_session().request(method, url, data=data, headers=headers) as resp:
                    text = await resp.text()
                    status = resp.status
                if status == 401 and attempt == 0 and self._relogin is not None:
                    await self._reconnect()
                    continue
                break
            if status >= 300:
                raise error_for(status, method, path, text)
        result: Body = json.loads(text) if text else {}
        return result

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> Body:
        return await self.request("GET", path, params=params)

    async def get_or_none(self, path: str) -> Body | None:
        """GET an object; None when it does not exist (:class:`NotFound`)."""
        try:
            return await self.get(path)
        except NotFound:
            return None

    async def create(self, path: str, body: Body) -> Body:
        return await self.request("POST", path, body=body)

    async def replace(self, path: str, body: Body) -> Body:
        """PUT: a whole-object update, a compare-and-swap when ``body`` carries a ``resourceVersion``."""
        return await self.request("PUT", path, body=body)

    async def merge_patch(self, path: str, patch: Body) -> Body:
        return await self.request("PATCH", path, body=patch, content_type=MERGE_PATCH)

    async def json_patch(self, path: str, ops: list[Body]) -> Body:
        return await self.request("PATCH", path, body=ops, content_type=JSON_PATCH)

    async def apply(self, path: str, body: Body, *, manager: str) -> Body:
        """Server-side apply: fields we omit (``replicas``) stay owned by whoever set them."""
        return await self.request(
            "PATCH", path, body=body, content_type=APPLY_PATCH, params={"fieldManager": manager, "force": "true"}
        )

    async def delete(self, path: str, *, uid: str | None = None, propagation: str = "Background") -> Body:
        """Delete, optionally only if the object still has ``uid`` (not a namesake created since)."""
        options: Body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        if uid is not None:
            options["preconditions"] = {"uid": uid}
        return await self.request("DELETE", path, body=options)

    async def list_all(self, path: str, *, label_selector: str | None = None, page: int = 500) -> list[Body]:
        """List a collection with paging (``continue`` tokens).

        A token expires (410 :class:`Gone`) when the list took longer than etcd keeps its
        snapshot (compaction, ~5 min): the pages read so far belong to that snapshot, so the
        list starts over from the first page, at most :data:`LIST_RESTARTS` times.
        """
        base: dict[str, str] = {"limit": str(page)}
        if label_selector:
            base["labelSelector"] = label_selector
        for restart in range(LIST_RESTARTS + 1):
            items: list[Body] = []
            params = dict(base)
            try:
                while True:
                    result = await self.get(path, params)
                    items.extend(result.get("items", []))
                    token = result.get("metadata", {}).get("continue")
                    if not token:
                        return items
                    params["continue"] = token
            except Gone:
                if "continue" not in params or restart == LIST_RESTARTS:
                    raise
                logger.info("list of %s expired mid-way (continue token too old); starting over", path)
        raise AssertionError("unreachable")
