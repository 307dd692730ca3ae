"""Queue positions on Job CRs (the operator's queue-positions chore): Jobs waiting on a paused
pool show their places in ``status.position`` and ``kubectl get``'s POSITION column, a critical Job
goes ahead of them, and the fields go once the pool runs the Jobs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.operator_fixtures import OperatorProcess, list_jobs, pool_manifest, wait_for
from tests.e2e.test_job_lifecycle import job_yaml
from tests.support.cluster import Cluster
from tests.support.pod_runner import PodRunner

CRD = Path(__file__).resolve().parents[2] / "crds" / "workers.io_jobs.yaml"
NAMES = [f"wait-{i}" for i in range(5)]


def positions(cluster: Cluster, namespace: str) -> dict[str, Any]:
    return {name: job.get("status", {}).get("position") for name, job in list_jobs(cluster, namespace).items()}


def column(cluster: Cluster, namespace: str, title: str) -> dict[str, str]:
    """Each Job's cell of ``kubectl get``'s column ``title`` (read at the header's offset)."""
    header, *rows = cluster.kubectl("get", "jobs.workers.io", "-n", namespace).stdout.splitlines()
    at = header.index(title)
    rest = header[at + len(title):]
    end = at + len(title) + (len(rest) - len(rest.lstrip())) if rest.strip() else None
    return {row.split()[0]: row[at:end].strip() for row in rows}


def test_jobs_on_a_paused_pool_show_their_positions_a_critical_job_goes_first_and_running_clears_them(
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner
) -> None:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = crd["spec"]["versions"]
    default_columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert "POSITION" in [c.upper() for c in default_columns], default_columns

    cluster.apply(pool_manifest(maxReplicas=0), namespace)  # 0 pauses the pool
    for name in NAMES:  # one at a time: their order in the queue is this order
        cluster.apply(job_yaml(name, "word_count", {"text": name}), namespace)

    def placed() -> dict[str, Any] | None:
        found = positions(cluster, namespace)
        return found if all(isinstance(found.get(n), int) for n in NAMES) else None

    found = wait_for(placed, timeout=90, what="a position on every waiting Job")
    assert [found[n] for n in NAMES] == [0, 1, 2, 3, 4], found
    jobs = list_jobs(cluster, namespace)
    for name in NAMES:
        status = jobs[name]["status"]
        assert status["phase"] == "Queued", status
        # A paused pool starts nothing: no start time can be estimated, and none is shown.
        assert "estimatedStartTime" not in status, status
    assert column(cluster, namespace, "POSITION") == {n: str(i) for i, n in enumerate(NAMES)}

    # A critical Job is taken before every other priority: it is first in the queue, and the
    # others' places move back by one (rewritten at most every 30 s per Job).
    cluster.apply(job_yaml("urgent", "word_count", {"text": "urgent"}, priority="critical"), namespace)

    def moved() -> dict[str, Any] | None:
        now = positions(cluster, namespace)
        return now if now.get("urgent") == 0 and [now.get(n) for n in NAMES] == [1, 2, 3, 4, 5] else None

    wait_for(moved, timeout=120, what="urgent at 0 and the others one place back")

    cluster.kubectl("patch", "workerpools.workers.io", "demo", "-n", namespace, "--type=merge",
                    "-p", json.dumps({"spec": {"maxReplicas": 5}}))

    def all_done() -> bool:
        return all(j.get("status", {}).get("phase") == "Succeeded" for j in list_jobs(cluster, namespace).values())

    wait_for(all_done, timeout=180, what="every Job Succeeded once the pool runs")
    for name, job in list_jobs(cluster, namespace).items():
        status = job["status"]
        assert "position" not in status and "estimatedStartTime" not in status, (name, status)
        assert status["output"]["words"] == 1 + name.count("-"), (name, status["output"])
    assert set(column(cluster, namespace, "POSITION").values()) <= {"", "<none>"}
