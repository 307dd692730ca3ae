"""What a Schedule should do now: the pure decision behind every pass of the schedules chore.

:func:`decide` takes the Schedule as it stands (spec, the status fields that record what
was already handled) and its runs as the apiserver lists them, and returns a
:class:`Plan`: the one slot to start (if any), the active runs to delete (``Replace``),
the finished runs to prune (history limits), the slot skipped (``Forbid``) or missed
(past ``startingDeadlineSeconds``), and the status to write. Like CronJob, at most one
run is started per decision, for the most recent slot that came due; older missed
slots are never caught up one by one.

Exactly one run per slot: a run is the Job ``<schedule>-<slot unix seconds>``
(:func:`run_name`), so starting a slot twice is a create of an existing name, which the
apiserver refuses. The last slot handled is the newest of ``lastScheduleTime``,
``lastSkippedTime``, ``lastMissedTime`` and every listed run's slot, so a run created
just before an operator crash, whose status write never happened, still counts.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubeworkers.protocol import JobState
from kubeworkers.resources import API_VERSION, JOB_KIND, SCHEDULE_KIND, ConcurrencyPolicy, JobTemplate, ScheduleSpec

from kubeworkers_operator.model import conditions, cron

#: Label on every run of a Schedule: ``workers.io/schedule=<schedule name>``.
SCHEDULE_LABEL = "workers.io/schedule"
#: Annotation on every run: the slot it was started for (RFC 3339).
SCHEDULED_AT_ANNOTATION = "workers.io/scheduled-at"
#: Condition type of a Schedule: True while it can fire, False (with a reason) when it cannot.
READY = "Ready"

_RUN_SUFFIX = re.compile(r"-(\d+)$")


def run_name(schedule: str, slot: float) -> str:
    """The Job that runs ``schedule``'s ``slot``: ``<schedule>-<slot unix seconds>``."""
    return f"{schedule}-{int(slot)}"


