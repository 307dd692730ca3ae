"""``ttlSecondsAfterFinished`` may change at any time, also after the Job finished (docs/crds.md)."""

from __future__ import annotations

from typing import Any

from kubeworkers_operator.model.index import TrackedJob
from kubeworkers_operator.model.ttl import TtlQueue, deadline, is_due

DONE = {"phase": "Succeeded", "completionTime": "2026-11-23T10:00:00Z"}


def job(uid: str = "u1", **spec: Any) -> TrackedJob:
    return TrackedJob("ns", "j", uid, "1", {"pool": "p", "handler": "h", **spec}, dict(DONE))


FINISHED = deadline(job(ttlSecondsAfterFinished=0))
assert FINISHED is not None


def test_ttl_edited_after_the_job_finished_is_honoured() -> None:
    q = TtlQueue()
    q.consider(job(ttlSecondsAfterFinished=3600))
    q.consider(job(ttlSecondsAfterFinished=5))  # edited: kubectl patch ... ttlSecondsAfterFinished: 5
    assert q.pop_due(FINISHED + 10) == [("ns/j", "u1")]
    assert q.pop_due(FINISHED + 4000) == []  # the old deadline is gone with the edit


def test_ttl_raised_after_the_job_finished_postpones_the_deletion() -> None:
    q = TtlQueue()
    q.consider(job(ttlSecondsAfterFinished=5))
    q.consider(job(ttlSecondsAfterFinished=3600))
    assert q.pop_due(FINISHED + 10) == []
    assert q.pop_due(FINISHED + 3601) == [("ns/j", "u1")]


def test_ttl_removed_after_the_job_finished_keeps_the_job() -> None:
    q = TtlQueue()
    q.consider(job(ttlSecondsAfterFinished=5))
    q.consider(job())
    assert q.pop_due(FINISHED + 10**6) == []
    assert len(q) == 0


def test_the_deletion_rechecks_the_live_spec() -> None:
    # The chore pops a deadline; the Job read just before deleting it may say otherwise.
    assert is_due(job(ttlSecondsAfterFinished=5), "u1", now=FINISHED + 10)
    assert not is_due(job(ttlSecondsAfterFinished=3600), "u1", now=FINISHED + 10)
    assert not is_due(job(), "u1", now=FINISHED + 10)
    assert not is_due(job(uid="u2", ttlSecondsAfterFinished=5), "u1", now=FINISHED + 10)  # a namesake
