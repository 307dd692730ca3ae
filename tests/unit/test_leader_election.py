"""Leader election on a Lease: one leader at a time, a standby takes over once the Lease expires,
and a leader that cannot renew stops leading before any standby may start (fencing by time).

The elector runs against an in-memory Lease store with the apiserver's compare-and-swap rule
(a write carrying a stale ``resourceVersion`` is a 409), on a fake clock.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from kubeworkers_operator.adapters.kube import Conflict, NotFound
from kubeworkers_operator.flows.leadership import LeaderElector
from kubeworkers_operator.model.leader_lease import (
    Action,
    ElectionTiming,
    LeaseRecord,
    Observation,
    decide,
    lease_body,
)

Body = dict[str, Any]
TIMING = ElectionTiming(lease_duration=10.0, renew_deadline=7.0, renew_period=2.0, retry_period=2.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class LeaseStore:
    """One namespace's Leases, with resourceVersion compare-and-swap; ``down`` makes every call fail."""

    def __init__(self) -> None:
        self.leases: dict[str, Body] = {}
        self.version = 0
        self.down = False
        self.hang = False

    async def _check(self) -> None:
        if self.hang:
            await asyncio.Event().wait()
        if self.down:
            raise OSError("apiserver unreachable")

    def _store(self, name: str, body: Body) -> Body:
        self.version += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.leases[name] = stored
        return copy.deepcopy(stored)

    async def get_or_none(self, path: str) -> Body | None:
        await self._check()
        found = self.leases.get(path.rsplit("/", 1)[1])
        return copy.deepcopy(found) if found else None

    async def create(self, path: str, body: Body) -> Body:
        await self._check()
        name = body["metadata"]["name"]
        if name in self.leases:
            raise Conflict(409, "POST", path, "AlreadyExists")
        return self._store(name, body)

    async def replace(self, path: str, body: Body) -> Body:
        await self._check()
        name = path.rsplit("/", 1)[1]
        if name not in self.leases:
            raise NotFound(404, "PUT", path, "")
        if body["metadata"].get("resourceVersion") != self.leases[name]["metadata"]["resourceVersion"]:
            raise Conflict(409, "PUT", path, "the object has been modified")
        return self._store(name, body)

    def holder(self) -> str | None:
        lease = self.leases.get("kubeworkers-operator")
        return None if lease is None else lease["spec"]["holderIdentity"]


class Replica:
    """One operator replica's elector and what it was told."""

    def __init__(self, identity: str, store: LeaseStore, clock: Clock) -> None:
        self.events: list[str] = []
        self.gauge: list[bool] = []

        async def started() -> None:
            self.events.append("started")

        async def stopped(reason: str) -> None:
            self.events.append("stopped")

        self.elector = LeaderElector(
            store, namespace="ops", name="kubeworkers-operator", identity=identity, timing=TIMING,
            on_started=started, on_stopped=stopped, observe=self.gauge.append, clock=clock, wall=clock,
        )


def test_a_standby_waits_while_the_holder_renews_and_takes_over_once_the_record_is_unchanged_for_the_lease() -> None:
    seen = Observation()
    held = LeaseRecord("a", 10.0, 0, None, "5")
    assert decide(held, "b", seen, now=0.0).action is Action.WAIT
    assert decide(held, "b", seen, now=9.9).action is Action.WAIT
    renewed = LeaseRecord("a", 10.0, 0, None, "6")
    assert decide(renewed, "b", seen, now=15.0).action is Action.WAIT  # a change restarts the clock
    assert decide(renewed, "b", seen, now=24.9).action is Action.WAIT
    assert decide(renewed, "b", seen, now=25.0).action is Action.TAKE


def test_missing_held_and_released_leases() -> None:
    assert decide(None, "b", Observation(), now=0.0).action is Action.CREATE
    assert decide(LeaseRecord("b", 10.0, 0, None, "1"), "b", Observation(), now=0.0).action is Action.RENEW
    assert decide(LeaseRecord("", 10.0, 3, None, "1"), "b", Observation(), now=0.0).action is Action.TAKE


def test_a_change_of_holder_counts_a_transition_and_a_renew_keeps_the_acquire_time() -> None:
    first = lease_body("ops", "l", holder="a", duration_seconds=10, now=0.0, previous=None)
    assert first["spec"]["leaseTransitions"] == 0 and "resourceVersion" not in first["metadata"]
    record = LeaseRecord("a", 10, 0, first["spec"]["acquireTime"], "7")
    renewed = lease_body("ops", "l", holder="a", duration_seconds=10, now=5.0, previous=record)
    assert renewed["spec"]["acquireTime"] == first["spec"]["acquireTime"]
    assert renewed["metadata"]["resourceVersion"] == "7"  # compare-and-swap
    taken = lease_body("ops", "l", holder="b", duration_seconds=10, now=20.0, previous=record)
    assert taken["spec"]["leaseTransitions"] == 1 and taken["spec"]["acquireTime"] != record.acquire_time


