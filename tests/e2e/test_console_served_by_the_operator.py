"""The web console served by the operator itself (``--console-port``, the chart's ``ui.enabled``), on
the real control plane with a real Redis, real worker processes and a real headless Chromium:

- the pools page shows the demo pool with what only the apiserver knows (replicas and their bounds,
  the autoscaler's last decision, a replicas-and-backlog timeline), a Job CR's page its Events;
- an action is authorised the Kubernetes way: with no token it is refused, with the token of a
  ServiceAccount the apiserver authenticates but RBAC does not let update the Job it is refused,
  and with that of one it does, a Retry moves the failed Job CR back to Queued and then Succeeded;
- a job input holding ``<script>`` is shown as text, and never runs;
- no token reaches a page or the operator's log;
- each pool is read on its own Redis (a pool naming a Secret of its own is read there), and that
  Redis's password reaches no page and no log line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from selenium.webdriver.common.by import By

from hack.net import free_port
from tests.e2e.operator_fixtures import LOG_ROOT, OperatorProcess, pool_manifest, wait_for
from tests.e2e.test_job_lifecycle import job_yaml, wait_phase
from tests.support.browser import click, fresh, text_of, wait_text
from tests.support.cluster import Cluster
from tests.support.console import headless_chrome
from tests.support.pod_runner import PodRunner
from tests.support.redis_fixtures import private_redis
from tests.support.redis_server import RedisServer

PASSWORD = "beta-only-console-s3cret"
ALLOWED = "console-operator"
DENIED = "console-reader"
#: Set to a directory to save the operator-served pages there (docs/console.md's screenshots of this mode).
SHOTS = os.environ.get("KUBEWORKERS_CONSOLE_SCREENSHOTS")


def shoot(browser: Any, url: str, name: str) -> None:
    if SHOTS:
        from hack.console_screenshots import shoot as photograph

        photograph(browser, url, Path(SHOTS) / name)


@pytest.fixture
def browser() -> Iterator[Any]:
    with headless_chrome() as driver:
        yield driver


@pytest.fixture
def beta_redis() -> Iterator[RedisServer]:
    """A second redis-server, with a password: the Redis of a pool that names a Secret of its own."""
    yield from private_redis(password=PASSWORD)


@pytest.fixture
def console_operator(cluster: Cluster, crds: None, namespace: str, redis_url: str, redis_secret: str,  # noqa: PLR0917
                     request: pytest.FixtureRequest) -> Iterator[tuple[OperatorProcess, str]]:
    """An operator serving the test's namespace with its console on (actions enabled); and its URL."""
    port = free_port()
    op = OperatorProcess(cluster, redis_url, [namespace], LOG_ROOT / request.node.name, [
        "--console-port", str(port), "--console-enable-actions", "--console-sample-interval", "1"])
    op.start()
    yield op, f"http://127.0.0.1:{port}"
    op.stop()


@pytest.fixture
def sign_in_to_read_operator(  # noqa: PLR0917
    cluster: Cluster, crds: None, namespace: str, redis_url: str, redis_secret: str, request: pytest.FixtureRequest,
) -> Iterator[tuple[OperatorProcess, str]]:
    """An operator whose console is read-only and needs a sign-in for every page."""
    port = free_port()
    op = OperatorProcess(cluster, redis_url, [namespace], LOG_ROOT / request.node.name, [
        "--console-port", str(port), "--console-require-sign-in"])
    op.start()
    yield op, f"http://127.0.0.1:{port}"
    op.stop()


@pytest.fixture
def workers(cluster: Cluster, namespace: str, console_operator: tuple[OperatorProcess, str],
            request: pytest.FixtureRequest) -> Iterator[PodRunner]:
    runner = PodRunner(cluster, namespace, "workers.io/pool", extra_env={"KUBEWORKERS_METRICS_PORT": "0"},
                       log_dir=LOG_ROOT / request.node.name / "pods")
    with runner:
        yield runner


def service_account_token(cluster: Cluster, namespace: str, name: str, *, may_update: bool,
                          verb: str = "update") -> str:
    """A ServiceAccount's token; with ``may_update``, a Role letting it ``verb`` Jobs and WorkerPools."""
    cluster.kubectl("create", "serviceaccount", name, "-n", namespace)
    if may_update:
        cluster.kubectl("create", "role", name, "-n", namespace, f"--verb={verb}",
                        "--resource=jobs.workers.io,workerpools.workers.io")
        cluster.kubectl("create", "rolebinding", name, "-n", namespace, f"--role={name}",
                        f"--serviceaccount={namespace}:{name}")
    token = cluster.kubectl("create", "token", name, "-n", namespace, "--duration=1h").stdout.strip()
    assert token.count(".") == 2, "not a JWT"
    return token


def sign_in(browser: Any, url: str, token: str, *, answers: tuple[str, ...] = ("Signed in", "sign-in refused")) -> str:
    browser.get(f"{url}/login")
    browser.find_element(By.NAME, "token").send_keys(token)
    click(browser, "//form[@action='/login']/button")

    def answered() -> str | None:
        # Mid-navigation (the POST, its 303, the next page) the document may have no <body> yet:
        # that is "not answered yet", never an error, so find_elements rather than find_element.
        body = "".join(fresh(lambda: [str(el.text) for el in browser.find_elements(By.TAG_NAME, "body")]))
        return body if any(a in body for a in answers) else None

    return wait_for(answered, timeout=30, what="the sign-in's answer")


