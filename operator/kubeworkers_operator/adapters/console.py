"""The web console served by the operator (``--console-port``; docs/console.md, *Served by the operator*).

The pages are :mod:`kubeworkers.console`'s, the same as ``kubeworkers ui``'s; what differs is the
backend, :class:`OperatorBackend`:

- the pools are those of the console's namespace in the operator's index (the WorkerPools it
  watches), each read on its own Redis: the client :meth:`Runtime.redis_of` gives, as a blocking
  twin (the CLI's modules the pages use are blocking; they run in threads);
- the pools page adds the WorkerPool's replicas, bounds, the autoscaler's last decision
  (``status.lastScaleReason``, ``lastScaleTime``) and a timeline of replicas and backlog that
  :class:`Sampler` fills every few seconds (:mod:`..model.console_timeline`); a job's page adds
  its Job CR and the CR's Events;
- every action needs the caller's bearer token, authenticated by a TokenReview and authorised by
  a SubjectAccessReview for ``update`` on the Job (or the pool) (:mod:`..model.console_auth`).

No token, Redis URL or password reaches a page, a log line or a metric: tokens go to the
apiserver in a review's body and nowhere else; a pool's Redis is named by its Secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import redis
import redis.asyncio as aioredis
from aiohttp import web
from kubeworkers import connection
from kubeworkers.console import backend as cb
from kubeworkers.console import server
from kubeworkers.resources import JOB_PLURAL, WORKERPOOL_PLURAL

from kubeworkers_operator.adapters.kube import ApiError, Forbidden, KubeApi, custom_path
from kubeworkers_operator.adapters.pool_redis import PoolRedisUnavailable, RedisByPool
from kubeworkers_operator.model import console_auth as auth
from kubeworkers_operator.model.console_timeline import Point, Timelines
from kubeworkers_operator.model.index import ClusterIndex

logger = logging.getLogger(__name__)

TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
#: Events shown on a job's page, newest last.
EVENTS_SHOWN = 50
#: Seconds an apiserver read of the pages is reused: an open page refreshes every 2 s, and each
#: refresh would otherwise be a GET (and a LIST of Events) per pool or job.
KUBE_CACHE_SECONDS = 5.0


class Runtime(Protocol):
    """What the console uses of :class:`kubeworkers_operator.runtime.Runtime`."""

    api: KubeApi
    index: ClusterIndex

    @property
    def redises(self) -> RedisByPool: ...

    async def redis_of(self, namespace: str, pool: str) -> aioredis.Redis: ...


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def pool_kube(body: dict[str, Any]) -> cb.PoolKube:
    """What the pools page shows of a WorkerPool body."""
    spec: dict[str, Any] = body.get("spec") or {}
    status: dict[str, Any] = body.get("status") or {}
    conditions = [(str(c.get("type", "")), str(c.get("status", "")), str(c.get("reason", "")),
                   str(c.get("message", ""))) for c in status.get("conditions") or [] if isinstance(c, dict)]
    return cb.PoolKube(
        ready=_int(status.get("readyReplicas")) or (0 if status else None),
        desired=_int(status.get("desiredReplicas")),
        min_replicas=_int(spec.get("minReplicas", 0)),
        max_replicas=_int(spec.get("maxReplicas", 10)),
        last_scale_time=status.get("lastScaleTime"),
        last_scale_reason=status.get("lastScaleReason"),
        conditions=conditions,
    )


def point_of(body: dict[str, Any], at: float) -> Point:
    status = body.get("status") or {}
    return Point(at, _int(status.get("readyReplicas")) or 0,
                 _int(status.get("desiredReplicas")) or _int(status.get("replicas")) or 0,
                 _int(status.get("backlog")) or 0)


def event_of(body: dict[str, Any]) -> cb.KubeEvent:
    last = body.get("lastTimestamp") or body.get("eventTime") or (body.get("metadata") or {}).get("creationTimestamp")
    return cb.KubeEvent(str(last or ""), str(body.get("type", "")), str(body.get("reason", "")),
                        str(body.get("message", "")), _int(body.get("count")) or 1)


@dataclass
class OperatorBackend:
    """:class:`kubeworkers.console.backend.Backend` on the operator's runtime, for one namespace."""

    rt: Runtime
    namespace: str
    timelines: Timelines = field(default_factory=Timelines)
    login: bool = True
    read_login: bool = False
    label: str = "served by the operator"
    _sync: dict[int, tuple[aioredis.Redis, redis.Redis]] = field(default_factory=dict)
    _cache: dict[tuple[str, str], tuple[float, Any]] = field(default_factory=dict)

    def _cached(self, key: tuple[str, str]) -> Any:
        hit = self._cache.get(key)
        return None if hit is None or time.monotonic() - hit[0] > KUBE_CACHE_SECONDS else hit[1]

    def _keep(self, key: tuple[str, str], value: Any) -> None:
        if len(self._cache) > 1000:
            self._cache.clear()
        self._cache[key] = (time.monotonic(), value)

    async def pool_names(self) -> list[str]:
        return sorted(name for ns, name in self.rt.index.pools if ns == self.namespace)

    async def redis_for(self, pool: str) -> redis.Redis:
        """The blocking twin of the pool's client (one per distinct Redis, made on first use)."""
        try:
            client = await self.rt.redis_of(self.namespace, pool)
        except PoolRedisUnavailable as exc:
            raise web.HTTPServiceUnavailable(reason=f"pool {pool}: {exc}") from None
        known = self._sync.get(id(client))
        if known is not None and known[0] is client:
            return known[1]
        twin = connection.connect(self._url_of(client), socket_timeout=10, socket_connect_timeout=5,
                                  health_check_interval=30)
        self._sync[id(client)] = (client, twin)
        return twin

    def _url_of(self, client: aioredis.Redis) -> str:
        # The URL stays in memory (RedisByPool is the only other holder); it is never shown.
        url = self.rt.redises.url_of(client)
        if url is None:
            raise web.HTTPServiceUnavailable(reason="the pool's Redis client was retired: reload the page")
        return url

    # ------------------------------------------------------------------ authorisation

    async def who(self, token: str) -> cb.Verdict:
        found = await self._identity(token)
        if isinstance(found, auth.Decision):
            return cb.Verdict(False, reason=found.reason)
        return cb.Verdict(True, found.username)

    async def _identity(self, token: str) -> auth.Identity | auth.Decision:
        try:
            review = await self.rt.api.create(TOKEN_REVIEWS, auth.token_review(token))
        except Forbidden:
            return auth.Decision(False, reason="the operator may not create TokenReviews (the chart's ui.enabled "
                                               "grants it)")
        except (ApiError, TimeoutError, aiohttp.ClientError, OSError) as exc:
            return auth.Decision(False, reason=f"the apiserver did not review the token ({type(exc).__name__})")
        return auth.identity_of(review)

    async def authorise(self, token: str | None, action: str, pool: str, job_id: str | None) -> cb.Verdict:
        if not token:
            return cb.Verdict(False, reason="no bearer token: sign in (/login) or send Authorization: Bearer")
        return await self._review(token, auth.target(action, self.namespace, pool, job_id))

    async def authorise_read(self, token: str) -> cb.Verdict:
        return await self._review(token, auth.read_target(self.namespace))

    async def _review(self, token: str, on: auth.Target) -> cb.Verdict:
        """A TokenReview of ``token``, then a SubjectAccessReview of its user for ``on``."""
        found = await self._identity(token)
        if isinstance(found, auth.Decision):
            return cb.Verdict(False, reason=found.reason)
        try:
            review = await self.rt.api.create(ACCESS_REVIEWS, auth.access_review(found, on))
        except Forbidden:
            return cb.Verdict(False, found.username, "the operator may not create SubjectAccessReviews "
                                                     "(the chart's ui.enabled grants it)")
        except (ApiError, TimeoutError, aiohttp.ClientError, OSError) as exc:
            return cb.Verdict(False, found.username,
                              f"the apiserver did not review the access ({type(exc).__name__})")
        decision = auth.decide(found, on, review)
        return cb.Verdict(decision.allowed, decision.who, decision.reason)

    # ------------------------------------------------------------------ apiserver data

    async def pool_body(self, name: str) -> dict[str, Any] | None:
        try:
            return await self.rt.api.get_or_none(custom_path(WORKERPOOL_PLURAL, self.namespace, name))
        except (ApiError, TimeoutError, aiohttp.ClientError, OSError) as exc:
            logger.debug("console: WorkerPool %s/%s unread: %s", self.namespace, name, type(exc).__name__)
            return None

    async def _cached_pool_body(self, name: str) -> dict[str, Any] | None:
        key = ("pool", name)
        body: dict[str, Any] | None = self._cached(key)
        if body is None:
            body = await self.pool_body(name)
            self._keep(key, body)
        return body

    async def pools_kube(self, pools: list[str]) -> dict[str, cb.PoolKube]:
        bodies = await asyncio.gather(*(self._cached_pool_body(p) for p in pools))
        found: dict[str, cb.PoolKube] = {}
        for name, body in zip(pools, bodies, strict=True):
            if body is None:
                continue
            view = pool_kube(body)
            view.timeline = [cb.Sample(p.at, p.ready, p.desired, p.backlog)
                             for p in self.timelines.points((self.namespace, name))]
            found[name] = view
        return found

    async def job_kube(self, pool: str, job_id: str) -> cb.JobKube | None:
        cr_namespace, _, name = job_id.partition("/")
        if cr_namespace != self.namespace or not name:
            return None
        found: cb.JobKube | None = self._cached(("job", name))
        if found is None:
            found = await self._job_kube(name)
            if found is not None:
                self._keep(("job", name), found)
        return found

    async def _job_kube(self, name: str) -> cb.JobKube | None:
        try:
            body = await self.rt.api.get_or_none(custom_path(JOB_PLURAL, self.namespace, name))
        except (ApiError, TimeoutError, aiohttp.ClientError, OSError):
            return None
        if body is None:
            return None
        (body.get("metadata") or {}).pop("managedFields", None)
        events: list[cb.KubeEvent] = []
        try:
            listed = await self.rt.api.get(f"/api/v1/namespaces/{self.namespace}/events", params={
                "fieldSelector": f"involvedObject.name={name},involvedObject.kind=Job"})
            items = [i for i in listed.get("items") or [] if (i.get("involvedObject") or {}).get("apiVersion", "")
                     .startswith("workers.io/")]
            events = [event_of(i) for i in items][-EVENTS_SHOWN:]
            events.sort(key=lambda ev: ev.last_seen)
        except (ApiError, TimeoutError, aiohttp.ClientError, OSError) as exc:
            logger.debug("console: Events of Job %s/%s unread: %s", self.namespace, name, type(exc).__name__)
        return cb.JobKube(f"{self.namespace}/{name}", body, events)

    def close(self) -> None:
        for _, twin in self._sync.values():
            with contextlib.suppress(Exception):
                connection.close(twin)
        self._sync.clear()