def test_timings_must_let_a_leader_stop_before_its_lease_expires() -> None:
    with pytest.raises(ValueError, match="renew deadline < lease duration"):
        ElectionTiming(lease_duration=10, renew_deadline=10, renew_period=2, retry_period=2)
    with pytest.raises(ValueError, match="renew period < renew deadline"):
        ElectionTiming(lease_duration=10, renew_deadline=7, renew_period=7, retry_period=2)


async def test_one_of_two_replicas_leads_and_the_other_takes_over_within_lease_and_retry_after_it_dies() -> None:
    clock, store = Clock(), LeaseStore()
    a, b = Replica("operator-a", store, clock), Replica("operator-b", store, clock)
    await a.elector.step()
    await b.elector.step()
    assert (a.elector.leading(), b.elector.leading()) == (True, False)
    assert a.events == ["started"] and b.events == [] and a.gauge == [True]
    for _ in range(10):  # a renews every 2 s; b never takes over a live leader
        clock.now += TIMING.renew_period
        await a.elector.step()
        await b.elector.step()
        assert a.elector.leading() and not b.elector.leading()
    died_at = clock.now  # a is SIGKILLed right after its last renew: it steps no more
    while not b.elector.leading():
        clock.now += TIMING.retry_period
        await b.elector.step()
    assert store.holder() == "operator-b" and b.events == ["started"]
    assert clock.now - died_at <= TIMING.lease_duration + TIMING.retry_period
    assert store.leases["kubeworkers-operator"]["spec"]["leaseTransitions"] == 1


async def test_a_leader_that_cannot_renew_stops_leading_before_a_standby_may_take_over() -> None:
    clock, store = Clock(), LeaseStore()
    a, b = Replica("operator-a", store, clock), Replica("operator-b", store, clock)
    await a.elector.step()
    await b.elector.step()
    renewed_at = clock.now
    store.down = True  # a partition: a cannot renew, b cannot read
    a_stopped_at = b_started_at = None
    for _ in range(20):
        clock.now += 0.5
        if a_stopped_at is None and not a.elector.leading():
            a_stopped_at = clock.now
        if clock.now >= renewed_at + 8:
            store.down = False  # b sees the apiserver again; a stays cut off
            a.elector.api = _Unreachable()  # type: ignore[assignment]
        await a.elector.step()
        await b.elector.step()
        if b.elector.leading() and b_started_at is None:
            b_started_at = clock.now
    assert a_stopped_at is not None and b_started_at is not None
    assert a_stopped_at <= renewed_at + TIMING.renew_deadline + 0.5
    assert a_stopped_at < b_started_at
    assert a.events == ["started", "stopped"] and a.gauge == [True, False]


async def test_a_leader_whose_renew_hangs_stops_leading_at_its_renew_deadline() -> None:
    clock, store = Clock(), LeaseStore()
    a = Replica("operator-a", store, clock)
    await a.elector.step()
    store.hang = True
    clock.now += TIMING.renew_deadline  # the deadline passes while the request hangs
    assert not a.elector.leading()  # fenced by time, whatever the loop is doing
    await a.elector.step()
    assert a.events == ["started", "stopped"]


async def test_a_released_lease_is_taken_at_the_next_read_not_after_the_lease_duration() -> None:
    clock, store = Clock(), LeaseStore()
    a, b = Replica("operator-a", store, clock), Replica("operator-b", store, clock)
    await a.elector.step()
    await b.elector.step()
    await a.elector.release()
    assert a.events == ["started", "stopped"] and store.holder() is None
    clock.now += TIMING.retry_period
    await b.elector.step()
    assert b.elector.leading() and store.holder() == "operator-b"


async def test_a_restarted_pod_with_the_same_name_resumes_its_lease_at_once() -> None:
    clock, store = Clock(), LeaseStore()
    await Replica("operator-a", store, clock).elector.step()
    clock.now += 1
    again = Replica("operator-a", store, clock)
    await again.elector.step()
    assert again.elector.leading()


async def test_two_standbys_racing_for_an_expired_lease_elect_one() -> None:
    clock, store = Clock(), LeaseStore()
    await Replica("operator-a", store, clock).elector.step()
    b, c = Replica("operator-b", store, clock), Replica("operator-c", store, clock)
    await b.elector.step()
    await c.elector.step()
    clock.now += TIMING.lease_duration
    # Both read the same expired record before either writes: the second write is a 409.
    reads = [await store.get_or_none("/x/kubeworkers-operator") for _ in range(2)]
    original = store.get_or_none

    async def stale_read(path: str) -> Body | None:
        return reads.pop() if reads else await original(path)

    store.get_or_none = stale_read  # type: ignore[method-assign]
    await asyncio.gather(b.elector.step(), c.elector.step())
    assert [b.elector.leading(), c.elector.leading()].count(True) == 1


class _Unreachable:
    async def get_or_none(self, path: str) -> Body | None:
        raise OSError("unreachable")

    async def create(self, path: str, body: Body) -> Body:
        raise OSError("unreachable")

    async def replace(self, path: str, body: Body) -> Body:
        raise OSError("unreachable")
