"""The console tests' shared set-up: a headless chromium for a fixture (the console process itself is
:class:`tests.support.browser.ConsoleProcess`; the operator-served console is the operator's)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from hack.browser import BrowserMissing, chrome


@contextmanager
def headless_chrome(**options: Any) -> Iterator[Any]:
    """:func:`hack.browser.chrome`, quit afterwards; a missing browser fails the test (never a skip)."""
    try:
        driver = chrome(**options)
    except BrowserMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield driver
    finally:
        driver.quit()