@dataclass
class Sampler:
    """Every :attr:`Timelines.period` seconds, one point per pool of the namespace: its WorkerPool status."""

    backend: OperatorBackend

    async def run(self) -> None:
        timelines = self.backend.timelines
        while True:
            now = time.time()
            names = await self.backend.pool_names()
            bodies = await asyncio.gather(*(self.backend.pool_body(p) for p in names))
            for name, body in zip(names, bodies, strict=True):
                if body is not None:
                    timelines.add((self.backend.namespace, name), point_of(body, now))
            timelines.forget_older_than(now - timelines.period * timelines.capacity)
            await asyncio.sleep(timelines.period)


@dataclass
class OperatorConsole:
    """The console's server, backend and sampler, as :func:`start` started them."""

    runner: web.AppRunner
    port: int
    backend: OperatorBackend
    sampler: asyncio.Task[None]

    async def stop(self) -> None:
        self.sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.sampler
        await self.runner.cleanup()
        self.backend.close()


async def start(rt: Runtime, *, port: int, namespace: str, actions: bool, host_names: list[str],
                host: str = "0.0.0.0", sample_seconds: float | None = None,
                require_sign_in: bool = False) -> OperatorConsole:
    """Serve the console of ``namespace`` on ``host:port``; returns what :meth:`OperatorConsole.stop` stops."""
    timelines = Timelines() if sample_seconds is None else Timelines(period=sample_seconds)
    backend = OperatorBackend(rt, namespace, timelines, read_login=require_sign_in)
    console = server.Console(backend=backend, namespace=namespace, actions=actions, where="the operator's pools",
                             host_names=frozenset(host_names))
    runner, bound = await server.start(console, host, port)
    sampler = asyncio.create_task(Sampler(backend).run(), name="console-timeline")
    logger.info("console of namespace %s listening on port %d (%s%s)", namespace, bound,
                "actions need a bearer token authorised by the apiserver" if actions else "read-only",
                "; reading needs one too" if require_sign_in else "")
    return OperatorConsole(runner, bound, backend, sampler)
