"""Leader election: which operator replica does the work, kept on a ``coordination.k8s.io/v1`` Lease.

Why a Lease of our own and not kopf's peering: kopf peering only pauses the handlers of
lower-priority peers (a ``KopfPeering`` object every replica writes to), with no lease duration
a standby can count on and no fencing: a paused replica's background tasks (our status sync,
autoscalers, chores) keep running, and a replica cut off from the apiserver never learns it
should stop. This elector is small, runs over the operator's own Kubernetes client, and says
exactly when a leader stops and a standby starts (see :mod:`kubeworkers_operator.model.leader_lease`
for the rules and docs/operations.md for the numbers).

:class:`LeaderElector` calls ``on_started`` when this replica becomes the leader and
``on_stopped`` when it stops (it could not renew within the renew deadline, another replica
took the Lease, or the operator shuts down). :meth:`LeaderElector.leading` is fenced by time:
it turns false at the renew deadline even if the loop itself is stuck in a request.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from kubeworkers_operator.adapters.kube import Conflict, lease_path
from kubeworkers_operator.model.leader_lease import (
    Action,
    ElectionTiming,
    LeaseRecord,
    Observation,
    decide,
    lease_body,
)

logger = logging.getLogger(__name__)

Body = dict[str, Any]


class _Outcome(enum.Enum):
    UNCHANGED = "unchanged"
    ELECTED = "elected"
    TAKEN_OVER = "taken over"
    """We led, and another replica holds the Lease now."""


class LeaseApi(Protocol):
    """The three calls the elector makes (:class:`~kubeworkers_operator.adapters.kube.KubeApi` has them)."""

    async def get_or_none(self, path: str) -> Body | None: ...
    async def create(self, path: str, body: Body) -> Body: ...
    async def replace(self, path: str, body: Body) -> Body: ...


class LeaderElector:
    """Holds, renews or waits for one Lease; see the module docstring."""

    def __init__(
        self,
        api: LeaseApi,
        *,
        namespace: str,
        name: str,
        identity: str,
        timing: ElectionTiming,
        on_started: Callable[[], Awaitable[None]],
        on_stopped: Callable[[str], Awaitable[None]],
        observe: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if not identity:
            raise ValueError("leader election needs a non-empty identity (the pod name)")
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timing = timing
        self._on_started = on_started
        self._on_stopped = on_stopped
        self._observe = observe
        self._clock = clock
        self._wall = wall
        self._seen = Observation()
        self._record: LeaseRecord | None = None
        self._is_leader = False
        self._leading_until = 0.0
        self.last_decision = ""
        """The reason of the last read's decision (logs and tests)."""

    def leading(self) -> bool:
        """True while this replica holds the Lease *and* its last renew is within the renew deadline."""
        return self._is_leader and self._clock() < self._leading_until

    async def run(self) -> None:
        """Elect forever (cancel to stop; call :meth:`release` afterwards to hand over at once)."""
        while True:
            pause = await self.step()
            await asyncio.sleep(pause)  # a timer, not a condition: the next read is due after it

    async def step(self) -> float:
        """One read (and write) of the Lease; returns how long to wait before the next one."""
        started = self._clock()
        if self._is_leader and started >= self._leading_until:
            await self._step_down("the Lease was not renewed within the renew deadline")
        # A leader's attempt may take only until its deadline: a hung request must not keep it leading.
        timeout = self._leading_until - started if self._is_leader else self.timing.renew_deadline
        outcome = _Outcome.UNCHANGED
        try:
            outcome = await asyncio.wait_for(self._attempt(started), timeout=max(0.05, timeout))
        except asyncio.CancelledError:
            raise
        except Conflict as exc:  # a rival wrote first: it leads, or we try again
            logger.info("leader election: Lease %s/%s changed under us: %s", self.namespace, self.name, exc)
        except Exception as exc:  # an apiserver outage, a 403 (RBAC), a timeout: said loudly, tried again
            logger.warning("leader election: Lease %s/%s not read or written: %r", self.namespace, self.name, exc)
        now = self._clock()
        if outcome is _Outcome.TAKEN_OVER:
            await self._step_down(f"the Lease was taken over: {self.last_decision}")
        elif self._is_leader and now >= self._leading_until:
            await self._step_down("the Lease was not renewed within the renew deadline")
        elif outcome is _Outcome.ELECTED:
            await self._on_started()
        if self._is_leader:
            return max(0.0, min(self.timing.renew_period, self._leading_until - now))
        return self.timing.retry_period

    async def _attempt(self, started: float) -> _Outcome:
        """Read the Lease, then create, renew or take it if :func:`decide` says so.

        Only reads and writes: the callbacks run outside (a timeout here must never cut them short).
        """
        path = lease_path(self.namespace, self.name)
        body = await self.api.get_or_none(path)
        record = None if body is None else LeaseRecord.from_body(body)
        decision = decide(record, self.identity, self._seen, started)
        self.last_decision = decision.reason
        if decision.action is Action.WAIT:
            return _Outcome.TAKEN_OVER if self._is_leader else _Outcome.UNCHANGED
        new = lease_body(
            self.namespace, self.name, holder=self.identity, duration_seconds=self.timing.lease_duration,
            now=self._wall(), previous=record,
        )
        if decision.action is Action.CREATE:
            written = await self.api.create(lease_path(self.namespace), new)
        else:
            written = await self.api.replace(path, new)
        self._record = LeaseRecord.from_body(written)
        self._seen.resource_version = self._record.resource_version
        self._seen.changed_at = started
        self._leading_until = self.timing.leading_until(started)
        if self._is_leader:
            return _Outcome.UNCHANGED
        self._is_leader = True
        if self._observe is not None:
            self._observe(True)
        logger.info("leader election: %s leads now (%s)", self.identity, decision.reason)
        return _Outcome.ELECTED

    async def _step_down(self, reason: str) -> None:
        if not self._is_leader:
            return
        self._is_leader = False
        self._leading_until = 0.0
        if self._observe is not None:
            self._observe(False)
        logger.warning("leader election: %s stops leading: %s", self.identity, reason)
        await self._on_stopped(reason)

    async def release(self) -> None:
        """Stop leading and hand the Lease back (holder cleared), so a standby takes over at its next read.

        Called on shutdown after the leader's work has stopped; a failure only means the standby
        waits for the lease to expire instead.
        """
        was_leader, record = self._is_leader, self._record
        await self._step_down("the operator is shutting down")
        if not was_leader or record is None:
            return
        released = lease_body(
            self.namespace, self.name, holder="", duration_seconds=self.timing.lease_duration,
            now=self._wall(), previous=record,
        )
        try:
            await asyncio.wait_for(self.api.replace(lease_path(self.namespace, self.name), released), timeout=2.0)
            logger.info("leader election: %s released the Lease", self.identity)
        except Exception as exc:
            logger.warning("leader election: could not release the Lease (it expires instead): %r", exc)
