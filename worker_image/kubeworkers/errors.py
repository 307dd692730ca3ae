"""Exceptions a handler may raise to steer the worker, and the error summary written to a job."""

from __future__ import annotations

import traceback

from kubeworkers.protocol import JobError

#: Longest traceback summary kept in a job record or event.
TRACEBACK_LIMIT = 4000


class PermanentError(Exception):
    """Raise from a handler when retrying cannot help: the job fails at once, no retry."""


class RetryableError(Exception):
    """Raise from a handler to ask for a retry explicitly (any other exception retries too)."""


def job_error(exc: BaseException, *, retryable: bool | None = None) -> JobError:
    """Summarise an exception for the job's status: class name, message, the last frames."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-6))
    if retryable is None:
        retryable = not isinstance(exc, PermanentError)
    return JobError(
        type=type(exc).__name__,
        message=str(exc) or type(exc).__name__,
        traceback=tb[-TRACEBACK_LIMIT:],
        retryable=retryable,
    )
