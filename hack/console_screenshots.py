"""Screenshots of the web console from a real run, for docs/console.md (PNG files in docs/console/).

Starts a private redis-server, a worker of pool ``demo`` running ``kubeworkers.examples``, and
``kubeworkers ui --enable-actions``, all on free loopback ports; submits a mix of jobs (successes,
a retried one, a fan-out with children, failures that end in the dead-letter stream, a long one
that reports progress, one whose input holds ``<script>``); retries a failed job from its page;
then photographs each page with headless chromium. Everything it started ends with it.

    .venv/bin/python -m hack.console_screenshots [--out docs/console]
"""

from __future__ import annotations

import argparse
import base64
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kubeworkers import Registry
from kubeworkers.client import Client
from kubeworkers.protocol import JobState

from hack import processes
from hack.browser import chrome
from hack.net import free_port
from hack.polling import wait_for

REPO = Path(__file__).resolve().parent.parent
POOL = "demo"


@contextmanager
def started(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = processes.spawn(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def settled(client: Client, job_id: str, *states: JobState) -> None:
    def reached() -> bool:
        rec = client.get(job_id, pool=POOL)
        return rec is not None and rec.state in states

    wait_for(reached, 60, f"{job_id} to be {'/'.join(s.value for s in states)}", every=0.1)


def submit_demo(client: Client) -> dict[str, str]:
    """The jobs the screenshots show; their ids by role."""
    ids: dict[str, str] = {}
    for text in ("the quick brown fox", "jumps over the lazy dog", "to be or not to be"):
        ids["word_count"] = client.submit(POOL, "word_count", {"text": text})
    ids["flaky"] = client.submit(POOL, "flaky", {"value": 42}, job_id="flaky-import-42")
    ids["fan_out"] = client.submit(POOL, "fan_out", {"n": 6}, job_id="nightly-fan-out")
    ids["fail"] = client.submit(POOL, "fail", {"message": "upstream returned 503"}, job_id="sync-billing-7")
    ids["retried"] = client.submit(POOL, "fails_first_run", {"value": 7}, job_id="report-2026-12-03")
    ids["script"] = client.submit(POOL, "word_count", {"text": "<script>alert('hi')</script> is shown as text"},
                                  job_id="hostile-input")
    for key in ("flaky", "fan_out", "script"):
        settled(client, ids[key], JobState.SUCCEEDED)
    for key in ("fail", "retried"):
        settled(client, ids[key], JobState.FAILED)
    return ids


def shoot(browser: Any, url: str, path: Path, *, wait_css: str = "main") -> None:
    from selenium.webdriver.common.by import By

    browser.get(url)
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, wait_css), 20, f"{wait_css} on {url}")
    time.sleep(0.3)
    # The whole page (up to 1800 px), not the window: chromium's own capture beyond the viewport.
    size = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": 1280, "height": min(max(int(size["height"]), 400), 1800), "scale": 1}
    shot = browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                              "clip": clip})
    path.write_bytes(base64.b64decode(shot["data"]))
    print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "console", help="where the PNG files go")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="kw-shots-"))
    redis_port, ui_port = free_port(), free_port()
    url = f"redis://127.0.0.1:{redis_port}"
    python = sys.executable
    with (started(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--dir", str(work)], work / "redis.log"),
          started([python, "-m", "kubeworkers", "worker", "--redis-url", url, "--pool", POOL, "--import",
                   "kubeworkers.examples", "--metrics-port", "0", "--concurrency", "4", "--name", "demo-worker-0"],
                  work / "worker.log"),
          started([python, "-m", "kubeworkers", "ui", "--redis-url", url, "--port", str(ui_port),
                   "--enable-actions"], work / "ui.log"),
          Client(url, registry=Registry()) as client):
        wait_for(lambda: "worker started" in (work / "worker.log").read_text(errors="replace"), 30, "the worker")
        ids = submit_demo(client)
        slow = client.submit(POOL, "slow", {"seconds": 120, "steps": 40}, job_id="resize-batch-3")
        console = f"http://127.0.0.1:{ui_port}"
        wait_for(lambda: "serving" in (work / "ui.log").read_text(errors="replace"), 30, "the console")
        browser = chrome()
        try:
            from selenium.webdriver.common.by import By

            # Retry the failed report from its page, as a user would (it succeeds on its rerun).
            browser.get(f"{console}/job?pool={POOL}&id={ids['retried']}")
            browser.find_element(By.XPATH, "//form[@action='/actions/retry']/button").click()
            settled(client, ids["retried"], JobState.SUCCEEDED)
            wait_for(lambda: (r := client.get(slow, pool=POOL)) is not None and (r.progress or 0) > 0.1, 60,
                     "the slow job to report progress")
            shoot(browser, f"{console}/", out / "pools.png")
            shoot(browser, f"{console}/jobs?pool={POOL}", out / "jobs.png", wait_css="tr[data-job]")
            shoot(browser, f"{console}/job?pool={POOL}&id={slow}", out / "job-running.png")
            shoot(browser, f"{console}/job?pool={POOL}&id={ids['retried']}&done=retried", out / "job-retried.png")
            shoot(browser, f"{console}/job?pool={POOL}&id={ids['fan_out']}", out / "job-children.png")
            shoot(browser, f"{console}/job?pool={POOL}&id={ids['script']}", out / "job-script-input.png")
            shoot(browser, f"{console}/dead-letters?pool={POOL}", out / "dead-letters.png")
            shoot(browser, f"{console}/handlers?pool={POOL}", out / "handlers.png")
        finally:
            browser.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
