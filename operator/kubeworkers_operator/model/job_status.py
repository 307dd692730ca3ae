"""Every transition of ``Job.status``, and the Event each deserves: pure functions, no I/O.

Two kinds of transition live here. The admission path's (:func:`queued`,
:func:`pending`, :func:`rejected`, :func:`cancelled_before_enqueue`) move a Job
that has not reached Redis yet; folding (:func:`apply_event`,
:func:`apply_record`) moves it along what workers report. :func:`narration`
says which Kubernetes Event a change deserves.

The status is handled as the plain camelCase dict the apiserver stores, so the
result can be diffed into a JSON merge patch without a round trip through
models. The one rule everything here obeys: a finished phase never moves
(backwards or sideways), and an older attempt never overwrites a newer one —
within a run. A rerun (``kubeworkers jobs retry``) is a new run of the job:
its events carry a higher ``run`` than ``status.reruns``, and the first of them
moves even a finished Job back to Queued (:func:`rerun`); from then on the older
run's events are ignored. So "never moves back" holds per run, and runs only grow.
That makes folding idempotent, so replaying events after an operator restart
(events are acked only after their patch landed) can never corrupt a status.
An admission transition returns None when it does not apply (the status sync
got there first): the writer then leaves the status alone.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubeworkers.protocol import JobError, JobEvent, JobRecord, JobState, StepRef

from kubeworkers_operator.model import queue_position
from kubeworkers_operator.model.conditions import rfc3339, set_condition
from kubeworkers_operator.model.defaults import DEFAULT_OUTPUT_LIMIT

Status = dict[str, Any]
#: Cap on error messages and progress messages copied into the status.
MESSAGE_LIMIT = 2048

#: Condition type telling whether (and why not) the Job is on its pool's stream.
ENQUEUED = "Enqueued"
#: The batch Job's outcome conditions: ``kubectl wait --for=condition=Complete`` (or ``Failed``).
#: A cancelled Job is ``Failed`` with reason ``Cancelled``, so waiting for either ends for every outcome.
COMPLETE = "Complete"
FAILED = "Failed"
#: ``Enqueued`` reasons of a Job put back on its stream after a failed attempt / a lost or handed-back one.
RETRYING = "Retrying"
REQUEUED = "Requeued"
#: ``Enqueued`` reason of a delayed Job waiting for its ``spec.notBefore`` in the pool's delayed set.
DELAYED = "Delayed"
#: ``Enqueued`` reason of a Job whose pool was deleted while it was Queued or Running.
POOL_DELETED = "PoolDeleted"
#: ``Enqueued`` reason of a sequence whose step succeeded and whose next step is queued.
NEXT_STEP = "NextStep"
#: ``Enqueued`` reason (and Event reason) of a Job queued again as a new run (``kubeworkers jobs retry``).
RERUN = "Rerun"
#: Most characters of the output's JSON shown in the marker of an over-limit output.
OUTPUT_PREVIEW_CHARS = 512
_REASON_CHARS = re.compile(r"[^A-Za-z0-9_,:]")

_RANK = {
    JobState.PENDING: 0,
    JobState.QUEUED: 1,
    JobState.RUNNING: 2,
    JobState.WAITING: 2,
    JobState.SUCCEEDED: 3,
    JobState.FAILED: 3,
    JobState.CANCELLED: 3,
}


def parse_phase(status: Mapping[str, Any] | None) -> JobState | None:
    """The phase of a status dict, or None when unset or unknown."""
    raw = (status or {}).get("phase")
    try:
        return JobState(raw) if raw else None
    except ValueError:
        return None


def is_finished(status: Mapping[str, Any] | None) -> bool:
    phase = parse_phase(status)
    return phase is not None and phase.finished


def reruns_of(status: Mapping[str, Any] | None) -> int:
    """``status.reruns``: the run of the job the status shows (0 until it is rerun)."""
    try:
        return int((status or {}).get("reruns") or 0)
    except (TypeError, ValueError):
        return 0


#: What a new run starts without: the previous run's times, outcome, progress and worker.
_RUN_FIELDS = ("startTime", "completionTime", "output", "outputTruncated", "error", "progress", "worker", "notBefore")


def rerun(status: Mapping[str, Any], run: int, *, at: float, message: str | None = None) -> Status:
    """The status of a Job queued again as run ``run`` (greater than its ``reruns``): Queued,
    attempts 0, the previous run's outcome gone (its worker kept as ``lastWorker``), the
    ``Complete``/``Failed`` conditions removed and ``Enqueued`` saying ``Rerun``."""
    new: Status = dict(status)
    if new.get("worker"):
        new["lastWorker"] = new["worker"]
    for name in _RUN_FIELDS:
        new.pop(name, None)
    new["phase"] = JobState.QUEUED.value
    new["attempts"] = 0
    new["reruns"] = run
    conditions = [c for c in new.get("conditions") or [] if c.get("type") not in (COMPLETE, FAILED)]
    new["conditions"] = set_condition(conditions, ENQUEUED, "True", RERUN, _cap(message) or f"run {run}", now=at)
    return new


def cap_output(output: Any, limit: int) -> tuple[Any, bool]:
    """The output to store in the status and whether it was truncated.

    An output whose JSON exceeds ``limit`` bytes is replaced by a marker object,
    ``{"truncated": true, "bytes": N, "preview": "<start of the JSON>", "message": ...}``,
    so ``status.output`` never changes type from what the handler returned to a string
    that looks like it; the full value stays in Redis (``kubeworkers get <job id>``).
    """
    if output is None:
        return None, False
    text = json.dumps(output, separators=(",", ":"), default=str)
    size = len(text.encode())
    if size <= limit:
        return output, False
    marker: dict[str, Any] = {
        "truncated": True,
        "bytes": size,
        "preview": "",
        "message": f"output of {size} bytes is over the status limit of {limit}; "
                   "read it whole with `kubeworkers get <namespace>/<name>` or the SDK",
    }
    room = limit - len(json.dumps(marker).encode())
    preview = text[:max(0, min(OUTPUT_PREVIEW_CHARS, room))]
    while preview and len(json.dumps(preview).encode()) - 2 > room:  # escapes take more room than they show
        preview = preview[: len(preview) // 2]
    marker["preview"] = preview
    return marker, True


def condition_reason(text: str | None, default: str) -> str:
    """``text`` as a valid ``metav1.Condition`` reason (``^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$``)."""
    reason = _REASON_CHARS.sub("_", text or "").lstrip("_,:0123456789").rstrip("_,:")[:1024]
    return reason or default


def _cap(text: str | None) -> str | None:
    return None if text is None else text[:MESSAGE_LIMIT]


def _progress(fraction: float, message: str | None) -> dict[str, Any]:
    progress: dict[str, Any] = {"fraction": min(1.0, max(0.0, fraction))}
    if message:
        progress["message"] = _cap(message)
    return progress


def _finish(
    new: Status, state: JobState, *, at: float, output: Any, error: JobError | None, message: str | None,
    output_limit: int,
) -> None:
    """Write the fields of a finished phase (``state``) into ``new``: one home for events and records."""
    new["completionTime"] = rfc3339(at)
    new.pop("lastWorker", None)
    if state is JobState.SUCCEEDED:
        capped, truncated = cap_output(output, output_limit)
        new["output"] = capped
        new["outputTruncated"] = truncated
        new.pop("error", None)
    elif error is not None:
        new["error"] = {"type": error.type, "message": _cap(error.message)}
    elif state is JobState.CANCELLED:
        new["error"] = {"type": "Cancelled", "message": _cap(message) or "cancelled"}
    _set_outcome(new, state, at)


def _set_outcome(new: Status, state: JobState, at: float) -> None:
    """The finished phase's condition, as a batch Job has it: ``Complete`` or ``Failed`` (reason = error type)."""
    conditions = new.get("conditions") or []
    if state is JobState.SUCCEEDED:
        attempt = new.get("attempts") or 0
        new["conditions"] = set_condition(conditions, COMPLETE, "True", "Succeeded", f"succeeded on attempt {attempt}",
                                          now=at)
        return
    error = new.get("error") or {}
    reason = "Cancelled" if state is JobState.CANCELLED else condition_reason(error.get("type"), "Failed")
    new["conditions"] = set_condition(conditions, FAILED, "True", reason, str(error.get("message") or reason), now=at)


