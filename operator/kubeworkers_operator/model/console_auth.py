"""Who may act from the operator-served console: the pure half of its authorisation (docs/console.md).

An action (retry, cancel, replay) is allowed only to a caller whose bearer token the apiserver
authenticates (a ``TokenReview``) and whose user the apiserver authorises (a
``SubjectAccessReview``) for :data:`VERB` on the action's :class:`Target`:

- a retry or cancel of a job behind a Job CR (its id ``<namespace>/<name>``, in the console's
  namespace): ``update`` on ``jobs.workers.io`` ``<name>`` in that namespace, what ``kubectl edit``
  of the Job would need;
- a retry or cancel of an SDK job (no Job CR), and a dead-letter replay: ``update`` on the
  pool's ``workerpools.workers.io`` (the pool is what the job is on; a job id naming another
  namespace is treated as an SDK id, never as that namespace's Job).

With ``--console-require-sign-in`` every page needs a caller allowed to ``list``
``jobs.workers.io`` in the console's namespace (:func:`read_target`): who may list the Job CRs
may read the jobs.

No token, a token the apiserver does not authenticate, a review the operator may not make, and a
review the apiserver does not answer all refuse: the console never writes for an anonymous caller.
This module builds the review bodies and reads their answers; :mod:`..adapters.console` sends them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

GROUP = "workers.io"
#: The verb every action needs on its target.
VERB = "update"
ACTIONS = ("retry", "cancel", "replay")


@dataclass(frozen=True)
class Target:
    """The object an action is authorised against."""

    namespace: str
    resource: str
    """``jobs`` or ``workerpools`` (group :data:`GROUP`)."""
    name: str
    """"": every object of the resource in the namespace."""
    verb: str = VERB

    def describe(self) -> str:
        return f"{self.verb} on {self.resource}.{GROUP} {self.namespace}/{self.name or '*'}"


@dataclass(frozen=True)
class Identity:
    """An authenticated caller, as the TokenReview says (never the token)."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    who: str = ""
    reason: str = ""


def target(action: str, namespace: str, pool: str, job_id: str | None) -> Target:
    """What ``action`` on ``pool`` (and ``job_id``) is authorised against (``ValueError``: not an action)."""
    if action not in ACTIONS:
        raise ValueError(f"not a console action: {action!r}")
    if action != "replay" and job_id is not None:
        cr_namespace, slash, name = job_id.partition("/")
        if slash and cr_namespace == namespace and name:
            return Target(namespace, "jobs", name)
    return Target(namespace, "workerpools", pool)


def read_target(namespace: str) -> Target:
    """What reading the console is authorised against: ``list`` on the namespace's Jobs."""
    return Target(namespace, "jobs", "", verb="list")


def token_review(token: str) -> dict[str, Any]:
    """The body of a ``TokenReview`` of ``token`` (audiences left to the apiserver's own)."""
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}


def identity_of(review: Mapping[str, Any]) -> Identity | Decision:
    """The caller a TokenReview's answer names, or the refusal when it authenticated nobody."""
    status = review.get("status") or {}
    if not status.get("authenticated"):
        error = str(status.get("error") or "")
        # The apiserver's error can be long and name the token's issuer; say only that it failed.
        return Decision(False, reason="the apiserver did not authenticate the token"
                        + (" (expired or invalid)" if error else ""))
    user = status.get("user") or {}
    username = str(user.get("username") or "")
    if not username:
        return Decision(False, reason="the token authenticated no user name")
    extra = {str(k): tuple(str(x) for x in v) for k, v in (user.get("extra") or {}).items() if isinstance(v, list)}
    return Identity(username, str(user.get("uid") or ""), tuple(str(g) for g in user.get("groups") or ()), extra)


def access_review(who: Identity, on: Target) -> dict[str, Any]:
    """The body of a ``SubjectAccessReview``: may ``who`` do ``on.verb`` on ``on``?"""
    attributes = {"group": GROUP, "resource": on.resource, "verb": on.verb, "namespace": on.namespace}
    if on.name:
        attributes["name"] = on.name
    spec: dict[str, Any] = {"user": who.username, "groups": list(who.groups), "resourceAttributes": attributes}
    if who.uid:
        spec["uid"] = who.uid
    if who.extra:
        spec["extra"] = {k: list(v) for k, v in who.extra.items()}
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}


def decide(who: Identity, on: Target, review: Mapping[str, Any]) -> Decision:
    """Allowed only when the SubjectAccessReview's answer says ``allowed: true`` and not ``denied``."""
    status = review.get("status") or {}
    if status.get("allowed") is True and not status.get("denied"):
        return Decision(True, who.username)
    return Decision(False, who.username, f"{who.username} may not {on.describe()}")
