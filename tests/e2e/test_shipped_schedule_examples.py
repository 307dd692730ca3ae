"""The scheduling examples as shipped: examples/delayed-job.yaml (only its date moved to the near
future, as `make demo` does) and examples/schedule.yaml applied unchanged to the demo pool."""

from __future__ import annotations

import datetime
import json
import time
from typing import Any

import yaml

from tests.e2e.operator_fixtures import OperatorProcess, get_job, pool_manifest, wait_for
from tests.e2e.test_job_lifecycle import EXAMPLES, wait_phase
from tests.support.cluster import Cluster
from tests.support.pod_runner import PodRunner

SHIPPED_NOT_BEFORE = "2026-12-02T12:00:00Z"


def stamp(seconds_from_now: float) -> str:
    when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds_from_now)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def unix(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_shipped_delayed_job_waits_queued_until_its_time_then_counts_its_words(
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner
) -> None:
    cluster.apply(pool_manifest(), namespace)
    shipped = (EXAMPLES / "delayed-job.yaml").read_text()
    assert SHIPPED_NOT_BEFORE in shipped  # the date the README's sed line rewrites
    not_before = stamp(10)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=shipped.replace(SHIPPED_NOT_BEFORE, not_before))
    name = yaml.safe_load(shipped)["metadata"]["name"]

    def delayed() -> dict[str, Any] | None:
        job = get_job(cluster, namespace, name)
        status = (job or {}).get("status", {})
        return status if status.get("notBefore") else None

    status = wait_for(delayed, timeout=30, what="status.notBefore")
    assert status["notBefore"] == not_before
    if time.time() < unix(not_before) - 1:  # still before its time: it waits as the example's comment says
        assert status["phase"] == "Queued", status
        enqueued = {c["type"]: c for c in status["conditions"]}["Enqueued"]
        assert enqueued["reason"] == "Delayed", enqueued
    job = wait_phase(cluster, namespace, name, {"Succeeded", "Failed", "Cancelled"}, timeout=120)
    status = job["status"]
    assert status["phase"] == "Succeeded", status
    # "counted once its time has come": six words, each once.
    assert status["output"] == {"words": 6, "counts": dict.fromkeys(
        ["counted", "once", "its", "time", "has", "come"], 1)}
    assert unix(status["startTime"]) >= unix(not_before), status


def test_shipped_schedule_runs_the_maintenance_job_with_its_template_labels_and_records_its_times(
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner
) -> None:
    cluster.apply(pool_manifest(), namespace)
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "schedule.yaml"))
    shipped = yaml.safe_load((EXAMPLES / "schedule.yaml").read_text())
    name = shipped["metadata"]["name"]
    labels = shipped["spec"]["jobTemplate"]["metadata"]["labels"]

    def succeeded_run() -> dict[str, Any] | None:
        out = cluster.kubectl("get", "jobs.workers.io", "-n", namespace, "-l", f"workers.io/schedule={name}",
                              "-o", "json").stdout
        done = [j for j in json.loads(out)["items"] if j.get("status", {}).get("phase") == "Succeeded"]
        return done[0] if done else None

    # "@every 30s": the first slot is at most 30 s after creation, and the run takes 2 s.
    run = wait_for(succeeded_run, timeout=120, what=f"a Succeeded run of {name}")
    assert run["metadata"]["name"].startswith(f"{name}-")
    for key, value in labels.items():
        assert run["metadata"]["labels"][key] == value, run["metadata"]["labels"]
    assert run["spec"]["handler"] == "maintenance" and run["spec"]["pool"] == "demo"
    assert run["status"]["output"] == {"task": "vacuum", "done": True}

    def recorded() -> dict[str, Any] | None:
        out = cluster.kubectl("get", "schedules.workers.io", name, "-n", namespace, "-o", "json").stdout
        status = json.loads(out).get("status", {})
        return status if status.get("lastSuccessfulTime") else None

    status = wait_for(recorded, timeout=60, what="the schedule's lastSuccessfulTime")
    # The run names its slot: the schedule's last slot is at or after it, and its last success is
    # at or after that run's completion (stamps are whole seconds).
    slot = int(run["metadata"]["name"].rpartition("-")[2])
    assert unix(status["lastScheduleTime"]) >= slot, (status, slot)
    assert unix(status["lastSuccessfulTime"]) >= int(unix(run["status"]["completionTime"])), (status, run["status"])