def _started_at(status: Mapping[str, Any]) -> float:
    raw = status.get("startTime")
    try:
        return datetime.datetime.fromisoformat(str(raw).replace("Z", "+00:00")).timestamp() if raw else 0.0
    except ValueError:
        return 0.0


def _back_on_the_stream(new: Status, reason: str, message: str, at: float) -> None:
    """A Job no worker runs any more: no worker, the last one kept as ``lastWorker``, no progress."""
    if new.get("worker"):
        new["lastWorker"] = new.pop("worker")
    new.pop("progress", None)
    new["conditions"] = set_condition(new.get("conditions") or [], ENQUEUED, "True", reason, message, now=at)


def current_step(status: Mapping[str, Any]) -> int:
    """The index of a sequence's current step in the status (0: no sequence, or not started):
    the last of ``status.steps`` that has left Pending."""
    steps = status.get("steps") or []
    return max((i for i, step in enumerate(steps) if step.get("phase") != JobState.PENDING.value), default=0)


def _supersedes(
    status: Mapping[str, Any], state: JobState, attempt: int, *, retry: bool = False, requeued_at: float | None = None,
    step: int | None = None,
) -> bool:
    """Whether an event/record at (attempt, state) may replace the current status.

    ``retry``: a Queued event carrying the error of the attempt that just failed
    (the job waits out its backoff), which legitimately follows that Running.
    ``requeued_at``: a Queued event without error (the reaper reclaimed a dead worker's
    job, or a draining worker handed it back, the latter uncounting the attempt):
    it follows the Running of this attempt when it happened after that attempt started.
    """
    current = parse_phase(status)
    if current is None:
        return True
    if current.finished:
        return False
    # A sequence is ordered by (step, attempt): attempts start again at each step. An event or
    # record that names no step is about the step the status is at.
    if step is not None and step != current_step(status):
        return step > current_step(status)
    if state.finished:
        # A finish always wins over an unfinished phase, unless it belongs to an older attempt
        # (a worker that lost its lease reporting late). Attempt 0: cancelled before any start.
        return attempt == 0 or attempt >= int(status.get("attempts") or 0)
    known_attempt = int(status.get("attempts") or 0)
    if current is JobState.PENDING and state is JobState.QUEUED:
        # Parked (its pool was deleted): only a worker taking it, or a finish, moves it on.
        return False
    if requeued_at is not None and state is JobState.QUEUED and current is JobState.RUNNING:
        started = known_attempt >= 1  # a Running status without an attempt is no attempt to requeue
        return started and attempt in (known_attempt, known_attempt - 1) and requeued_at >= int(_started_at(status))
    if attempt != known_attempt:
        return attempt > known_attempt
    if retry and state is JobState.QUEUED and current is JobState.RUNNING:
        return True
    return _RANK[state] >= _RANK[current]


