"""``metav1.Condition`` lists and Kubernetes timestamps, for the Job's and the pool's status alike."""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterable, Mapping
from typing import Any

Condition = dict[str, Any]


def rfc3339(unix: float) -> str:
    """Kubernetes' timestamp format (seconds precision, UTC)."""
    return datetime.datetime.fromtimestamp(unix, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: Iterable[Mapping[str, Any]], type_: str, status: str, reason: str, message: str,
    *, now: float | None = None, observed_generation: int | None = None,
) -> list[Condition]:
    """``conditions`` with ``type_`` set; lastTransitionTime only moves when ``status`` changes."""
    stamp = rfc3339(time.time() if now is None else now)
    wanted: Condition = {"type": type_, "status": status, "reason": reason, "message": message}
    if observed_generation is not None:
        wanted["observedGeneration"] = observed_generation
    out: list[Condition] = []
    found = False
    for cond in conditions:
        if cond.get("type") == type_:
            found = True
            changed = cond.get("status") != status
            out.append({**wanted, "lastTransitionTime": stamp if changed else cond.get("lastTransitionTime", stamp)})
        else:
            out.append(dict(cond))
    if not found:
        out.append({**wanted, "lastTransitionTime": stamp})
    return out


def find(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    """The condition of ``type_``, or None."""
    for cond in conditions or []:
        if cond.get("type") == type_:
            return cond
    return None
