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

from selenium.common.exceptions import StaleElementReferenceException
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


def fresh(read: Callable[[], T]) -> T:
    """``read()`` again if the page's live refresh swapped the element away while it was read."""
    for _ in range(20):
        try:
            return read()
        except StaleElementReferenceException:
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