def apply_event(status: Mapping[str, Any], event: JobEvent, *, output_limit: int = DEFAULT_OUTPUT_LIMIT) -> Status:
    """The status after ``event``; the same content when the event is stale or a replay."""
    new: Status = dict(status)
    if event.children is not None:
        return _with_children(new, event)
    if event.run is not None and event.run != reruns_of(status):
        if event.run < reruns_of(status):
            return new  # left over from an older run
        # The first event of a new run seen (normally its Queued; the next ones when that was lost).
        new = rerun(new, event.run, at=event.at, message=event.message)
        if event.state is JobState.QUEUED and not event.attempt:
            return new
        status = new
    retry = event.state is JobState.QUEUED and event.error is not None
    # settle.lua's requeue (the reaper's, a draining worker's hand-back) names its worker and says why.
    requeue = event.state is JobState.QUEUED and event.error is None and bool(event.worker and event.message)
    step = event.step.index if event.step is not None else None
    if not _supersedes(status, event.state, event.attempt, retry=retry, requeued_at=event.at if requeue else None,
                       step=step):
        return new
    was = parse_phase(status)
    new["phase"] = event.state.value
    known_attempt = int(status.get("attempts") or 0)
    advanced = step is not None and step > current_step(status)
    if advanced:
        known_attempt = 0  # a new step of a sequence: its attempts count from zero
        new["attempts"] = event.attempt
    if event.attempt:
        new["attempts"] = max(event.attempt, known_attempt)
    _fold_step(new, event.step, event.state, attempt=event.attempt, at=event.at, error=event.error)
    if advanced and event.state is JobState.QUEUED:
        # The previous step succeeded and this one waits for a worker.
        _back_on_the_stream(new, NEXT_STEP, _cap(event.message) or "queued the next step", event.at)
        new.pop("error", None)
        return new
    if event.worker and event.state is not JobState.QUEUED:
        new["worker"] = event.worker

    if event.state is JobState.RUNNING:
        if event.attempt > known_attempt or was is not JobState.RUNNING or "startTime" not in new:
            new["startTime"] = rfc3339(event.at)  # the last attempt's start, as the CRD says
        new.pop("lastWorker", None)
        if event.progress is not None:
            new["progress"] = _progress(event.progress, event.message)
    elif event.state is JobState.QUEUED and was is JobState.RUNNING:
        # Waiting for a retry, or put back: the previous attempt's worker and progress no longer run it.
        if event.error is not None:
            new["error"] = {"type": event.error.type, "message": _cap(event.error.message)}
            _back_on_the_stream(new, RETRYING, f"attempt {new.get('attempts') or 0} failed; retrying", event.at)
        else:
            _back_on_the_stream(new, REQUEUED, _cap(event.message) or "queued again", event.at)
    elif event.state.finished:
        _finish(
            new, event.state, at=event.at, output=event.output, error=event.error, message=event.message,
            output_limit=output_limit,
        )
        if event.state is JobState.SUCCEEDED and "progress" in new:
            new["progress"] = {**new["progress"], "fraction": 1.0}
    return queue_position.without_position(new)


