"""Children-count events (lua/children.lua) set status.children only, and counts never go back."""

from __future__ import annotations

from kubeworkers.protocol import ChildCounts, JobEvent, JobState
from kubeworkers_operator.model.job_status import apply_event


def counts_event(state: JobState, total: int, succeeded: int, failed: int = 0) -> JobEvent:
    return JobEvent(job_id="ns/p", uid="u", namespace="ns", pool="demo", state=state, attempt=1,
                    children=ChildCounts.of(total, succeeded, failed, 0))


def test_a_children_event_sets_the_counts_and_leaves_the_phase_alone() -> None:
    status = {"phase": "Waiting", "attempts": 1}
    new = apply_event(status, counts_event(JobState.RUNNING, 3, 1))
    assert new["phase"] == "Waiting"
    assert new["children"] == {"total": 3, "active": 2, "succeeded": 1, "failed": 0, "cancelled": 0}


def test_children_counts_still_change_after_the_parent_finished() -> None:
    status = {"phase": "Succeeded", "attempts": 1}
    new = apply_event(status, counts_event(JobState.SUCCEEDED, 2, 2))
    assert new["phase"] == "Succeeded" and new["children"]["succeeded"] == 2


def test_an_older_children_event_does_not_undo_a_newer_one() -> None:
    status = apply_event({"phase": "Waiting", "attempts": 1}, counts_event(JobState.WAITING, 3, 2, 1))
    assert apply_event(status, counts_event(JobState.WAITING, 3, 1))["children"]["succeeded"] == 2
