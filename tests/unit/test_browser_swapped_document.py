"""The browser tests' reads retry only what says "the page was replaced while it was read"
(tests/support/browser.py ``fresh``), and raise every other browser error at once."""

from __future__ import annotations

import pytest
from selenium.common.exceptions import (
    JavascriptException,
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)

from tests.support.browser import fresh, swapped_away

# The message chromedriver gave in CI when a sign-in's POST replaced the page under a read.
INSPECTOR = ('unknown error: unhandled inspector error: {"code":-32000,'
             '"message":"Cannot find context with specified id"}')


def test_a_torn_down_document_and_a_stale_element_count_as_swapped_away() -> None:
    assert swapped_away(WebDriverException(INSPECTOR))
    assert swapped_away(StaleElementReferenceException("stale element reference"))
    assert swapped_away(JavascriptException("javascript error: document unloaded while waiting for result"))


def test_other_browser_errors_do_not() -> None:
    assert not swapped_away(NoSuchElementException("no such element: Unable to locate element"))
    assert not swapped_away(WebDriverException("unknown error: net::ERR_CONNECTION_REFUSED"))
    assert not swapped_away(WebDriverException())


def test_fresh_reads_again_after_a_swapped_page_and_raises_anything_else() -> None:
    answers: list[object] = [WebDriverException(INSPECTOR), StaleElementReferenceException("stale"), "the new page"]

    def read() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return str(answer)

    assert fresh(read) == "the new page"

    def broken() -> str:
        raise NoSuchElementException("no such element")

    with pytest.raises(NoSuchElementException):
        fresh(broken)
