"""Sequences on the real control plane: examples/extraction-workflow.yaml (parse -> LLM extract ->
store, each step under its own timeout and retry policy) runs as one Job CR through its steps."""

from __future__ import annotations

from tests.e2e.operator_fixtures import OperatorProcess, wait_for
from tests.e2e.test_job_lifecycle import EXAMPLES, wait_phase
from tests.support.cluster import Cluster
from tests.support.pod_runner import PodRunner


def test_extraction_workflow_job_goes_through_its_steps_and_succeeds_with_the_transient_retry_visible(
    cluster: Cluster, namespace: str, operator: OperatorProcess, demo_pool: PodRunner
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "extraction-workflow.yaml"))
    job = wait_phase(cluster, namespace, "extract-report", {"Succeeded", "Failed", "Cancelled"}, timeout=180)
    status = job["status"]
    assert status["phase"] == "Succeeded", status
    assert status["output"] == {
        "document": "q3-report", "stored": 8, "extracted_on_attempt": 2,
        "entities": ["Ada", "Lovelace", "Analytical", "Engine", "Charles", "Babbage", "London", "The"],
    }
    steps = status["steps"]
    assert [(s["name"], s["phase"], s["attempts"]) for s in steps] == [
        ("parse", "Succeeded", 1), ("extract", "Succeeded", 2), ("store", "Succeeded", 1)]
    # The fake LLM's first attempt failed as an overloaded endpoint would; its step's own policy retried it.
    assert steps[1]["error"]["type"] == "TransientModelError"
    assert "overloaded" in steps[1]["error"]["message"]
    assert all(s["startTime"] <= s["completionTime"] for s in steps)
    assert steps[0]["completionTime"] <= steps[1]["startTime"] and steps[1]["completionTime"] <= steps[2]["startTime"]
    assert status["currentStep"] == "step 3/3 store" and status["attempts"] == 1
    # One Job for the whole run, and `kubectl get -o wide` says where it is.
    header, row = cluster.kubectl("get", "wj", "extract-report", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert header.split()[-2:] == ["STEP", "AGE"]
    assert "step 3/3 store" in row and "Succeeded" in row


def test_kubectl_explain_describes_a_jobs_steps(cluster: Cluster, operator: OperatorProcess) -> None:
    def explained() -> str | None:
        out = cluster.kubectl("explain", "jobs.workers.io.spec.steps", check=False).stdout
        return out if "A sequence (instead of handler)" in out else None

    out = wait_for(explained, timeout=60, what="kubectl explain to show spec.steps")
    for field in ("name", "handler", "timeoutSeconds", "softTimeoutSeconds", "maxAttempts", "retry"):
        assert f"\n  {field}\t" in out or f"  {field} " in out, out
