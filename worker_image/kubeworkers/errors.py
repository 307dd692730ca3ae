"""Exceptions a handler may raise to steer the worker, and the error summary written to a job."""

from __future__ import annotations

import traceback

from kubeworkers.protocol import JobError

#: Longest traceback summary kept in a job record or event.
TRACEBACK_LIMIT = 4000
#: Longest error or progress message kept in a job record or event (characters); a longer one
#: keeps its start and says how long it was.
MESSAGE_LIMIT = 4096


class PermanentError(Exception):
    """Raise from a handler when retrying cannot help: the job fails at once, no retry."""


class RetryableError(Exception):
    """Raise from a handler to ask for a retry explicitly (any other exception retries too)."""


class SoftTimeout(Exception):
    """Raised into an ``async`` handler when its soft timeout passes (like Celery's
    ``SoftTimeLimitExceeded``): catch it to clean up and return before the hard ``timeout``.
    Left uncaught, the attempt fails with ``Timeout``."""


def cap_text(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text``, or its start and a visible note when it is longer than ``limit`` characters."""
    if len(text) <= limit:
        return text
    note = f" ... [truncated: {len(text)} characters]"
    return text[: max(0, limit - len(note))] + note


def _message(exc: BaseException) -> str:
    """``str(exc)``, which may itself raise: then say so instead."""
    try:
        text = str(exc)
    except Exception as inner:
        return f"<{type(exc).__name__} whose str() raised {type(inner).__name__}>"
    return text or type(exc).__name__


def _traceback(exc: BaseException) -> str:
    try:
        return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-6))
    except Exception as inner:  # formatting calls str() too
        return f"<traceback could not be formatted: {type(inner).__name__}>"


def job_error(exc: BaseException, *, retryable: bool | None = None) -> JobError:
    """Summarise an exception for the job's status: class name, message, the last frames.

    Whatever the exception: its ``str()`` may raise, its message may be huge.
    """
    if retryable is None:
        retryable = not isinstance(exc, PermanentError)
    return JobError(
        type=type(exc).__name__,
        message=cap_text(_message(exc)),
        traceback=_traceback(exc)[-TRACEBACK_LIMIT:],
        retryable=retryable,
    )
