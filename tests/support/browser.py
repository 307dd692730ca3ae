"""The web console as a real process (``python -m kubeworkers ui``) and reading its pages in selenium,
for the console's browser tests (the browser itself: :func:`hack.browser.chrome`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By

from hack import processes
from hack.polling import WaitTimeout, wait_for

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


class ConsoleProcess:
    """``python -m kubeworkers ui`` on a free port, logging to a file; ``url`` is its address."""

    def __init__(self, redis_url: str, *args: str) -> None:
        self.log_path = Path(tempfile.mkdtemp(prefix="kw-console-")) / "ui.log"
        self._log = self.log_path.open("wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBEWORKERS_")}
        env["PYTHONPATH"] = str(REPO)
        self.proc = processes.spawn([sys.executable, "-m", "kubeworkers", "ui", "--redis-url", redis_url,
                                     "--port", "0", *args], env=env, cwd=REPO, stdout=self._log,
                                    stderr=subprocess.STDOUT)
        try:
            port = wait_for(self._port, 30, "the console to listen", every=0.05)
        except WaitTimeout as exc:
            self.close()
            raise AssertionError(f"{exc}:\n{self.log()}") from None
        self.url = f"http://127.0.0.1:{port}"

    def _port(self) -> int | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"the console exited early:\n{self.log()}")
        m = re.search(r"on http://127\.0\.0\.1:(\d+)/", self.log())
        return int(m.group(1)) if m else None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


# What chromedriver answers when the document an element belonged to was torn down (a navigation, a
# form's POST answered with a new page) between finding the element and reading it: DevTools no longer
# knows the element's JavaScript context. Seen in CI as "unknown error: unhandled inspector error:
# {"code":-32000,"message":"Cannot find context with specified id"}", or, when the read's script is
# cut off by the unload, "javascript error: document unloaded while waiting for result". Like a
# stale element, it means "read the new page again", never a fault of the page under test.
SWAPPED_DOCUMENT = ("Cannot find context with specified id", "unhandled inspector error",
                    "Execution context was destroyed", "document unloaded while waiting for result")


def swapped_away(exc: WebDriverException) -> bool:
    """``exc`` says only that the element's page was replaced while it was read."""
    if isinstance(exc, StaleElementReferenceException):
        return True
    message = exc.msg or ""
    return any(sign in message for sign in SWAPPED_DOCUMENT)


def fresh(read: Callable[[], T]) -> T:
    """``read()`` again if the page's live refresh or a navigation swapped the element away while it
    was read (:func:`swapped_away`); any other browser error is raised at once."""
    for _ in range(20):
        try:
            return read()
        except WebDriverException as exc:
            if not swapped_away(exc):
                raise
            time.sleep(0.05)
    return read()


def text_of(browser: Any, css: str, by: str = By.CSS_SELECTOR) -> str:
    return fresh(lambda: str(browser.find_element(by, css).text))


def click(browser: Any, xpath: str) -> None:
    fresh(lambda: browser.find_element(By.XPATH, xpath).click())


def wait_text(browser: Any, css: str, want: str, within: float = 30) -> str:
    """Wait until the element ``css`` shows ``want`` (the page's own polling brings it: no reload here)."""
    def shown() -> str | None:
        found = fresh(lambda: [str(el.text) for el in browser.find_elements(By.CSS_SELECTOR, css)])
        return next((t for t in found if want in t), None)

    return wait_for(shown, within, f"{css} to show {want!r}", every=0.1)


def mark_page(browser: Any) -> None:
    """Leave a mark in the page's JavaScript state: a reload would wipe it."""
    browser.execute_script("window.kwNoReload = 'still here';")


def assert_not_reloaded(browser: Any) -> None:
    assert browser.execute_script("return window.kwNoReload;") == "still here", "the page was reloaded"
