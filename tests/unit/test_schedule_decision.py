"""The pure decision of a Schedule pass: which slot starts, what is skipped, missed, replaced, pruned."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from kubeworkers.protocol import JobState
from kubeworkers.resources import ConcurrencyPolicy, JobSpec, JobTemplate, JobTemplateMetadata
from kubeworkers_operator.model.conditions import rfc3339
from kubeworkers_operator.model.schedule import (
    SCHEDULE_LABEL,
    Run,
    ScheduleState,
    decide,
    prune,
    run_body,
    run_name,
    slot_of,
)

CREATED = 1_000_000.0  # a multiple of 10: @every 10s slots are CREATED + 10k


def state(schedule: str = "@every 10s", status: dict[str, Any] | None = None, **fields: Any) -> ScheduleState:
    return ScheduleState(name="nightly", schedule=schedule, created=CREATED, status=status or {}, **fields)


def run(slot: float, phase: JobState | None = JobState.RUNNING, completed: float | None = None) -> Run:
    return Run(run_name("nightly", slot), f"uid-{int(slot)}", int(slot), phase, completed)


def test_the_first_slot_after_creation_starts_its_run_named_for_the_slot() -> None:
    plan = decide(state(), [], now=CREATED + 10.5)
    assert plan.start == CREATED + 10
    assert plan.status["active"] == ["nightly-1000010"]
    assert plan.status["lastScheduleTime"] == rfc3339(CREATED + 10)
    assert plan.next_time == CREATED + 20
    assert plan.status["nextScheduleTime"] == rfc3339(CREATED + 20)


def test_nothing_starts_before_the_first_slot() -> None:
    plan = decide(state(), [], now=CREATED + 9)
    assert plan.start is None and plan.next_time == CREATED + 10


def test_a_slot_already_started_is_not_started_again_even_if_the_status_never_said_so() -> None:
    # The operator created the run, then died before writing lastScheduleTime.
    plan = decide(state(), [run(CREATED + 10)], now=CREATED + 12)
    assert plan.start is None
    assert plan.status["lastScheduleTime"] == rfc3339(CREATED + 10)


def test_after_downtime_only_the_most_recent_missed_slot_starts() -> None:
    status = {"lastScheduleTime": rfc3339(CREATED + 10)}
    plan = decide(state(status=status), [], now=CREATED + 65)
    assert plan.start == CREATED + 60


def test_a_slot_found_past_the_starting_deadline_is_missed_not_started() -> None:
    status = {"lastScheduleTime": rfc3339(CREATED + 10)}
    plan = decide(state(status=status, starting_deadline_seconds=3), [], now=CREATED + 65)
    assert plan.start is None and plan.missed == CREATED + 60
    assert plan.status["lastMissedTime"] == rfc3339(CREATED + 60)
    # Recorded: the next pass neither reports it again nor starts it.
    again = decide(state(status=plan.status, starting_deadline_seconds=3), [], now=CREATED + 66)
    assert again.missed is None and again.start is None


def test_forbid_skips_a_slot_while_a_run_is_active_and_never_runs_it_later() -> None:
    active = [run(CREATED + 10)]
    plan = decide(state(policy=ConcurrencyPolicy.FORBID), active, now=CREATED + 21)
    assert plan.start is None and plan.skipped == CREATED + 20
    finished = [run(CREATED + 10, JobState.SUCCEEDED, CREATED + 25)]
    later = decide(state(policy=ConcurrencyPolicy.FORBID, status=plan.status), finished, now=CREATED + 26)
    assert later.start is None and later.next_time == CREATED + 30


def test_replace_deletes_the_active_run_and_starts_the_new_one() -> None:
    active = [run(CREATED + 10)]
    plan = decide(state(policy=ConcurrencyPolicy.REPLACE), active, now=CREATED + 21)
    assert plan.start == CREATED + 20
    assert [r.name for r in plan.delete] == ["nightly-1000010"]
    assert plan.status["active"] == ["nightly-1000020"]


def test_allow_starts_beside_an_active_run() -> None:
    plan = decide(state(), [run(CREATED + 10)], now=CREATED + 21)
    assert plan.start == CREATED + 20 and plan.delete == ()
    assert plan.status["active"] == ["nightly-1000010", "nightly-1000020"]


def test_suspended_starts_nothing_and_has_no_next_time() -> None:
    plan = decide(state(suspend=True), [], now=CREATED + 100)
    assert plan.start is None and plan.next_time is None and plan.status["nextScheduleTime"] is None


def test_an_unreadable_schedule_is_a_false_ready_condition_and_starts_nothing() -> None:
    plan = decide(state("@every 0s"), [], now=CREATED + 100)
    assert plan.start is None and plan.invalid is not None
    (ready,) = plan.status["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSchedule")
    tz = decide(state("@daily", time_zone="Nowhere/Land"), [], now=CREATED)
    assert tz.status["conditions"][0]["reason"] == "InvalidTimeZone"


def test_last_successful_time_is_the_newest_success() -> None:
    runs = [run(CREATED + 10, JobState.SUCCEEDED, CREATED + 12), run(CREATED + 20, JobState.FAILED, CREATED + 22)]
    plan = decide(state(), runs, now=CREATED + 25)
    assert plan.status["lastSuccessfulTime"] == rfc3339(CREATED + 12)


@settings(max_examples=200, deadline=None)
@given(
    phases=st.lists(st.sampled_from([JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.RUNNING]),
                    max_size=30),
    keep_ok=st.integers(0, 5), keep_failed=st.integers(0, 5),
)
def test_pruning_keeps_the_newest_runs_of_each_outcome_and_every_active_one(
    phases: list[JobState], keep_ok: int, keep_failed: int
) -> None:
    runs = [run(CREATED + 10 * (i + 1), phase) for i, phase in enumerate(phases)]
    pruned = prune(runs, keep_ok, keep_failed)
    kept = [r for r in runs if r not in pruned]
    assert all(not r.active for r in pruned)
    ok = [r for r in kept if r.succeeded]
    failed = [r for r in kept if not r.active and not r.succeeded]
    assert len(ok) == min(keep_ok, sum(p is JobState.SUCCEEDED for p in phases))
    assert len(failed) == min(keep_failed, sum(p in (JobState.FAILED, JobState.CANCELLED) for p in phases))
    for r in pruned:  # every pruned run is older than every kept run of its outcome
        assert all(r.slot < k.slot for k in kept if k.succeeded == r.succeeded and not k.active)


def test_a_run_is_named_for_its_slot_owned_by_its_schedule_and_labelled() -> None:
    template = JobTemplate(metadata=JobTemplateMetadata(labels={"team": "ops"}),
                           spec=JobSpec(pool="demo", handler="maintenance"))
    body = run_body("ns", "nightly", "uid-1", template, 1_000_010)
    assert body["metadata"]["name"] == "nightly-1000010"
    assert slot_of("nightly", body["metadata"]["name"]) == 1_000_010
    assert slot_of("nightly-2", "nightly-1000010") is None
    assert body["metadata"]["labels"] == {"team": "ops", SCHEDULE_LABEL: "nightly"}
    (owner,) = body["metadata"]["ownerReferences"]
    assert owner["kind"] == "Schedule" and owner["uid"] == "uid-1" and owner["controller"] is True
    assert body["spec"]["pool"] == "demo" and body["spec"]["handler"] == "maintenance"
