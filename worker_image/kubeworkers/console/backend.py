"""Where a console gets its Redis, its pools, what the apiserver says, and who may act.

Two backends serve the same pages (docs/console.md):

- :class:`RedisBackend`, ``kubeworkers ui --redis-url URL``: one Redis, the pools found in it
  (:class:`~kubeworkers.console.reads.Pools`), no apiserver, and whoever reaches the port may act
  when ``--enable-actions`` is given (it listens on 127.0.0.1 for that reason);
- the operator's (``kubeworkers-operator --console-port``, :mod:`kubeworkers_operator.adapters.console`):
  each pool's Redis through the operator's runtime, the pools from its index, the WorkerPool's and
  the Job CR's state and Events from the apiserver, and every action authorised the Kubernetes
  way: the caller's bearer token through a TokenReview, then a SubjectAccessReview for the verb on
  the Job (or the pool).

This module is pure data and a protocol: the console package never imports the operator.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis

from . import reads

#: Actions the console can take, and what each needs on the Kubernetes side (docs/console.md).
ACTIONS = ("retry", "cancel", "replay")


@dataclass(frozen=True)
class Verdict:
    """Whether a caller may do an action, who they are (a user name, never a token) and why not."""

    allowed: bool
    who: str = ""
    reason: str = ""


@dataclass(frozen=True)
class Sample:
    """One point of a pool's timeline: when, replicas ready and desired, and the backlog."""

    at: float
    ready: int
    desired: int
    backlog: int


@dataclass
class PoolKube:
    """What the apiserver says of a pool: its replicas, the autoscaler's last decision, the timeline."""

    ready: int | None = None
    desired: int | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    last_scale_time: str | None = None
    last_scale_reason: str | None = None
    conditions: list[tuple[str, str, str, str]] = field(default_factory=list)
    """(type, status, reason, message) of each of the WorkerPool's conditions."""
    timeline: list[Sample] = field(default_factory=list)


@dataclass(frozen=True)
class KubeEvent:
    """One Kubernetes Event of a Job CR."""

    last_seen: str
    type: str
    reason: str
    message: str
    count: int


@dataclass
class JobKube:
    """A Job CR as the apiserver has it (its YAML-ish JSON, its phase) and its Events, newest last."""

    name: str
    body: dict[str, Any]
    events: list[KubeEvent] = field(default_factory=list)


class Backend(Protocol):
    #: The console requires a signed-in caller (a bearer token) for every action.
    login: bool
    #: ... and for every page too (the operator's ``--console-require-sign-in``).
    read_login: bool
    #: Said in every page's header after the namespace ("served by the operator"); "" for nothing.
    label: str

    async def pool_names(self) -> list[str]: ...

    async def redis_for(self, pool: str) -> redis.Redis: ...

    async def who(self, token: str) -> Verdict: ...

    async def authorise(self, token: str | None, action: str, pool: str, job_id: str | None) -> Verdict: ...

    async def authorise_read(self, token: str) -> Verdict: ...

    async def pools_kube(self, pools: list[str]) -> dict[str, PoolKube]: ...

    async def job_kube(self, pool: str, job_id: str) -> JobKube | None: ...

    def close(self) -> None: ...


class RedisBackend:
    """``kubeworkers ui``: one Redis, no apiserver, no login (``--enable-actions`` is the only gate)."""

    login = False
    read_login = False

    def __init__(self, r: redis.Redis, pools: reads.Pools, label: str = "") -> None:
        self.redis = r
        self.pools = pools
        self.label = label

    async def pool_names(self) -> list[str]:
        return await asyncio.to_thread(self.pools.names, self.redis)

    async def redis_for(self, pool: str) -> redis.Redis:
        return self.redis

    async def who(self, token: str) -> Verdict:
        return Verdict(False, reason="this console has no login (kubeworkers ui)")

    async def authorise(self, token: str | None, action: str, pool: str, job_id: str | None) -> Verdict:
        return Verdict(True)

    async def authorise_read(self, token: str) -> Verdict:
        return Verdict(True)

    async def pools_kube(self, pools: list[str]) -> dict[str, PoolKube]:
        return {}

    async def job_kube(self, pool: str, job_id: str) -> JobKube | None:
        return None

    def close(self) -> None:
        from kubeworkers import connection

        connection.close(self.redis)