def _fold_step(
    new: Status, ref: StepRef | None, state: JobState, *, attempt: int, at: float, error: JobError | None
) -> None:
    """``status.steps`` and ``currentStep`` after a change of (``state``, ``attempt``) of a sequence's step.

    ``ref`` None: the change is about the status's current step (a script that does not know
    the steps wrote it), and nothing is done for a Job that is no sequence. Called only for
    changes that superseded the status, so it moves each step forward only: the steps before
    ``ref`` are Succeeded (a sequence only moves on from a success), a finished step never changes.
    """
    steps = [dict(step) for step in new.get("steps") or []]
    if ref is None:
        if not steps:
            return
        ref = StepRef(index=current_step(new), names=[str(step.get("name", "")) for step in steps])
    while len(steps) < len(ref.names):
        steps.append({"name": ref.names[len(steps)], "phase": JobState.PENDING.value})
    stamp = rfc3339(at)
    for before in steps[: ref.index]:
        if not JobState(before["phase"]).finished:
            before["phase"] = JobState.SUCCEEDED.value
            before.setdefault("completionTime", stamp)
    entry = steps[ref.index]
    if not JobState(entry["phase"]).finished:
        entry["phase"] = state.value
        if attempt:
            entry["attempts"] = max(attempt, int(entry.get("attempts") or 0))
        if state is JobState.RUNNING:
            entry.setdefault("startTime", stamp)
        if state.finished:
            entry["completionTime"] = stamp
        if error is not None:  # kept when a retry then succeeds: a transient failure stays visible
            entry["error"] = {"type": error.type, "message": _cap(error.message)}
    new["steps"] = steps
    new["currentStep"] = ref.describe()


def _with_children(new: Status, event: JobEvent) -> Status:
    """A children-count event (``lua/children.lua``) sets ``children`` only, whatever the phase
    (children may end after their parent did); counts only grow, so a late, older event loses."""
    assert event.children is not None
    counts = event.children.model_dump()
    old = new.get("children") or {}
    done = ("succeeded", "failed", "cancelled")
    if (counts["total"], sum(counts[k] for k in done)) >= (old.get("total", 0), sum(old.get(k, 0) for k in done)):
        new["children"] = counts
    return new


def apply_events(
    status: Mapping[str, Any], events: Iterable[JobEvent], *, output_limit: int = DEFAULT_OUTPUT_LIMIT
) -> Status:
    """Fold a batch of one job's events, oldest first, into one status."""
    new: Status = dict(status)
    for event in events:
        new = apply_event(new, event, output_limit=output_limit)
    return new


