"""The web console (issue 13) in a real headless browser (Debian's chromium, selenium) against a real
redis-server, real worker processes and ``kubeworkers ui`` as a real process: the pages show the
pools and jobs, a new job and a running job's progress appear without a reload, a retry from the
page moves a failed job back to Queued and then (a worker running) to Succeeded, an action with
actions disabled or without a valid CSRF token is refused, and a job input holding ``<script>``
is shown as text."""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from kubeworkers import Registry
from kubeworkers.client import Client
from kubeworkers.protocol import JobRecord, JobState, PoolKeys
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By

from hack.polling import wait_for
from tests.support.browser import ConsoleProcess, assert_not_reloaded, click, fresh, mark_page, text_of, wait_text
from tests.support.console import headless_chrome
from tests.support.workers import WorkerProcess

POOL = "p"
KEYS = PoolKeys("default", POOL)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with headless_chrome() as driver:
        yield driver


@pytest.fixture
def sdk(redis_url: str) -> Iterator[Client]:
    with Client(redis_url, registry=Registry()) as c:
        yield c


@pytest.fixture
def console(redis_url: str) -> Iterator[ConsoleProcess]:
    """The console with actions enabled."""
    c = ConsoleProcess(redis_url, "--enable-actions")
    yield c
    c.close()


@pytest.fixture
def read_only_console(redis_url: str) -> Iterator[ConsoleProcess]:
    c = ConsoleProcess(redis_url)
    yield c
    c.close()


@pytest.fixture
def workers(redis_url: str) -> Iterator[Callable[[str], WorkerProcess]]:
    """Start worker processes of pool ``p`` running ``kubeworkers.examples``; all stopped afterwards."""
    started: list[WorkerProcess] = []

    def start(name: str) -> WorkerProcess:
        w = WorkerProcess(redis_url, name, pool=POOL)
        started.append(w)
        w.wait_started()
        return w

    yield start
    for w in started:
        w.close()


def record(r: redis.Redis, job_id: str) -> JobRecord | None:
    raw: Any = r.hgetall(KEYS.record(job_id))
    return JobRecord.from_hash(raw) if raw else None


def wait_state(r: redis.Redis, job_id: str, *states: JobState, within: float = 30) -> JobRecord:
    def reached() -> JobRecord | None:
        rec = record(r, job_id)
        return rec if rec is not None and rec.state in states else None

    return wait_for(reached, within, f"{job_id} to be {'/'.join(s.value for s in states)}", every=0.05)


