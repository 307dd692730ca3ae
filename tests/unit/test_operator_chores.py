"""The decisions inside the periodic chores: which Jobs a resync reads, which records may be
orphans, how far the events stream may be trimmed. (Their I/O runs in the e2e tier.)"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from kubeworkers.protocol import PoolKeys, is_sdk_job, job_id_of, job_object_of, record_key_pattern
from kubeworkers_operator.flows import orphans, resync
from kubeworkers_operator.flows.status_sync import trim_floor
from kubeworkers_operator.model.index import ClusterIndex, TrackedJob


def job(name: str, phase: str | None, uid: str = "u1") -> TrackedJob:
    status: dict[str, Any] = {"phase": phase} if phase else {}
    return TrackedJob("ns", name, uid, "1", {"pool": "p", "handler": "h"}, status)


def test_resync_reads_only_queued_and_running_jobs() -> None:
    jobs = [job("new", None), job("waiting", "Pending"), job("queued", "Queued"), job("running", "Running"),
            job("done", "Succeeded"), job("failed", "Failed"), job("cancelled", "Cancelled")]
    assert [j.name for j in resync.candidates(jobs)] == ["queued", "running"]


def index_with(*jobs: TrackedJob) -> ClusterIndex:
    index = ClusterIndex()
    for j in jobs:
        index.jobs[j.job_id] = j
    return index


def test_an_unfinished_record_of_a_job_the_index_does_not_hold_is_suspected() -> None:
    head = orphans.suspect([b"ns/gone", b"u9", b"ns", b"p", b"Running"], index_with())
    assert head == orphans.RecordHead("ns/gone", "u9", "ns", "p", "Running")


def test_records_the_sweep_leaves_alone() -> None:
    index = index_with(job("live", "Running", uid="u1"))
    assert orphans.suspect(["ns/live", "u1", "ns", "p", "Running"], index) is None  # the Job exists
    assert orphans.suspect(["ns/live", "u0", "ns", "p", "Queued"], index) is not None  # an older namesake's
    assert orphans.suspect(["ns/done", "u2", "ns", "p", "Succeeded"], index) is None  # finished
    assert orphans.suspect(["sdk-123", "sdk-123", "ns", "p", "Queued"], index) is None  # SDK job: no Job
    assert orphans.suspect([None, "u3", "ns", "p", "Queued"], index) is None  # incomplete record


def test_the_events_stream_is_trimmed_below_what_every_group_still_needs() -> None:
    # (last delivered, oldest pending) per consumer group
    assert trim_floor([("5-0", None), ("9-1", "3-2")]) == "3-2"
    assert trim_floor([("5-0", None), ("9-1", None)]) == "5-0"
    assert trim_floor([("7-0", None), ("0-0", None)]) is None  # a group that has read nothing
    assert trim_floor([]) is None


def test_job_ids_of_job_objects_and_sdk_jobs_are_told_apart() -> None:
    job_id = job_id_of("team-a", "resize-1")
    assert job_object_of(job_id) == ("team-a", "resize-1")
    assert not is_sdk_job(job_id, "7f0c-uid")
    assert is_sdk_job("a1b2c3", "a1b2c3")


def test_the_record_scan_pattern_matches_the_records_of_its_namespace_only() -> None:
    record = PoolKeys("team-a", "images").record("team-a/resize-1")
    assert fnmatchcase(record, record_key_pattern("team-a"))
    assert fnmatchcase(record, record_key_pattern())
    assert not fnmatchcase(record, record_key_pattern("team-b"))
    assert not fnmatchcase(PoolKeys("team-a", "images").cancel("team-a/resize-1"), record_key_pattern())