def apply_record(status: Mapping[str, Any], record: JobRecord, *, output_limit: int = DEFAULT_OUTPUT_LIMIT) -> Status:
    """The status after reconciling with the job's record in Redis (the periodic resync).

    The record is the truth, but it too obeys the rule: a finished status stays.
    """
    new: Status = dict(status)
    if record.run < reruns_of(status):
        return new
    if record.run > reruns_of(status):
        new = rerun(new, record.run, at=record.updated_at or 0.0, message=record.message)
        status = new
    step = record.step.index if record.step is not None else None
    if not _supersedes(status, record.state, record.attempts, step=step):
        return new
    current = parse_phase(status)
    same_step = step is None or step == current_step(status)
    if current is record.state and int(status.get("attempts") or 0) == record.attempts and same_step:
        # Same phase and attempt: nothing the events path has not already told, except
        # finished details, which only matter for finished records (handled below).
        return new
    new["phase"] = record.state.value
    if record.attempts or not same_step:
        new["attempts"] = record.attempts
    _fold_step(new, record.step, record.state, attempt=record.attempts,
               at=record.finished_at or record.updated_at or 0.0, error=record.error)
    if record.worker:
        new["worker"] = record.worker
    if record.started_at and record.state is not JobState.QUEUED:
        new["startTime"] = rfc3339(record.started_at)
    if record.not_before is not None:
        new["notBefore"] = rfc3339(record.not_before)
    if record.progress is not None and record.state is JobState.RUNNING:
        new["progress"] = _progress(record.progress, record.message)
    if record.state.finished:
        _finish(
            new, record.state, at=record.finished_at or record.updated_at or 0.0, output=record.output,
            error=record.error, message=record.message, output_limit=output_limit,
        )
    return queue_position.without_position(new)


def with_enqueued_condition(status: Mapping[str, Any], pool: str) -> Status:
    """A status that has left Pending says so in its Enqueued condition too.

    The status sync can be first to write a Job (a fast job finishes before the
    enqueue path's own write lands, or the operator restarted in between).
    """
    new: Status = dict(status)
    if parse_phase(new) in (None, JobState.PENDING):
        return new
    conditions = new.get("conditions") or []
    if any(c.get("type") == ENQUEUED and c.get("status") == "True" for c in conditions):
        return new
    new["conditions"] = set_condition(conditions, ENQUEUED, "True", "Enqueued", f"on the stream of pool {pool}")
    return new


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> Status:
    """Top-level JSON merge patch turning ``old`` into ``new`` (removed keys become null)."""
    patch: Status = {k: v for k, v in new.items() if old.get(k) != v}
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


def only_progress_changed(patch: Mapping[str, Any]) -> bool:
    """A patch that only moves the progress bar (these are rate-limited)."""
    return bool(patch) and set(patch) <= {"progress"}


# ---------------------------------------------------------------------- the admission path


def _not_yet_enqueued(status: Mapping[str, Any]) -> bool:
    """The admission path moves only a Job with no phase yet or waiting in Pending."""
    return parse_phase(status) in (None, JobState.PENDING)


def enqueued_reason(status: Mapping[str, Any]) -> str | None:
    """The reason of the status's ``Enqueued`` condition (None when it has none)."""
    for cond in status.get("conditions") or []:
        if cond.get("type") == ENQUEUED:
            reason = cond.get("reason")
            return None if reason is None else str(reason)
    return None


def queued(
    status: Mapping[str, Any], *, pool: str, priority: str, now: float, not_before: float | None = None
) -> Status | None:
    """Queued with ``Enqueued=True``, once Redis has the job; None if the status sync got there first.

    A delayed job (``not_before`` later than ``now``) says until when: ``status.notBefore`` and
    the condition's reason :data:`DELAYED`.
    """
    if not _not_yet_enqueued(status):
        return None
    reason, message = "Enqueued", f"on the {priority}-priority stream of pool {pool}"
    extra: Status = {}
    if not_before is not None and not_before > now:
        extra["notBefore"] = rfc3339(not_before)
        reason = DELAYED
        message = f"delayed until {extra['notBefore']}, then on the {priority}-priority stream of pool {pool}"
    return {
        **status,
        **extra,
        "phase": JobState.QUEUED.value,
        "attempts": status.get("attempts") or 0,
        "queuedAt": status.get("queuedAt") or rfc3339(now),
        "conditions": set_condition(status.get("conditions") or [], ENQUEUED, "True", reason, message, now=now),
    }


def pending(status: Mapping[str, Any], reason: str, message: str, *, now: float) -> Status | None:
    """Pending with ``Enqueued=False`` and why: the Job waits (for its pool, for Redis, ...)."""
    if not _not_yet_enqueued(status):
        return None
    return {
        **status,
        "phase": JobState.PENDING.value,
        "conditions": set_condition(status.get("conditions") or [], ENQUEUED, "False", reason, message, now=now),
    }