def post(url: str, fields: dict[str, str], headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=urllib.parse.urlencode(fields).encode(), method="POST",
                                     headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def failed_job(sdk: Client, r: redis.Redis, workers: Callable[[str], WorkerProcess], job_id: str) -> WorkerProcess:
    """A job of ``fails_first_run`` (fails on run 0, succeeds when rerun) that has failed; its worker."""
    w = workers("w-first")
    sdk.submit(POOL, "fails_first_run", {"value": 7}, job_id=job_id)
    wait_state(r, job_id, JobState.FAILED)
    return w


# --------------------------------------------------------------------------- pages


def test_pools_and_jobs_pages_show_the_pools_and_their_jobs(
    browser: Any, console: ConsoleProcess, sdk: Client, redis_sync: redis.Redis,
    workers: Callable[[str], WorkerProcess],
) -> None:
    workers("w1")
    ok = sdk.submit(POOL, "word_count", {"text": "to be or not to be"})
    bad = sdk.submit(POOL, "fail", {"message": "broken on purpose"})
    wait_state(redis_sync, ok, JobState.SUCCEEDED)
    wait_state(redis_sync, bad, JobState.FAILED)

    browser.get(console.url + "/")
    assert browser.title.startswith("Pools")
    row = f"//tbody/tr[th/a[text()='{POOL}']]"
    assert "1, 0/4 slots busy" in text_of(browser, row, By.XPATH)  # one idle worker of 4 slots
    assert sorted(fresh(lambda: [r.get_attribute("class")
                                 for r in browser.find_elements(By.CSS_SELECTOR, "svg.spark rect")])) == ["bad", "ok"]
    click(browser, row + f"//a[text()='{POOL}']")

    wait_for(lambda: fresh(lambda: str(browser.title)).startswith(f"Jobs of {POOL}"), 10, "the pool's jobs page",
             every=0.1)
    ok_row = text_of(browser, f'tr[data-job="{ok}"]')
    assert "Succeeded" in ok_row and "word_count" in ok_row
    bad_row = text_of(browser, f'tr[data-job="{bad}"]')
    assert "Failed" in bad_row and "RuntimeError: broken on purpose" in bad_row

    # The filter form is the CLI's jobs list: only the failed one.
    browser.find_element(By.CSS_SELECTOR, "select[name=state] option[value=Failed]").click()
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    # The form's GET answers with a new page: read until it is that page (the old one lists both).
    wait_for(lambda: fresh(lambda: [el.get_attribute("data-job")
                                    for el in browser.find_elements(By.CSS_SELECTOR, "tr[data-job]")]) == [bad],
             10, "the filtered page to list only the failed job", every=0.1)

    # The job page: input, output, attempts.
    browser.get(f"{console.url}/job?pool={POOL}&id={ok}")
    assert '"text": "to be or not to be"' in text_of(browser, "//section[h2='Input']/pre", By.XPATH)
    assert '"words": 6' in text_of(browser, "//section[h2='Output']/pre", By.XPATH)
    attempts = text_of(browser, "//section[h2='Attempts']//tbody", By.XPATH)
    assert "w1" in attempts and "Succeeded" in attempts
    assert browser.find_elements(By.CSS_SELECTOR, "svg.timeline rect")

    # Dead letters say why; handlers have their numbers.
    browser.get(f"{console.url}/dead-letters?pool={POOL}")
    assert "RuntimeError: broken on purpose" in wait_text(browser, "tbody tr", bad)
    browser.get(f"{console.url}/handlers?pool={POOL}")
    fail_row = text_of(browser, "//tbody/tr[th/a[text()='fail']]", By.XPATH).split()
    assert fail_row[:5] == ["fail", "1", "0", "1", "100.0%"]


def test_the_jobs_page_shows_new_jobs_and_progress_without_a_reload(
    browser: Any, console: ConsoleProcess, sdk: Client, redis_sync: redis.Redis,
    workers: Callable[[str], WorkerProcess],
) -> None:
    workers("w1")
    first = sdk.submit(POOL, "word_count", {"text": "one"})
    wait_state(redis_sync, first, JobState.SUCCEEDED)
    browser.get(f"{console.url}/jobs?pool={POOL}")
    text_of(browser, f'tr[data-job="{first}"]')
    mark_page(browser)

    running = sdk.submit(POOL, "slow", {"seconds": 4, "steps": 4})
    # The running job's row appears with a progress bar that moves, then it succeeds.
    row = f'tr[data-job="{running}"]'
    wait_text(browser, row, "Running")
    values: set[str] = set()

    def moved() -> bool:
        values.update(fresh(lambda: [str(bar.get_attribute("value"))
                                     for bar in browser.find_elements(By.CSS_SELECTOR, f"{row} progress")]))
        return len(values - {"0", "0.000"}) >= 2

    wait_for(moved, 20, "the progress bar to move", every=0.1)
    wait_text(browser, row, "Succeeded")
    assert_not_reloaded(browser)


def test_the_pages_read_whole_with_javascript_off(
    console: ConsoleProcess, sdk: Client, redis_sync: redis.Redis, workers: Callable[[str], WorkerProcess],
) -> None:
    workers("w1")
    done = sdk.submit(POOL, "word_count", {"text": "no script needed"})
    wait_state(redis_sync, done, JobState.SUCCEEDED)
    with headless_chrome(javascript=False) as plain:
        plain.get(f"{console.url}/jobs?pool={POOL}")
        assert "Succeeded" in text_of(plain, f'tr[data-job="{done}"]')
        later = sdk.submit(POOL, "word_count", {"text": "later"})
        wait_state(redis_sync, later, JobState.SUCCEEDED)
        time.sleep(3)  # longer than the live refresh: nothing refreshes without the script
        assert not plain.find_elements(By.CSS_SELECTOR, f'tr[data-job="{later}"]')
        assert plain.find_element(By.TAG_NAME, "body").get_attribute("data-refreshed") is None  # console.js never ran
        click(plain, "//a[@class='reload']")
        assert "Succeeded" in text_of(plain, f'tr[data-job="{later}"]')
        click(plain, f"//a[text()='{done}']")
        assert '"no script needed"' in text_of(plain, "//section[h2='Input']/pre", By.XPATH)
        for page in ("/", f"/dead-letters?pool={POOL}", f"/handlers?pool={POOL}"):
            plain.get(console.url + page)
            assert POOL in text_of(plain, "main")
        assert "word_count" in text_of(plain, "main")  # the handlers page's row


# --------------------------------------------------------------------------- actions


def test_a_retry_from_the_page_moves_a_failed_job_back_to_queued_then_succeeded(
    browser: Any, console: ConsoleProcess, sdk: Client, redis_sync: redis.Redis,
    workers: Callable[[str], WorkerProcess],
) -> None:
    first = failed_job(sdk, redis_sync, workers, "to-retry")
    first.terminate()
    assert first.wait(30) == 0  # no worker now: the rerun waits, Queued, where the page can see it

    browser.get(f"{console.url}/job?pool={POOL}&id=to-retry")
    assert "Failed" in text_of(browser, "p.big")
    assert "RuntimeError: run 0 fails" in text_of(browser, "section p.err")
    click(browser, "//form[@action='/actions/retry']/button")

    assert browser.title.startswith("Job to-retry"), text_of(browser, "main")
    wait_text(browser, "p.notice", "Queued again as a new run.")  # the POST's redirect may still be loading
    assert "Queued" in text_of(browser, "p.big")
    rec = record(redis_sync, "to-retry")
    assert rec is not None and rec.state is JobState.QUEUED and rec.run == 1
    assert "job to-retry: rerun 1 queued on pool p" in console.log()  # every action is a log line
    mark_page(browser)

    workers("w-second")
    wait_text(browser, "p.big", "Succeeded")
    assert_not_reloaded(browser)
    assert "run 1" in text_of(browser, "dl.facts")
    attempts = text_of(browser, "//section[h2='Attempts']//tbody", By.XPATH)
    assert "w-first" in attempts and "w-second" in attempts
    rec = record(redis_sync, "to-retry")  # the page shows the record's truth (an SDK job has no events)
    assert rec is not None and (rec.run, rec.state) == (1, JobState.SUCCEEDED)


def test_actions_are_refused_when_disabled_or_without_a_valid_csrf_token(  # noqa: PLR0917 (fixtures)
    browser: Any, console: ConsoleProcess, read_only_console: ConsoleProcess, sdk: Client,
    redis_sync: redis.Redis, workers: Callable[[str], WorkerProcess],
) -> None:
    failed_job(sdk, redis_sync, workers, "stays-failed")

    # Read-only: no buttons, and a POST is refused.
    browser.get(f"{read_only_console.url}/job?pool={POOL}&id=stays-failed")
    assert "read-only" in text_of(browser, "header")
    assert not browser.find_elements(By.CSS_SELECTOR, "form.action")
    status, body = post(read_only_console.url + "/actions/retry", {"pool": POOL, "id": "stays-failed"})
    assert status == 403 and "actions are disabled" in body

    # Actions on: no cookie and no token; a made-up token; a page whose token was tampered with;
    # a request from another site's page (its Origin) — each refused.
    assert post(console.url + "/actions/retry", {"pool": POOL, "id": "stays-failed"})[0] == 403
    status, body = post(console.url + "/actions/retry", {"pool": POOL, "id": "stays-failed", "csrf": "0" * 64},
                        {"Cookie": "kw_console=made-up"})
    assert status == 403 and "CSRF" in body
    browser.get(f"{console.url}/job?pool={POOL}&id=stays-failed")
    # Tamper and submit in one script: a live refresh in between would bring the real token back.
    browser.execute_script("const f = document.querySelector(\"form[action='/actions/retry']\");"
                           "f.querySelector('input[name=csrf]').value = 'x'; f.submit();")
    wait_for(lambda: browser.title.startswith("403"), 10, "the refusal page")
    assert browser.title.startswith("403")
    assert "invalid CSRF token" in text_of(browser, "p.error")
    cookie = browser.get_cookie("kw_console")["value"]
    browser.get(f"{console.url}/job?pool={POOL}&id=stays-failed")
    token = fresh(lambda: browser.find_element(By.CSS_SELECTOR, "input[name=csrf]").get_attribute("value"))
    status, body = post(console.url + "/actions/retry", {"pool": POOL, "id": "stays-failed", "csrf": token},
                        {"Cookie": f"kw_console={cookie}", "Origin": "http://evil.example"})
    assert status == 403 and "another site" in body
    # A page of another site whose name was re-pointed at 127.0.0.1 (DNS rebinding) is not answered.
    port = urllib.parse.urlsplit(console.url).port
    with pytest.raises(urllib.error.HTTPError) as rebound:
        urllib.request.urlopen(urllib.request.Request(f"{console.url}/job?pool={POOL}&id=stays-failed",
                                                      headers={"Host": f"evil.example:{port}"}), timeout=10)
    assert rebound.value.code == 421
    # A GET never acts.
    with pytest.raises(urllib.error.HTTPError) as got:
        urllib.request.urlopen(f"{console.url}/actions/retry?pool={POOL}&id=stays-failed", timeout=10)
    assert got.value.code == 405

    time.sleep(0.5)
    rec = record(redis_sync, "stays-failed")
    assert rec is not None and rec.state is JobState.FAILED and rec.run == 0


def test_cancel_and_replay_from_the_pages(
    browser: Any, console: ConsoleProcess, sdk: Client, redis_sync: redis.Redis,
    workers: Callable[[str], WorkerProcess],
) -> None:
    workers("w1")
    long = sdk.submit(POOL, "slow", {"seconds": 60, "steps": 60}, job_id="long-one")
    wait_state(redis_sync, long, JobState.RUNNING)
    browser.get(f"{console.url}/job?pool={POOL}&id=long-one")
    assert not browser.find_elements(By.XPATH, "//form[@action='/actions/retry']")  # not failed: no retry
    click(browser, "//form[@action='/actions/cancel']/button")
    wait_text(browser, "p.notice", "Cancel requested.")  # the POST's redirect may still be loading
    mark_page(browser)
    wait_text(browser, "p.big", "Cancelled")
    assert_not_reloaded(browser)
    assert not browser.find_elements(By.CSS_SELECTOR, "form.action")  # finished: nothing left to do

    sdk.submit(POOL, "fails_first_run", {"value": 1}, job_id="dead-one")
    wait_state(redis_sync, "dead-one", JobState.FAILED)
    browser.get(f"{console.url}/dead-letters?pool={POOL}")
    row = "//tbody/tr[td/a[text()='dead-one']]"
    assert "fails_first_run" in text_of(browser, row, By.XPATH) and "run 0 fails" in text_of(browser, row, By.XPATH)
    click(browser, row + "//form[@action='/actions/replay']/button")
    wait_text(browser, "p.notice", "Replayed")  # the POST's redirect may still be loading
    rec = wait_state(redis_sync, "dead-one", JobState.SUCCEEDED)
    assert rec.run == 1
    wait_text(browser, "#live", "no dead letters")


# --------------------------------------------------------------------------- escaping, validation


def test_a_job_input_holding_script_is_shown_as_text(
    browser: Any, console: ConsoleProcess, sdk: Client, redis_sync: redis.Redis,
    workers: Callable[[str], WorkerProcess],
) -> None:
    workers("w1")
    hostile = "<script>document.title='pwned';alert(1)</script><img src=x onerror=alert(2)>"
    job_id = sdk.submit(POOL, "fail", {"message": hostile}, job_id="<b>bold</b>")
    wait_state(redis_sync, job_id, JobState.FAILED)

    for page in (f"/job?{urllib.parse.urlencode({'pool': POOL, 'id': job_id})}", f"/jobs?pool={POOL}",
                 f"/dead-letters?pool={POOL}"):
        browser.get(console.url + page)
        time.sleep(2.5)  # one live refresh too: what the script swaps in is escaped as well
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert.text  # noqa: B018
        assert "pwned" not in browser.title
        assert not browser.find_elements(By.XPATH, "//main//b[text()='bold']")
        assert not browser.find_elements(By.XPATH, "//main//img")
        assert "<b>bold</b>" in text_of(browser, "main")
    assert hostile in text_of(browser, "main")  # the dead letter's reason, as text
    browser.get(console.url + f"/job?{urllib.parse.urlencode({'pool': POOL, 'id': job_id})}")
    assert hostile in text_of(browser, "//section[h2='Input']/pre", By.XPATH)


def test_a_bad_filter_is_a_400_page_with_one_line_and_no_secret(
    browser: Any, redis_url: str, sdk: Client, redis_sync: redis.Redis,
) -> None:
    # A password in the URL: the server has none, so Redis takes the AUTH of the default user as it is.
    secret_url = redis_url.replace("redis://", "redis://default:s3cret-pass@")
    c = ConsoleProcess(secret_url, "--enable-actions")
    try:
        for query, said in [("pool=p&state=bogus", "state must be one of"),
                            ("pool=p&since=soon", "since must be a duration"), ("pool=p&limit=0", "limit must be"),
                            ("pool=a%20b", "pool must be a pool name"),
                            ("pool=p&colour=red", "unknown query parameter 'colour'")]:
            browser.get(f"{c.url}/jobs?{query}")
            assert browser.title.startswith("400"), query
            assert said in text_of(browser, "p.error"), query
        for page in ("/", f"/jobs?pool={POOL}", f"/handlers?pool={POOL}", f"/dead-letters?pool={POOL}"):
            browser.get(c.url + page)
            assert "s3cret" not in browser.page_source
        assert "s3cret" not in c.log()
    finally:
        c.close()
