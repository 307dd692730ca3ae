"""The real apiserver enforces the CRD schemas: bad Jobs and pools are refused with a clear message.

Every file in examples/bad-jobs/ documents its own rejection in header comments:
``# expect: <text the apiserver's error contains>``, and, for edits of an existing
object, ``# after: <example applied first>`` and ``# after-patch: <merge patch applied next>``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubeworkers.resources import JobSpec, WorkerPoolSpec

from hack.polling import wait_for
from tests.support.cluster import Cluster

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
BAD_EXAMPLES = sorted((EXAMPLES / "bad-jobs").glob("*.yaml"))


@dataclass
class BadExample:
    """One file of examples/bad-jobs/ with what its header comments promise."""

    path: Path
    expect: str
    after: list[Path]
    after_patch: list[str]

    @classmethod
    def read(cls, path: Path) -> BadExample:
        header: dict[str, list[str]] = {"expect": [], "after": [], "after-patch": []}
        for line in path.read_text().splitlines():
            if not line.startswith("# "):
                continue
            key, sep, value = line[2:].partition(": ")
            if sep and key in header:
                header[key].append(value.strip())
        (expect,) = header["expect"]
        return cls(path, expect, [REPO / p for p in header["after"]], header["after-patch"])

    @property
    def manifest(self) -> dict[str, Any]:
        doc: dict[str, Any] = yaml.safe_load(self.path.read_text())
        return doc


def get(cluster: Cluster, namespace: str, resource: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", resource, name, "-n", namespace, "-o", "json").stdout
    obj: dict[str, Any] = json.loads(out)
    return obj


def job_manifest(name: str, **spec: Any) -> str:
    base = {"pool": "demo", "handler": "word_count", "input": {"text": "a b c"}}
    doc = {"apiVersion": "workers.io/v1alpha1", "kind": "Job", "metadata": {"name": name}, "spec": base | spec}
    return json.dumps(doc)


# --------------------------------------------------------------------------- bad examples


@pytest.mark.parametrize("bad", [BadExample.read(p) for p in BAD_EXAMPLES], ids=[p.stem for p in BAD_EXAMPLES])
def test_bad_example_is_rejected_with_its_documented_message(
    crds_installed: Cluster, namespace: str, bad: BadExample
) -> None:
    cluster = crds_installed
    kind, name = bad.manifest["kind"], bad.manifest["metadata"]["name"]
    resource = f"{kind.lower()}s.workers.io"
    for earlier in bad.after:
        cluster.apply(earlier, namespace=namespace)
    for patch in bad.after_patch:
        cluster.kubectl("patch", resource, name, "-n", namespace, "--type=merge", "-p", patch)
    before = cluster.kubectl("get", resource, name, "-n", namespace, "-o", "json", check=False).stdout

    result = cluster.apply(bad.path, namespace=namespace, check=False)

    assert result.returncode != 0, result.stdout
    assert bad.expect in result.stderr
    after = cluster.kubectl("get", resource, name, "-n", namespace, "-o", "json", check=False).stdout
    if bad.after:
        assert json.loads(after)["spec"] == json.loads(before)["spec"], "the rejected edit changed the object"
    else:
        assert after == "", "the rejected object was created"


# --------------------------------------------------------------------------- good objects


def test_example_pool_and_jobs_are_accepted_and_defaulted(crds_installed: Cluster, namespace: str) -> None:
    cluster = crds_installed
    for name in ("workerpool.yaml", "job.yaml", "slow-job.yaml"):
        cluster.apply(EXAMPLES / name, namespace=namespace)

    job = get(cluster, namespace, "jobs.workers.io", "word-count")["spec"]
    assert job["priority"] == "normal"
    assert job["cancel"] is False
    assert JobSpec.model_validate(job).input == {"text": "the quick brown fox jumps over the lazy dog the end"}
    slow = JobSpec.model_validate(get(cluster, namespace, "jobs.workers.io", "slow")["spec"])
    assert (slow.priority.value, slow.timeout_seconds, slow.max_attempts) == ("low", 600, 3)
    pool = WorkerPoolSpec.model_validate(get(cluster, namespace, "workerpools.workers.io", "demo")["spec"])
    declared = yaml.safe_load((EXAMPLES / "workerpool.yaml").read_text())["spec"]["handlers"]
    assert pool.handlers == declared and "word_count" in declared
    assert pool.autoscaling.enabled is True
    assert pool.autoscaling.poll_seconds == 2


def test_minimal_pool_gets_the_models_defaults_from_the_apiserver(crds_installed: Cluster, namespace: str) -> None:
    cluster = crds_installed
    cluster.apply(
        "apiVersion: workers.io/v1alpha1\nkind: WorkerPool\nmetadata: {name: tiny}\nspec: {image: img, imports: [m]}\n",
        namespace=namespace,
    )
    served = get(cluster, namespace, "wp", "tiny")["spec"]
    assert served == WorkerPoolSpec(image="img", imports=["m"]).to_k8s()


def test_cancel_may_be_set_and_ttl_changed_after_creation(crds_installed: Cluster, namespace: str) -> None:
    cluster = crds_installed
    cluster.apply(EXAMPLES / "job.yaml", namespace=namespace)
    cluster.kubectl(
        "patch", "wj", "word-count", "-n", namespace, "--type=merge",
        "-p", '{"spec": {"cancel": true, "ttlSecondsAfterFinished": 60}}',
    )  # fmt: skip
    spec = get(cluster, namespace, "wj", "word-count")["spec"]
    assert (spec["cancel"], spec["ttlSecondsAfterFinished"]) == (True, 60)


@pytest.mark.parametrize(
    ("patch", "expect"),
    [
        ({"timeoutSeconds": 30}, "timeoutSeconds cannot be added or removed after creation"),
        ({"maxAttempts": 2}, "maxAttempts cannot be added or removed after creation"),
        ({"priority": "high"}, "priority is immutable"),
        ({"input": {"text": "a b c", "extra": 1}}, "input is immutable"),
    ],
    ids=["add-timeout", "add-max-attempts", "priority", "input-key-added"],
)
def test_queued_settings_cannot_change_after_creation(
    crds_installed: Cluster, namespace: str, patch: dict[str, Any], expect: str
) -> None:
    cluster = crds_installed
    cluster.apply(job_manifest("fixed"), namespace=namespace)
    result = cluster.kubectl(
        "patch", "wj", "fixed", "-n", namespace, "--type=merge", "-p", json.dumps({"spec": patch}), check=False
    )
    assert result.returncode != 0
    assert expect in result.stderr


def test_status_is_validated_and_written_only_through_the_status_subresource(
    crds_installed: Cluster, namespace: str
) -> None:
    cluster = crds_installed
    cluster.apply(job_manifest("st"), namespace=namespace)
    status = '{"status": {"phase": "Running", "attempts": 1}}'
    cluster.kubectl("patch", "wj", "st", "-n", namespace, "--type=merge", "-p", status)
    assert "status" not in get(cluster, namespace, "wj", "st"), "a main-resource patch wrote status"

    cluster.kubectl("patch", "wj", "st", "-n", namespace, "--subresource=status", "--type=merge", "-p", status)
    assert get(cluster, namespace, "wj", "st")["status"] == {"phase": "Running", "attempts": 1}

    bad = cluster.kubectl(
        "patch", "wj", "st", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", '{"status": {"phase": "Exploded"}}', check=False,
    )  # fmt: skip
    assert bad.returncode != 0
    assert 'status.phase: Unsupported value: "Exploded"' in bad.stderr


def test_kubectl_scale_sets_pool_replicas_within_bounds(crds_installed: Cluster, namespace: str) -> None:
    cluster = crds_installed
    cluster.apply(
        "apiVersion: workers.io/v1alpha1\nkind: WorkerPool\nmetadata: {name: fixed}\n"
        "spec: {image: img, imports: [m], maxReplicas: 3, autoscaling: {enabled: false}}\n",
        namespace=namespace,
    )
    cluster.kubectl("scale", "wp", "fixed", "-n", namespace, "--replicas=2")
    assert get(cluster, namespace, "wp", "fixed")["spec"]["replicas"] == 2

    too_many = cluster.kubectl("scale", "wp", "fixed", "-n", namespace, "--replicas=4", check=False)
    assert too_many.returncode != 0
    assert "replicas must be between minReplicas and maxReplicas when autoscaling is disabled" in too_many.stderr


# --------------------------------------------------------------------------- kubectl views


def test_kubectl_explain_shows_the_description_of_job_input(crds_installed: Cluster) -> None:
    # The apiserver publishes a CRD's OpenAPI a moment after it is Established.
    def explained() -> str | None:
        out = crds_installed.kubectl("explain", "jobs.workers.io.spec.input", check=False).stdout
        return out if "Free-form JSON object passed to the handler" in out else None

    out = wait_for(explained, timeout=60, what="kubectl explain to show spec.input", every=0.5)
    assert "GROUP:      workers.io" in out
    assert "KIND:       Job" in out
    assert "VERSION:    v1alpha1" in out


def columns(header: str) -> list[str]:
    return header.split()


def test_kubectl_get_jobs_shows_pool_handler_status_attempts_age(crds_installed: Cluster, namespace: str) -> None:
    cluster = crds_installed
    cluster.apply(EXAMPLES / "job.yaml", namespace=namespace)
    cluster.kubectl(
        "patch", "wj", "word-count", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", '{"status": {"phase": "Running", "attempts": 2, "worker": "demo-abc", "progress": {"fraction": 0.5}}}',
    )  # fmt: skip

    header, row = cluster.kubectl("get", "jobs.workers.io", "-n", namespace).stdout.splitlines()
    assert columns(header) == ["NAME", "POOL", "HANDLER", "STATUS", "ATTEMPTS", "POSITION", "AGE"]
    assert columns(row)[:5] == ["word-count", "demo", "word_count", "Running", "2"]

    header, row = cluster.kubectl("get", "wj", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert columns(header) == [
        "NAME", "POOL", "HANDLER", "STATUS", "ATTEMPTS", "POSITION", "RERUNS", "PROGRESS", "WORKER", "PRIORITY",
        "STEP", "AGE",
    ]  # fmt: skip
    # POSITION and RERUNS are empty for a Running Job on its first run: the cells split away.
    assert columns(row)[:8] == ["word-count", "demo", "word_count", "Running", "2", "0.5", "demo-abc", "normal"]


def test_kubectl_get_workerpools_shows_ready_desired_bounds_backlog(crds_installed: Cluster, namespace: str) -> None:
    cluster = crds_installed
    cluster.apply(EXAMPLES / "workerpool.yaml", namespace=namespace)
    cluster.kubectl(
        "patch", "wp", "demo", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", '{"status": {"readyReplicas": 1, "desiredReplicas": 2, "backlog": 17}}',
    )  # fmt: skip

    header, row = cluster.kubectl("get", "wp", "-n", namespace).stdout.splitlines()
    assert columns(header) == ["NAME", "READY", "DESIRED", "MIN", "MAX", "BACKLOG", "AGE"]
    assert columns(row)[:6] == ["demo", "1", "2", "0", "5", "17"]


def test_workers_category_lists_pools_and_jobs(crds_installed: Cluster, namespace: str) -> None:
    cluster = crds_installed
    cluster.apply(EXAMPLES / "workerpool.yaml", namespace=namespace)
    cluster.apply(EXAMPLES / "job.yaml", namespace=namespace)
    out = cluster.kubectl("get", "workers", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(out) == ["job.workers.io/word-count", "workerpool.workers.io/demo"]
