"""Schedules: start each Schedule's runs at their slots (one periodic chore, woken at the next slot).

Every pass lists the Schedules and their runs (the Jobs labelled ``workers.io/schedule``)
from the apiserver, hands each Schedule to the pure :func:`model.schedule.decide`, and
carries out its plan: delete the runs ``Replace`` replaces, create the slot's run, write
the status, post the Events, then prune the runs beyond the history limits. The pass then
sets the chore's wakeup (``flows.scheduler.Wakeup``) to the soonest next slot, so the chore wakes at that time;
it is also poked when a Schedule is created or edited and when one of its runs finishes.
Being a chore, it runs only where the operator's other chores run.

Exactly one run per slot, also across operator restarts: the run of a slot is the Job
``<schedule>-<slot unix seconds>``, so creating it a second time is an AlreadyExists
conflict, taken as "already started". The status is written before anything is pruned,
so a pruned run's slot is always in ``lastScheduleTime`` and is never started again. A
run created just before a crash whose status write was lost is still listed, and its
slot counts as handled (:mod:`..model.schedule`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubeworkers.protocol import JobState
from kubeworkers.resources import API_VERSION, JOB_PLURAL, SCHEDULE_KIND, SCHEDULE_PLURAL, ScheduleSpec
from pydantic import ValidationError

from kubeworkers_operator.adapters.events import ObjectRef
from kubeworkers_operator.adapters.kube import ApiError, Conflict, NotFound, cluster_custom_path, custom_path
from kubeworkers_operator.model import conditions
from kubeworkers_operator.model.schedule import (
    READY,
    SCHEDULE_LABEL,
    Plan,
    Run,
    ScheduleState,
    decide,
    run_body,
)
from kubeworkers_operator.runtime import Runtime

logger = logging.getLogger(__name__)

#: The longest the chore sleeps between passes (it normally wakes at the next slot, or when poked).
PASS_SECONDS = 60.0
#: How soon a pass is retried after a run could not be created (the apiserver refused or failed).
RETRY_SECONDS = 5.0

Body = dict[str, Any]


def concerns(event_type: str | None, body: Mapping[str, Any]) -> bool:
    """Whether a Schedule watch event needs a pass now: new, or its spec changed since the last pass."""
    if event_type == "DELETED":
        return False
    generation = body.get("metadata", {}).get("generation")
    return event_type in (None, "ADDED") or generation != (body.get("status") or {}).get("observedGeneration")


def run_finished(event_type: str | None, body: Mapping[str, Any]) -> bool:
    """Whether a Job watch event is a run of a Schedule that finished or was deleted (a pass is due)."""
    if SCHEDULE_LABEL not in (body.get("metadata", {}).get("labels") or {}):
        return False
    phase = (body.get("status") or {}).get("phase")
    return event_type == "DELETED" or phase in {state.value for state in JobState if state.finished}


async def _list(rt: Runtime, plural: str, label_selector: str | None = None) -> list[Body]:
    """Every object of ``plural`` the operator serves: its namespaces', or the cluster's."""
    if not rt.settings.namespaces:
        return await rt.api.list_all(cluster_custom_path(plural), label_selector=label_selector)
    out: list[Body] = []
    for namespace in rt.settings.namespaces:
        out.extend(await rt.api.list_all(custom_path(plural, namespace), label_selector=label_selector))
    return out


async def run_pass(rt: Runtime, wake_at: Callable[[float], None]) -> None:
    """One pass over every Schedule (the chore); calls ``wake_at`` with each one's next slot.

    ``wake_at`` is the chore's ``Wakeup.at``: the chore then runs at the soonest of them.
    """
    now = time.time()
    schedules = await _list(rt, SCHEDULE_PLURAL)
    jobs = await _list(rt, JOB_PLURAL, label_selector=SCHEDULE_LABEL)
    runs_of: dict[str, list[Body]] = {}
    for job in jobs:
        for owner in job.get("metadata", {}).get("ownerReferences") or []:
            if owner.get("kind") == SCHEDULE_KIND and owner.get("controller"):
                runs_of.setdefault(owner.get("uid", ""), []).append(job)
    for body in schedules:
        meta = body.get("metadata", {})
        try:
            when = await reconcile(rt, body, runs_of.get(meta.get("uid", ""), []), now)
        except Exception:
            logger.exception("schedule %s/%s: pass failed (retried)", meta.get("namespace"), meta.get("name"))
            when = now + RETRY_SECONDS
        if when is not None:
            wake_at(when)


def _ref(body: Mapping[str, Any]) -> ObjectRef:
    meta = body.get("metadata", {})
    return ObjectRef(API_VERSION, SCHEDULE_KIND, meta.get("namespace", ""), meta.get("name", ""), meta.get("uid", ""))


async def reconcile(rt: Runtime, body: Mapping[str, Any], job_bodies: list[Body], now: float) -> float | None:
    """Carry out one Schedule's plan; returns when it should be looked at again (None: no slot ahead)."""
    meta = body.get("metadata", {})
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    try:
        spec = ScheduleSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:  # the CRD schema should make this impossible
        logger.warning("schedule %s/%s: spec does not parse: %s", namespace, name, exc)
        return None
    runs = [run for run in (Run.from_body(name, job) for job in job_bodies) if run is not None]
    plan = decide(ScheduleState.from_body(body, spec), runs, now=now)
    ref = _ref(body)
    _report_readiness(rt, ref, body.get("status") or {}, plan)
    for run in plan.delete:
        await _delete_run(rt, namespace, run)
        rt.recorder.normal(ref, "ReplacedRun", f"deleted active run {run.name}: concurrencyPolicy is Replace")
    if plan.start is not None and not await _start(rt, ref, body, spec, plan.start):
        return now + RETRY_SECONDS  # status untouched: the next pass tries the same slot again
    if plan.skipped is not None:
        rt.recorder.normal(
            ref, "SkippedRun",
            f"skipped the run of {conditions.rfc3339(plan.skipped)}: concurrencyPolicy is Forbid and "
            f"{', '.join(plan.status['active'])} has not finished",
        )
    if plan.missed is not None:
        rt.recorder.warning(
            ref, "MissedSchedule",
            f"missed the run of {conditions.rfc3339(plan.missed)}: found {now - plan.missed:.0f}s after its time, "
            f"past startingDeadlineSeconds ({spec.starting_deadline_seconds})",
        )
    if not await _write_status(rt, namespace, name, body.get("status") or {}, plan.status):
        return None  # the Schedule is gone
    for run in plan.prune:
        await _delete_run(rt, namespace, run)
    return plan.next_time


