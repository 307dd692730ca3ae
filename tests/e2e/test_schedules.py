"""Schedules on the real control plane: runs on their slots, history limits, Forbid, Replace,
exactly one run per slot across an operator SIGKILL, and runs deleted with their Schedule.

Runs are checked against the schedule itself (each run is named for its slot, and is
created at or after that slot and before the next), never against micro-timings. Runs
of the Forbid/Replace/restart tests need no workers: a run of a pool that does not
exist waits as Pending, which is what "still active" needs.
"""

from __future__ import annotations

import datetime
import json
import signal
import time
from typing import Any

from tests.e2e.operator_fixtures import OperatorProcess, pool_manifest, wait_for
from tests.support.cluster import Cluster
from tests.support.pod_runner import PodRunner

EVERY = 10


def unix(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def apply_schedule(cluster: Cluster, namespace: str, name: str, *, pool: str = "nowhere",
                   handler: str = "maintenance", input: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    doc = {
        "apiVersion": "workers.io/v1alpha1", "kind": "Schedule", "metadata": {"name": name},
        "spec": {
            "schedule": f"@every {EVERY}s",
            "jobTemplate": {"spec": {"pool": pool, "handler": handler, "input": input or {"task": "vacuum"}}},
            **spec,
        },
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))
    return get_schedule(cluster, namespace, name)


def get_schedule(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "schedules.workers.io", name, "-n", namespace, "-o", "json").stdout
    body: dict[str, Any] = json.loads(out)
    return body


def runs(cluster: Cluster, namespace: str, name: str) -> dict[int, dict[str, Any]]:
    """The Schedule's runs by slot (the slot is in each run's name)."""
    out = cluster.kubectl("get", "jobs.workers.io", "-n", namespace, "-l", f"workers.io/schedule={name}",
                          "-o", "json").stdout
    found = {}
    for job in json.loads(out)["items"]:
        prefix, _, slot = job["metadata"]["name"].rpartition("-")
        assert prefix == name, job["metadata"]["name"]
        found[int(slot)] = job
    return found


def assert_on_the_grid(schedule: dict[str, Any], found: dict[int, dict[str, Any]]) -> None:
    """Every run is for a slot of the schedule, and was created at or after it, before the next."""
    created = unix(schedule["metadata"]["creationTimestamp"])
    for slot, job in found.items():
        assert (slot - created) % EVERY == 0 and slot > created, (slot, created)
        made = unix(job["metadata"]["creationTimestamp"])
        assert slot <= made < slot + EVERY, (job["metadata"]["name"], made)
        (owner,) = job["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
            "Schedule", schedule["metadata"]["name"], schedule["metadata"]["uid"], True)


def events(cluster: Cluster, namespace: str, name: str) -> list[str]:
    out = cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                          f"involvedObject.kind=Schedule,involvedObject.name={name}", "-o", "json").stdout
    return [f"{e['reason']}: {e['message']}" for e in json.loads(out)["items"]]


def test_every_10s_schedule_creates_runs_on_their_slots_keeps_its_history_and_its_runs_go_with_it(
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner
) -> None:
    cluster.apply(pool_manifest(minReplicas=1), namespace)
    schedule = apply_schedule(cluster, namespace, "tidy", pool="demo", successfulJobsHistoryLimit=2)

    def succeeded() -> list[int]:
        return sorted(s for s, j in runs(cluster, namespace, "tidy").items()
                      if j.get("status", {}).get("phase") == "Succeeded")

    # Four slots have passed and their runs succeeded: only the newest two are kept.
    wait_for(lambda: len(succeeded()) == 2 and max(succeeded()) >= unix(
        schedule["metadata"]["creationTimestamp"]) + 4 * EVERY, timeout=120, every=1, what="4 slots run, 2 kept")
    found = runs(cluster, namespace, "tidy")
    assert_on_the_grid(schedule, found)
    kept = succeeded()
    assert kept[1] - kept[0] == EVERY  # the newest two, consecutive slots: older ones were pruned
    status = get_schedule(cluster, namespace, "tidy")["status"]
    assert unix(status["lastScheduleTime"]) >= kept[1]
    assert unix(status["nextScheduleTime"]) > unix(status["lastScheduleTime"])
    assert status["lastSuccessfulTime"]
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    assert any(e.startswith("SuccessfulCreate: created run tidy-") for e in events(cluster, namespace, "tidy"))
    printed = cluster.kubectl("get", "schedules.workers.io", "-n", namespace).stdout
    assert printed.split("\n")[0].split()[:5] == ["NAME", "SCHEDULE", "SUSPEND", "ACTIVE", "LAST"]

    # The garbage collector deletes the runs with their Schedule (owner references).
    cluster.kubectl("delete", "schedules.workers.io", "tidy", "-n", namespace)
    wait_for(lambda: not runs(cluster, namespace, "tidy"), timeout=60, what="runs deleted with the Schedule")


