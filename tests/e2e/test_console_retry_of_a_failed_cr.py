"""The web console (issue 13) with a real operator on the real control plane: a failed Job CR is on
the console's jobs page as the Job CR it is, and a Retry clicked on its page in a real headless
browser moves the CR back to Queued (``status.reruns`` 1, ``kubectl get`` says so) and then, its
pool's workers running again, to Succeeded, which the page shows without a reload."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.operator_fixtures import OperatorProcess, pool_manifest, wait_for
from tests.e2e.test_job_lifecycle import job_yaml, wait_phase
from tests.support.browser import ConsoleProcess, assert_not_reloaded, click, mark_page, text_of, wait_text
from tests.support.cluster import Cluster
from tests.support.console import headless_chrome
from tests.support.pod_runner import PodRunner


@pytest.fixture
def browser() -> Iterator[Any]:
    with headless_chrome() as driver:
        yield driver


def test_a_retry_from_the_console_moves_a_failed_job_cr_back_to_queued_and_then_to_succeeded(  # noqa: PLR0917
    cluster: Cluster, namespace: str, redis_url: str, operator: OperatorProcess, demo_pool: PodRunner,
    browser: Any,
) -> None:
    cluster.apply(pool_manifest(), namespace)  # declares fails_first_run
    cluster.apply(job_yaml("from-the-page", "fails_first_run", {"value": 5}), namespace)
    failed = wait_phase(cluster, namespace, "from-the-page", {"Succeeded", "Failed", "Cancelled"})["status"]
    assert failed["phase"] == "Failed", failed

    console = ConsoleProcess(redis_url, "--namespace", namespace, "--enable-actions")
    try:
        job_id = f"{namespace}/from-the-page"
        browser.get(f"{console.url}/jobs?pool=demo")
        row = text_of(browser, f'tr[data-job="{job_id}"]')
        assert "Failed" in row and "fails_first_run" in row
        click(browser, f"//a[text()='{job_id}']")
        wait_text(browser, "dl.facts", f"Job CR {job_id}")  # the link's page may still be loading

        # Pause the pool (maxReplicas 0) so that the rerun waits, Queued, where the test can see it.
        cluster.kubectl("patch", "wp", "demo", "-n", namespace, "--type=merge", "-p", '{"spec": {"maxReplicas": 0}}')
        wait_for(lambda: not demo_pool.processes(), timeout=90, what="the paused pool's workers to stop")

        click(browser, "//form[@action='/actions/retry']/button")
        wait_text(browser, "p.notice", "Queued again as a new run.")
        queued = wait_phase(cluster, namespace, "from-the-page", {"Queued"})["status"]
        assert (queued["reruns"], queued["attempts"]) == (1, 0)
        assert "Queued" in cluster.kubectl("get", "jobs.workers.io", "from-the-page", "-n", namespace).stdout
        assert "Queued" in text_of(browser, "p.big")
        mark_page(browser)

        cluster.kubectl("patch", "wp", "demo", "-n", namespace, "--type=merge", "-p", '{"spec": {"maxReplicas": 5}}')
        done = wait_phase(cluster, namespace, "from-the-page", {"Succeeded", "Failed", "Cancelled"})["status"]
        assert done["phase"] == "Succeeded", done
        assert (done["reruns"], done["output"]) == (1, {"value": 5, "run": 1, "attempt": 1})
        wait_text(browser, "p.big", "Succeeded", within=60)
        assert_not_reloaded(browser)
    finally:
        console.close()