def run_body(namespace: str, schedule: str, uid: str, template: JobTemplate, slot: int) -> dict[str, Any]:
    """The Job that runs ``slot`` of a Schedule: its template, named for the slot, owned and labelled.

    The owner reference (``controller: true``) makes the garbage collector delete the run
    with its Schedule; the label is how the Schedule lists its runs.
    """
    meta = template.metadata
    return {
        "apiVersion": API_VERSION,
        "kind": JOB_KIND,
        "metadata": {
            "name": run_name(schedule, slot),
            "namespace": namespace,
            "labels": {**((meta and meta.labels) or {}), SCHEDULE_LABEL: schedule},
            "annotations": {
                **((meta and meta.annotations) or {}), SCHEDULED_AT_ANNOTATION: conditions.rfc3339(slot),
            },
            "ownerReferences": [{
                "apiVersion": API_VERSION, "kind": SCHEDULE_KIND, "name": schedule, "uid": uid,
                "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "spec": template.spec.to_k8s(),
    }


def slot_of(schedule: str, job_name: str) -> int | None:
    """The slot a run's name stands for; None if the name is not one of ``schedule``'s runs."""
    match = _RUN_SUFFIX.search(job_name)
    if match is None or job_name[: match.start()] != schedule:
        return None
    return int(match.group(1))


def parse_time(value: object) -> float | None:
    """An RFC 3339 timestamp from the apiserver as unix seconds (None for unset or unreadable)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class Run:
    """One Job of a Schedule, as listed."""

    name: str
    uid: str
    slot: int
    phase: JobState | None
    completion_time: float | None = None

    @property
    def active(self) -> bool:
        return self.phase is None or not self.phase.finished

    @property
    def succeeded(self) -> bool:
        return self.phase is JobState.SUCCEEDED

    @classmethod
    def from_body(cls, schedule: str, body: Mapping[str, Any]) -> Run | None:
        """The run a listed Job stands for; None when its name is not one of ``schedule``'s slots."""
        meta = body.get("metadata", {})
        slot = slot_of(schedule, str(meta.get("name", "")))
        if slot is None:
            return None
        status = body.get("status") or {}
        try:
            phase: JobState | None = JobState(str(status["phase"])) if status.get("phase") else None
        except ValueError:
            phase = None
        return cls(meta["name"], str(meta.get("uid", "")), slot, phase, parse_time(status.get("completionTime")))


@dataclass(frozen=True)
class ScheduleState:
    """The fields of one Schedule the decision reads."""

    name: str
    schedule: str
    created: float
    """``metadata.creationTimestamp``: the anchor of ``@every`` slots, and the earliest slot is after it."""
    time_zone: str | None = None
    policy: ConcurrencyPolicy = ConcurrencyPolicy.ALLOW
    starting_deadline_seconds: int | None = None
    suspend: bool = False
    successful_history: int = ScheduleSpec.model_fields["successful_jobs_history_limit"].default
    failed_history: int = ScheduleSpec.model_fields["failed_jobs_history_limit"].default
    generation: int = 0
    status: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_body(cls, body: Mapping[str, Any], spec: ScheduleSpec) -> ScheduleState:
        """The state of a listed Schedule whose ``spec`` parsed (``ScheduleSpec.model_validate``)."""
        meta = body.get("metadata", {})
        return cls(
            name=str(meta.get("name", "")),
            schedule=spec.schedule,
            created=parse_time(meta.get("creationTimestamp")) or 0.0,
            time_zone=spec.time_zone,
            policy=spec.concurrency_policy,
            starting_deadline_seconds=spec.starting_deadline_seconds,
            suspend=spec.suspend,
            successful_history=spec.successful_jobs_history_limit,
            failed_history=spec.failed_jobs_history_limit,
            generation=int(meta.get("generation") or 0),
            status=dict(body.get("status") or {}),
        )


@dataclass(frozen=True)
class Plan:
    """What one pass does for one Schedule, and the status it then writes."""

    status: dict[str, Any]
    """The operator-owned status fields, complete (a merge patch of exactly these)."""
    start: int | None = None
    """The slot to start a run for (unix seconds)."""
    delete: tuple[Run, ...] = ()
    """Active runs to delete before starting ``start`` (``Replace``)."""
    prune: tuple[Run, ...] = ()
    """Finished runs beyond the history limits, oldest first."""
    skipped: int | None = None
    """A slot not started because a run was active (``Forbid``)."""
    missed: int | None = None
    """A slot not started because it was found later than ``startingDeadlineSeconds`` after its time."""
    invalid: str | None = None
    """Why the Schedule cannot fire (an unreadable schedule or time zone); it then does nothing."""
    next_time: float | None = None
    """The next slot after now (None when suspended, invalid, or it never fires again)."""


def _latest(*times: float | None) -> float | None:
    known = [t for t in times if t is not None]
    return max(known) if known else None


def _stamp(unix: float | None) -> str | None:
    return None if unix is None else conditions.rfc3339(unix)


def prune(runs: Iterable[Run], successful: int, failed: int) -> list[Run]:
    """Finished runs beyond the history limits (newest kept), oldest first."""
    out: list[Run] = []
    finished = sorted((r for r in runs if not r.active), key=lambda r: r.slot, reverse=True)
    for keep, group in ((successful, [r for r in finished if r.succeeded]),
                        (failed, [r for r in finished if not r.succeeded])):
        out.extend(group[max(keep, 0):])
    return sorted(out, key=lambda r: r.slot)


def decide(state: ScheduleState, runs: Sequence[Run], *, now: float) -> Plan:
    """The plan for ``state`` at unix time ``now``, given its listed ``runs``."""
    status = state.status
    active = sorted((r for r in runs if r.active), key=lambda r: r.slot)
    succeeded = [r.completion_time or float(r.slot) for r in runs if r.succeeded]
    last_scheduled = _latest(parse_time(status.get("lastScheduleTime")), *(float(r.slot) for r in runs))
    skipped_at = parse_time(status.get("lastSkippedTime"))
    missed_at = parse_time(status.get("lastMissedTime"))
    out: dict[str, Any] = {
        "lastScheduleTime": _stamp(last_scheduled),
        "lastSuccessfulTime": _stamp(_latest(parse_time(status.get("lastSuccessfulTime")), *succeeded)),
        "lastSkippedTime": _stamp(skipped_at),
        "lastMissedTime": _stamp(missed_at),
        "active": [r.name for r in active],
        "nextScheduleTime": None,
        "observedGeneration": state.generation,
    }
    to_prune = tuple(prune(runs, state.successful_history, state.failed_history))

    def ready(status_: str, reason: str, message: str) -> list[conditions.Condition]:
        return conditions.set_condition(
            status.get("conditions") or [], READY, status_, reason, message, now=now,
            observed_generation=state.generation,
        )

    try:
        schedule = cron.parse(state.schedule, time_zone=state.time_zone, anchor=state.created)
    except cron.InvalidSchedule as exc:
        reason = "InvalidTimeZone" if str(exc).startswith("timeZone") else "InvalidSchedule"
        out["conditions"] = ready("False", reason, str(exc))
        return Plan(out, prune=to_prune, invalid=str(exc))

    handled = _latest(state.created, last_scheduled, skipped_at, missed_at) or 0.0
    due = None if state.suspend else cron.latest_slot(schedule, handled, now)
    plan: dict[str, Any] = {}
    if due is not None:
        slot = int(due)
        deadline = state.starting_deadline_seconds
        if deadline is not None and now - due > deadline:
            out["lastMissedTime"] = _stamp(due)
            plan["missed"] = slot
        elif active and state.policy is ConcurrencyPolicy.FORBID:
            out["lastSkippedTime"] = _stamp(due)
            plan["skipped"] = slot
        else:
            plan["start"] = slot
            out["lastScheduleTime"] = _stamp(due)
            if state.policy is ConcurrencyPolicy.REPLACE:
                plan["delete"] = tuple(active)
                active = []
            out["active"] = [r.name for r in active] + [run_name(state.name, slot)]

    next_time = None if state.suspend else schedule.next_after(max(now, handled))
    if next_time is None and not state.suspend:
        out["conditions"] = ready("False", "NeverFires", f"{state.schedule!r} has no fire time in the coming years")
    elif state.suspend:
        out["conditions"] = ready("True", "Suspended", "spec.suspend is true: no run starts until it is false")
    else:
        out["conditions"] = ready("True", "Scheduled", f"the next run starts at {_stamp(next_time)}")
    out["nextScheduleTime"] = _stamp(next_time)
    return Plan(out, prune=to_prune, next_time=next_time, **plan)