def test_forbid_skips_a_slot_while_a_run_is_active(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    schedule = apply_schedule(cluster, namespace, "once-at-a-time", concurrencyPolicy="Forbid")
    wait_for(lambda: get_schedule(cluster, namespace, "once-at-a-time").get("status", {}).get("lastSkippedTime"),
             timeout=60, what="a slot skipped")
    status = get_schedule(cluster, namespace, "once-at-a-time")["status"]
    found = runs(cluster, namespace, "once-at-a-time")
    (first,) = found  # the first run never finishes (no pool): every later slot is skipped
    assert status["active"] == [f"once-at-a-time-{first}"]
    assert unix(status["lastSkippedTime"]) > first
    assert_on_the_grid(schedule, found)
    assert any(e.startswith("SkippedRun: ") for e in events(cluster, namespace, "once-at-a-time"))


def test_replace_deletes_the_active_run_and_starts_the_new_one(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    schedule = apply_schedule(cluster, namespace, "latest-only", concurrencyPolicy="Replace")
    wait_for(lambda: runs(cluster, namespace, "latest-only"), timeout=60, what="a first run")
    (first,) = runs(cluster, namespace, "latest-only")
    wait_for(lambda: first not in runs(cluster, namespace, "latest-only") and runs(cluster, namespace, "latest-only"),
             timeout=60, what="the first run replaced")
    found = runs(cluster, namespace, "latest-only")
    assert len(found) == 1 and min(found) > first
    assert_on_the_grid(schedule, found)
    status = get_schedule(cluster, namespace, "latest-only")["status"]
    assert status["active"] == [f"latest-only-{s}" for s in found]
    assert any(e.startswith(f"ReplacedRun: deleted active run latest-only-{first}")
               for e in events(cluster, namespace, "latest-only"))


def test_exactly_one_run_per_slot_across_an_operator_sigkill_and_the_missed_slot_starts_after_restart(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    schedule = apply_schedule(cluster, namespace, "survivor", startingDeadlineSeconds=60)
    created = unix(schedule["metadata"]["creationTimestamp"])
    wait_for(lambda: runs(cluster, namespace, "survivor"), timeout=60, what="a first run")
    # Events are best effort (as the CronJob controller's): one posted just before a SIGKILL may
    # be lost with the process. Kill once the first run's Event is in, so that the count of
    # creations below is the operator's, not the race's.
    wait_for(lambda: [e for e in events(cluster, namespace, "survivor") if e.startswith("SuccessfulCreate: ")],
             timeout=30, what="the first run's Event")
    operator.kill(signal.SIGKILL)
    down_at = time.time()
    before = set(runs(cluster, namespace, "survivor"))
    # Stay down across at least one slot.
    wait_for(lambda: time.time() > max(before) + 2 * EVERY + 1, timeout=60, what="slots pass while down")
    up_at = time.time()
    operator.start()

    wait_for(lambda: set(runs(cluster, namespace, "survivor")) - before, timeout=60, what="a run after restart")
    found = runs(cluster, namespace, "survivor")
    after = sorted(set(found) - before)
    # The first run after the restart is the most recent slot missed while down, started late.
    missed = after[0]
    assert down_at - EVERY < missed <= up_at
    assert unix(found[missed]["metadata"]["creationTimestamp"]) >= int(up_at)
    assert (missed - created) % EVERY == 0
    # Only the most recent missed slot ran, not every one of them.
    assert not [s for s in found if max(before) < s < missed]
    # Every slot has at most one run: each name is its slot, and the count of runs equals the
    # count of creations the operator reported.
    wait_for(lambda: len([e for e in events(cluster, namespace, "survivor")
                          if e.startswith("SuccessfulCreate: ")]) >= len(found), timeout=30, what="Events posted")
    creates = [e for e in events(cluster, namespace, "survivor") if e.startswith("SuccessfulCreate: ")]
    assert sorted(creates) == sorted({*creates})
    assert {int(e.split(" ")[3].rsplit("-", 1)[1]) for e in creates} >= set(found)
