"""Leader election on a ``coordination.k8s.io/v1`` Lease: the pure decision, and the Lease's body.

One operator replica leads (enqueues, syncs statuses, autoscales, runs the chores); the others
stand by. Each replica reads the Lease every ``retry`` seconds and decides with :func:`decide`:

- the Lease is missing: **create** it, holding it;
- we hold it: **renew** it (every ``renew`` seconds);
- nobody holds it (released by a leader that shut down): **take** it at once;
- another replica holds it and its record changed since we last looked: **wait**, and restart
  the expiry clock from now;
- another replica holds it and its record has not changed for ``leaseDurationSeconds`` by *our
  own* clock: **take** it (the holder stopped renewing).

Expiry is measured on the observer's clock from when it saw the record change, never from the
``renewTime`` written in it, so clock skew between nodes cannot make a standby take a live
leader's Lease (the client-go rule). The leader, in turn, counts on its lease only until
``attempt start + renew deadline`` (:meth:`ElectionTiming.leading_until`), which is shorter
than the lease: a leader that cannot renew stops its work before any standby may take over
(fencing by time). Every write carries the ``resourceVersion`` read, so two standbys that try
to take the same expired Lease conflict (409) and exactly one wins.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Body = dict[str, Any]


@dataclass(frozen=True)
class ElectionTiming:
    """How long a lease lasts and how often it is renewed (seconds). See docs/operations.md."""

    lease_duration: float = 10.0
    """``leaseDurationSeconds``: a standby takes over once the Lease has been unchanged this long."""
    renew_deadline: float = 7.0
    """The leader stops leading this long after its last successful renew began; < lease_duration."""
    renew_period: float = 2.0
    """The leader renews this often: several renews fit in one renew deadline."""
    retry_period: float = 2.0
    """A standby reads the Lease this often: it takes over at most this long after expiry."""

    def __post_init__(self) -> None:
        if not 0 < self.renew_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "leader election needs 0 < renew period < renew deadline < lease duration, got "
                f"{self.renew_period}, {self.renew_deadline}, {self.lease_duration}"
            )
        if self.retry_period <= 0:
            raise ValueError(f"leader election retry period must be positive, got {self.retry_period}")

    def leading_until(self, attempt_started: float) -> float:
        """Until when a renew that began at ``attempt_started`` (and succeeded) lets us lead."""
        return attempt_started + self.renew_deadline


@dataclass(frozen=True)
class LeaseRecord:
    """What a Lease says, as read from the apiserver."""

    holder: str
    """``spec.holderIdentity``; empty when released or never held."""
    duration_seconds: float
    transitions: int
    acquire_time: str | None
    resource_version: str

    @classmethod
    def from_body(cls, body: Body) -> LeaseRecord:
        spec = body.get("spec") or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            duration_seconds=float(spec.get("leaseDurationSeconds") or 0),
            transitions=int(spec.get("leaseTransitions") or 0),
            acquire_time=spec.get("acquireTime"),
            resource_version=str((body.get("metadata") or {}).get("resourceVersion", "")),
        )


class Action(enum.Enum):
    CREATE = "create"
    RENEW = "renew"
    TAKE = "take"
    WAIT = "wait"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str


@dataclass
class Observation:
    """What a replica remembers between reads: the last record seen and when (its own clock) it changed."""

    resource_version: str | None = None
    changed_at: float = 0.0


def decide(record: LeaseRecord | None, identity: str, seen: Observation, now: float) -> Decision:
    """What to do with the Lease just read (``None``: it does not exist). Updates ``seen``."""
    if record is None:
        return Decision(Action.CREATE, "no Lease yet")
    if record.resource_version != seen.resource_version:
        seen.resource_version = record.resource_version
        seen.changed_at = now
        changed = True
    else:
        changed = False
    if record.holder == identity:
        return Decision(Action.RENEW, "we hold the Lease")
    if not record.holder:
        return Decision(Action.TAKE, "the Lease was released")
    if changed:
        return Decision(Action.WAIT, f"{record.holder} renewed the Lease")
    if now - seen.changed_at >= record.duration_seconds:
        return Decision(
            Action.TAKE, f"{record.holder} has not renewed the Lease for {now - seen.changed_at:.1f} s"
        )
    return Decision(Action.WAIT, f"{record.holder} holds the Lease")


def micro_time(unix_seconds: float) -> str:
    """A Kubernetes ``MicroTime`` (RFC 3339 with microseconds, UTC)."""
    return datetime.fromtimestamp(unix_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_body(
    namespace: str, name: str, *, holder: str, duration_seconds: float, now: float,
    previous: LeaseRecord | None,
) -> Body:
    """The Lease to write: held by ``holder`` (``""`` releases it), renewed at ``now`` (unix seconds).

    A change of holder counts a transition and restarts ``acquireTime``; with ``previous`` the
    body carries its ``resourceVersion``, so the write is a compare-and-swap.
    """
    same_holder = previous is not None and previous.holder == holder
    transitions = 0 if previous is None else previous.transitions + (0 if same_holder or not holder else 1)
    metadata: Body = {"name": name, "namespace": namespace}
    if previous is not None:
        metadata["resourceVersion"] = previous.resource_version
    spec: Body = {
        "holderIdentity": holder or None,
        "leaseDurationSeconds": max(1, round(duration_seconds)),
        "leaseTransitions": transitions,
        "renewTime": micro_time(now),
        "acquireTime": previous.acquire_time if same_holder and previous is not None else micro_time(now),
    }
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}