def rejected(status: Mapping[str, Any], reason: str, message: str, *, now: float) -> Status | None:
    """Failed at admission (a Job that can never run as written): error and condition say ``reason``."""
    if is_finished(status):
        return None
    new: Status = {
        **status,
        "phase": JobState.FAILED.value,
        "attempts": status.get("attempts") or 0,
        "error": {"type": reason, "message": message},
        "completionTime": rfc3339(now),
        "conditions": set_condition(status.get("conditions") or [], ENQUEUED, "False", reason, message, now=now),
    }
    _set_outcome(new, JobState.FAILED, now)
    return new


def cancelled_before_enqueue(status: Mapping[str, Any], *, now: float) -> Status | None:
    """Cancelled right away: ``cancel: true`` on a Job that never reached Redis."""
    if not _not_yet_enqueued(status):
        return None
    new: Status = {
        **status,
        "phase": JobState.CANCELLED.value,
        "completionTime": rfc3339(now),
        "error": {"type": "Cancelled", "message": "cancelled before it was enqueued"},
    }
    _set_outcome(new, JobState.CANCELLED, now)
    return new


def pool_deleted(status: Mapping[str, Any], message: str, *, now: float) -> Status | None:
    """Pending with ``Enqueued=False reason=PoolDeleted``: a Queued or Running Job whose pool was deleted.

    Its entry stays on the pool's stream in Redis (deleting a pool deletes pods, not
    Redis data; a draining worker hands its job back), so a pool re-created under the
    same name runs it; until then it waits, as a Job for a pool that never existed does.
    Attempts are kept; the worker becomes ``lastWorker``. None for other phases.
    """
    if parse_phase(status) not in (JobState.QUEUED, JobState.RUNNING):
        return None
    new: Status = {**status, "phase": JobState.PENDING.value}
    if new.get("worker"):
        new["lastWorker"] = new.pop("worker")
    new.pop("progress", None)
    new["conditions"] = set_condition(new.get("conditions") or [], ENQUEUED, "False", POOL_DELETED, message, now=now)
    return new


# ---------------------------------------------------------------------- which Event a change deserves


@dataclass(frozen=True)
class Narration:
    """The Kubernetes Event one status change deserves."""

    reason: str
    message: str
    warning: bool = False


def narration(before: Mapping[str, Any], after: Mapping[str, Any], pool: str) -> Narration | None:
    """One Event per phase change, worded for ``kubectl describe``; None when the phase stayed."""
    old, new = parse_phase(before), parse_phase(after)
    if reruns_of(after) > reruns_of(before):
        # One Event per batch folded: the rerun is the news (the phase it reached is said too).
        was = f" (it was {old.value})" if old else ""
        now = "" if new is JobState.QUEUED or new is None else f"; now {new.value}"
        return Narration(RERUN, f"run {reruns_of(after)} queued on pool {pool}{was}{now}")
    if new is None or old is new:
        return None
    attempt = after.get("attempts") or 0
    worker = after.get("worker") or "?"
    error = after.get("error") or {}
    if (new is JobState.QUEUED and enqueued_reason(after) == NEXT_STEP
            and after.get("currentStep") != before.get("currentStep")):
        message = next(c.get("message") for c in after.get("conditions") or [] if c.get("type") == ENQUEUED)
        return Narration("StepSucceeded", str(message))
    if new is JobState.QUEUED and old is JobState.RUNNING and enqueued_reason(after) == REQUEUED:
        message = next(c.get("message") for c in after.get("conditions") or [] if c.get("type") == ENQUEUED)
        return Narration(REQUEUED, f"attempt {attempt} did not finish: {message}", True)
    if new is JobState.QUEUED and old is JobState.RUNNING:
        return Narration(
            "Retrying", f"attempt {attempt} failed ({error.get('type')}: {error.get('message')}); retrying", True
        )
    if new is JobState.QUEUED:
        return Narration("Queued", f"enqueued on pool {pool}")
    if new is JobState.RUNNING:
        return Narration("Started", f"attempt {attempt} running on worker {worker}")
    if new is JobState.SUCCEEDED:
        note = " (output truncated in status)" if after.get("outputTruncated") else ""
        return Narration("Succeeded", f"succeeded on attempt {attempt} on worker {worker}{note}")
    if new is JobState.FAILED:
        return Narration(
            "Failed", f"failed after {attempt} attempt(s): {error.get('type')}: {error.get('message')}", True
        )
    if new is JobState.CANCELLED:
        return Narration("Cancelled", str(error.get("message") or "cancelled"))
    return None  # Pending: the admission path posts its own Warning with the reason