def _report_readiness(rt: Runtime, ref: ObjectRef, status: Mapping[str, Any], plan: Plan) -> None:
    """A Warning Event when the Schedule starts failing to parse (once per new reason or message)."""
    if plan.invalid is None:
        return
    before = conditions.find(status.get("conditions"), READY) or {}
    after = conditions.find(plan.status.get("conditions"), READY) or {}
    if (before.get("reason"), before.get("message")) != (after.get("reason"), after.get("message")):
        rt.recorder.warning(ref, str(after.get("reason")), plan.invalid)


async def _start(rt: Runtime, ref: ObjectRef, body: Mapping[str, Any], spec: ScheduleSpec, slot: int) -> bool:
    """Create the run of ``slot``; True when it exists now (created here, or earlier)."""
    meta = body.get("metadata", {})
    job = run_body(meta.get("namespace", ""), meta.get("name", ""), meta.get("uid", ""), spec.job_template, slot)
    name = job["metadata"]["name"]
    try:
        await rt.api.create(custom_path(JOB_PLURAL, ref.namespace), job)
    except Conflict:
        logger.info("schedule %s/%s: run %s exists already (started before)", ref.namespace, ref.name, name)
        return True
    except ApiError as exc:
        rt.recorder.warning(ref, "FailedCreate", f"could not create run {name}: {exc}")
        return False
    rt.recorder.normal(ref, "SuccessfulCreate", f"created run {name} for {conditions.rfc3339(slot)}")
    return True


async def _delete_run(rt: Runtime, namespace: str, run: Run) -> None:
    try:
        await rt.api.delete(custom_path(JOB_PLURAL, namespace, run.name), uid=run.uid or None)
    except (NotFound, Conflict):
        pass  # gone already, or a namesake


def _differs(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    return any(current.get(key) != value for key, value in wanted.items())


async def _write_status(
    rt: Runtime, namespace: str, name: str, current: Mapping[str, Any], wanted: dict[str, Any]
) -> bool:
    """Merge-patch the operator's status fields when they changed; False if the Schedule is gone."""
    if not _differs(current, wanted):
        return True
    try:
        await rt.api.merge_patch(custom_path(SCHEDULE_PLURAL, namespace, name, "status"), {"status": wanted})
    except NotFound:
        return False
    return True