def sign_out(browser: Any) -> None:
    click(browser, "//form[@action='/logout']/button")
    wait_text(browser, "p.notice", "Signed out.")


def test_the_operator_serves_the_console_and_authorises_each_action_with_the_apiserver(
    cluster: Cluster, namespace: str, console_operator: tuple[OperatorProcess, str], workers: PodRunner,
    browser: Any,
) -> None:
    operator, url = console_operator
    cluster.apply(pool_manifest(), namespace)
    cluster.apply(job_yaml("from-the-page", "fails_first_run", {"value": 5}), namespace)
    script = "<script>window.kwPwned = 1</script><img src=x onerror=\"window.kwPwned = 2\">"
    cluster.apply(job_yaml("scripted", "word_count", {"text": script}), namespace)
    failed = wait_phase(cluster, namespace, "from-the-page", {"Succeeded", "Failed", "Cancelled"})["status"]
    assert failed["phase"] == "Failed", failed
    wait_phase(cluster, namespace, "scripted", {"Succeeded"})
    allowed = service_account_token(cluster, namespace, ALLOWED, may_update=True)
    denied = service_account_token(cluster, namespace, DENIED, may_update=False)

    # The pools page: the demo pool with its replicas and bounds from the WorkerPool, the
    # autoscaler's last decision, and (sampled every second) the replicas-and-backlog timeline.
    reason = cluster.kubectl("get", "wp", "demo", "-n", namespace, "-o", "jsonpath={.status.lastScaleReason}").stdout
    assert reason, "the autoscaler has decided nothing yet"
    browser.get(f"{url}/")
    row = text_of(browser, 'tr[data-pool="demo"]')
    assert "(0-5)" in row, row
    assert reason.split()[0] in text_of(browser, 'tr[data-pool="demo"] td.decision')
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, 'tr[data-pool="demo"] svg.replicas polyline.ready'),
             timeout=30, what="the replicas timeline")
    shoot(browser, f"{url}/", "operator-pools.png")

    # The failed Job CR's page: the job from Redis, and its Job CR and Events from the apiserver.
    job_id = f"{namespace}/from-the-page"
    browser.get(f"{url}/jobs?pool=demo")
    assert "Failed" in text_of(browser, f'tr[data-job="{job_id}"]')
    click(browser, f"//a[text()='{job_id}']")
    wait_text(browser, "dl.facts", f"Job CR {job_id}")  # the link's page may still be loading
    events = text_of(browser, "section.kube-events")
    assert f"Events of Job CR {job_id}" in events and "no Events" not in events, events
    shoot(browser, f"{url}/job?pool=demo&id={job_id}", "operator-job.png")
    shoot(browser, f"{url}/login", "operator-sign-in.png")
    browser.get(f"{url}/job?pool=demo&id={job_id}")

    # Pause the pool (maxReplicas 0) so that the rerun waits, Queued, where the test can see it.
    cluster.kubectl("patch", "wp", "demo", "-n", namespace, "--type=merge", "-p", '{"spec": {"maxReplicas": 0}}')
    wait_for(lambda: not workers.processes(), timeout=90, what="the paused pool's workers to stop")

    # No token: refused, and the Job stays Failed.
    click(browser, "//form[@action='/actions/retry']/button")
    wait_text(browser, "p.error", "not authorised: no bearer token")

    # A token the apiserver authenticates, of a user RBAC does not let update the Job: refused.
    assert "Signed in" in sign_in(browser, url, denied)
    browser.get(f"{url}/job?pool=demo&id={job_id}")
    click(browser, "//form[@action='/actions/retry']/button")
    wait_text(browser, "p.error", f"system:serviceaccount:{namespace}:{DENIED} may not update on jobs.workers.io")
    sign_out(browser)

    # A token that is no token at all: the sign-in itself is refused.
    assert "sign-in refused: the apiserver did not authenticate the token" in sign_in(browser, url, "not-a-token")
    status = wait_phase(cluster, namespace, "from-the-page", {"Failed"})["status"]
    assert status.get("reruns", 0) == 0, status

    # The allowed user: the Retry goes through, the CR goes Queued, then Succeeded once workers run.
    assert "Signed in" in sign_in(browser, url, allowed)
    browser.get(f"{url}/job?pool=demo&id={job_id}")
    click(browser, "//form[@action='/actions/retry']/button")
    wait_text(browser, "p.notice", "Queued again as a new run.")
    queued = wait_phase(cluster, namespace, "from-the-page", {"Queued"})["status"]
    assert (queued["reruns"], queued["attempts"]) == (1, 0)
    cluster.kubectl("patch", "wp", "demo", "-n", namespace, "--type=merge", "-p", '{"spec": {"maxReplicas": 5}}')
    done = wait_phase(cluster, namespace, "from-the-page", {"Succeeded", "Failed", "Cancelled"})["status"]
    assert done["phase"] == "Succeeded", done
    assert (done["reruns"], done["output"]) == (1, {"value": 5, "run": 1, "attempt": 1})
    wait_text(browser, "p.big", "Succeeded", within=60)

    # The script input is shown as text, on the operator-served page too, and ran nowhere.
    browser.get(f"{url}/job?pool=demo&id={namespace}/scripted")
    shown = text_of(browser, "main")
    assert "<script>window.kwPwned = 1</script>" in shown
    assert browser.execute_script("return window.kwPwned === undefined;") is True
    assert "<script>window.kwPwned" not in browser.page_source  # escaped in the markup

    # No token anywhere it should not be: not in a page, not in the operator's log.
    pages = browser.page_source
    log = "".join(p.read_text(errors="replace") for p in operator.log_dir.glob("operator-*.log"))
    for token in (allowed, denied):
        assert token not in pages and token[-40:] not in log
    assert f"system:serviceaccount:{namespace}:{ALLOWED} signed in" in log
    assert f"by system:serviceaccount:{namespace}:{ALLOWED}" in log
    assert json.dumps(operator.redis_url) not in pages


def test_each_pool_is_read_on_its_own_redis_and_no_password_reaches_a_page(  # noqa: PLR0917
    cluster: Cluster, namespace: str, console_operator: tuple[OperatorProcess, str], workers: PodRunner,
    beta_redis: RedisServer, browser: Any,
) -> None:
    operator, url = console_operator
    beta_url = f"redis://:{PASSWORD}@127.0.0.1:{beta_redis.port}/0"
    cluster.kubectl("create", "secret", "generic", "beta-redis", "-n", namespace, f"--from-literal=url={beta_url}")
    cluster.apply(pool_manifest("alpha"), namespace)
    cluster.apply(pool_manifest("beta", redis={"secretName": "beta-redis"}), namespace)
    cluster.apply(job_yaml("count-a", "word_count", {"text": "a b a"}, pool="alpha"), namespace)
    cluster.apply(job_yaml("count-b", "word_count", {"text": "b b b c"}, pool="beta"), namespace)
    for name in ("count-a", "count-b"):
        assert wait_phase(cluster, namespace, name, {"Succeeded", "Failed"}, timeout=120)["status"]["phase"] == \
            "Succeeded"

    seen = []
    browser.get(f"{url}/")
    assert text_of(browser, 'tr[data-pool="alpha"]') and text_of(browser, 'tr[data-pool="beta"]')
    seen.append(browser.page_source)
    for pool, name, words in (("alpha", "count-a", '"a": 2'), ("beta", "count-b", '"c": 1')):
        browser.get(f"{url}/jobs?pool={pool}")
        assert "Succeeded" in text_of(browser, f'tr[data-job="{namespace}/{name}"]')
        seen.append(browser.page_source)
        browser.get(f"{url}/job?pool={pool}&id={namespace}/{name}")
        assert words in text_of(browser, "//section[h2='Output']/pre", By.XPATH)
        seen.append(browser.page_source)
    # beta's job is on beta's Redis only: the operator's own has no job of pool beta to show.
    own = redis.Redis.from_url(operator.redis_url)
    try:
        assert not own.keys(f"kw:{{{namespace}/beta}}:*")
    finally:
        own.close()
    log = "".join(p.read_text(errors="replace") for p in operator.log_dir.glob("operator-*.log"))
    for text in (*seen, log):
        assert PASSWORD not in text and beta_url not in text


def test_with_require_sign_in_only_a_user_who_may_list_the_jobs_reads_the_console(
    cluster: Cluster, namespace: str, sign_in_to_read_operator: tuple[OperatorProcess, str], browser: Any,
) -> None:
    operator, url = sign_in_to_read_operator
    cluster.apply(pool_manifest(), namespace)
    reader = service_account_token(cluster, namespace, "console-lister", may_update=True, verb="list")
    stranger = service_account_token(cluster, namespace, DENIED, may_update=False)

    browser.get(f"{url}/jobs?pool=demo")  # not signed in: sent to the sign-in page
    wait_for(lambda: browser.current_url == f"{url}/login", timeout=10, what="the redirect to /login")
    # The apiserver knows the token (the sign-in goes through), but its user may not read.
    refused = sign_in(browser, url, stranger, answers=("not authorised to read",))
    assert f"system:serviceaccount:{namespace}:{DENIED} may not list on jobs.workers.io" in refused, refused
    assert not browser.find_elements(By.CSS_SELECTOR, 'tr[data-pool="demo"]')
    sign_out(browser)

    assert "Signed in" in sign_in(browser, url, reader)
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, 'tr[data-pool="demo"]'), timeout=30,
             what="the pools page, signed in as a user who may list the Jobs")
    assert not browser.find_elements(By.XPATH, "//form[starts-with(@action, '/actions/')]")  # read-only
    log = "".join(p.read_text(errors="replace") for p in operator.log_dir.glob("operator-*.log"))
    assert reader[-40:] not in log and stranger[-40:] not in log
